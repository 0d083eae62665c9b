# One image for every process of Dispatched; the command picks the process (see compose.yaml
# and the Procfile):
#   web        gunicorn --config gunicorn.conf.py wsgi:app   (the default command)
#   worker     python worker.py
#   scheduler  python scheduler.py
#   migrate    flask --app wsgi db upgrade                    (one-shot, before a new version)
# Build: docker build -t dispatched .   Lint: hadolint Dockerfile (python3 dev.py lint does).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the locked requirements, every file checked against its hash ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.txt \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the venv and the app's files, run as an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="Dispatched" \
      org.opencontainers.image.description="Self-hostable background jobs over webhooks"
RUN groupadd --system --gid 10001 dispatched \
    && useradd --system --uid 10001 --gid dispatched --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin dispatched
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code stays owned by root: the app user can read it, not change it.
COPY . /app
RUN python -m compileall -q /app/dispatched /app/config.py \
    && mkdir -p /app/instance \
    && chown dispatched:dispatched /app/instance
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEB_BIND=0.0.0.0:8000
USER 10001:10001
EXPOSE 8000
# /healthz answers 200 while the web process is up; worker and scheduler containers override
# this (compose.yaml): they serve no HTTP.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
