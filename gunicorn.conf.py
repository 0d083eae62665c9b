"""gunicorn settings of the web process: ``gunicorn --config gunicorn.conf.py wsgi:app``.

Every value comes from the environment, so one file serves the Procfile, the container image,
compose and the systemd unit (docs/operations.md, "Sizing"):

- ``WEB_BIND`` (default ``127.0.0.1:$PORT``, PORT defaulting to 8000; the image sets
  ``0.0.0.0:8000``);
- ``WEB_CONCURRENCY`` worker processes (default 2) × ``WEB_THREADS`` threads (default 8): the
  requests served at once; each worker process has its own database pool;
- ``WEB_TIMEOUT`` (30 s): a worker silent this long is killed and replaced;
- ``WEB_GRACEFUL_TIMEOUT`` (30 s): on SIGTERM, requests in flight get this long to finish;
- ``WEB_KEEPALIVE`` (5 s): keep it above the idle timeout of the load balancer in front;
- ``WEB_MAX_REQUESTS`` (0 = never): recycle a worker process after that many requests;
- ``WEB_ACCESS_LOG`` (``-`` = stdout; empty = none); ``LOG_FORMAT=json`` makes the access and
  error logs JSON lines like the app's (``dispatched/logs.py``).
"""

from __future__ import annotations

import os
import sys

# gunicorn runs this file before it puts the app's directory on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config import as_int  # noqa: E402
from dispatched import logs  # noqa: E402

bind = os.environ.get("WEB_BIND") or f"127.0.0.1:{os.environ.get('PORT') or '8000'}"
workers = as_int(os.environ.get("WEB_CONCURRENCY"), 2)
threads = as_int(os.environ.get("WEB_THREADS"), 8)
timeout = as_int(os.environ.get("WEB_TIMEOUT"), 30)
graceful_timeout = as_int(os.environ.get("WEB_GRACEFUL_TIMEOUT"), 30)
keepalive = as_int(os.environ.get("WEB_KEEPALIVE"), 5)
max_requests = as_int(os.environ.get("WEB_MAX_REQUESTS"), 0)
max_requests_jitter = max_requests // 10
# Worker heartbeats go through a file: keep it in memory where there is a tmpfs (containers).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
errorlog = "-"
access_log_format = logs.ACCESS_TEXT_FORMAT
if logs.check_format(os.environ.get("LOG_FORMAT", "text")) == "json":
    logconfig_dict = logs.gunicorn_logconfig(os.environ.get("LOG_LEVEL", "INFO").upper())
