"""Shared helpers of the benchmarks: environment, processes, a fast receiver, load, stats.

Everything here runs real processes (gunicorn, ``worker.py``, ``scheduler.py``) against a real
database and Redis:

- Redis: ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``), FLUSHDB'd before each
  phase. No other index is touched.
- PostgreSQL: database ``BENCH_PG_DB`` (default ``dispatched_bench``; created if missing; its
  ``public`` schema is dropped and rebuilt with the Alembic migrations before each phase).
  Sessions sharing the machine give each run its own index and database through these two.
- SQLite: ``bench.db`` in ``BENCH_TMP`` (default ``/tmp/dispatched_bench``, also the logs).

This file is also a small CLI, so the receiver and the load generator run in processes of
their own (never sharing a GIL with the process they measure):

    python bench/common.py receiver --delay 0.2     # prints its port, then serves
    python bench/common.py load '<json spec>'       # prints one JSON result object
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
#: The venv's bin directory: the checkout's ``.venv``, else the one of the interpreter running
#: the benchmark (a worktree without a venv of its own: ``/work/main/.venv/bin/python
#: bench/...``), or ``BENCH_VENV_BIN``.
VENV_BIN = Path(
    os.environ.get("BENCH_VENV_BIN")
    or (ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() else "")
    or Path(sys.executable).parent
)
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
TMP = Path(os.environ.get("BENCH_TMP", "/tmp/dispatched_bench"))
LOGS = TMP / "logs"

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_PG_DB", "dispatched_bench")
PG_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"
SQLITE_PATH = TMP / "bench.db"
SQLITE_URL = f"sqlite:///{SQLITE_PATH}"
#: The scale and pro plans without a rate limit or quota, so the limiter never refuses a
#: benchmark request (their other limits, e.g. the parallelism caps 250 / 50, are the defaults).
PLANS_JSON = json.dumps(
    {
        "scale": {"rate_per_minute": 100_000_000, "monthly_quota": None},
        "pro": {"rate_per_minute": 100_000_000, "monthly_quota": None},
    }
)

GUNICORN_ARGS = ["--workers", "2", "--threads", "8"]


def log(*parts: Any) -> None:
    print(*parts, flush=True)


# --- environment ----------------------------------------------------------------------------


def database_url(db: str) -> str:
    return PG_URL if db == "postgres" else SQLITE_URL


def make_env(db: str, **extra: str) -> dict[str, str]:
    """The environment of every process of the service under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "PLAN_"))}
    env.update(
        DATABASE_URL=database_url(db),
        REDIS_URL=REDIS_URL,
        PLANS_JSON=PLANS_JSON,
        ALLOW_PRIVATE_WEBHOOKS="1",
        DISPATCHED_ENV="development",
        SECRET_KEY="bench-secret-key",
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def redis_conn():  # type: ignore[no-untyped-def]
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    expected = int(REDIS_URL.rstrip("/").rsplit("/", 1)[-1]) if REDIS_URL.count("/") > 2 else 0
    assert conn.connection_pool.connection_kwargs.get("db", 0) == expected, "one Redis DB index"
    return conn


def background_load(seconds: float = 3.0) -> float:
    """Cores busy on the machine (others' processes: nothing of the benchmark runs yet)."""
    import psutil

    return sum(psutil.cpu_percent(interval=seconds, percpu=True)) / 100


def reset(db: str) -> dict[str, str]:
    """Empty Redis DB 14 and the bench database, run the migrations; return the env.
    Logs the machine's background load first (the machine is shared)."""
    log(f"  background load before the run: {background_load():.2f} of {os.cpu_count()} cores")
    redis_conn().flushdb()
    TMP.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    if db == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {PG_DB}")
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
    else:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{SQLITE_PATH}{suffix}").unlink()
    env = make_env(db)
    flask(env, "db", "upgrade")
    return env


def flask(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def create_team(
    env: dict[str, str], webhook_url: str, name: str = "Bench", plan: str = "scale"
) -> dict[str, Any]:
    """Create a team (scale plan by default) whose default project posts to ``webhook_url``."""
    out = flask(
        env, "admin", "create-team", name, "--plan", plan, "--webhook-url", webhook_url, "--json"
    )
    return json.loads(out.strip().splitlines()[-1])


def set_flow(
    env: dict[str, str], project_id: int, parallelism: int | None = None, rate: float | None = None
) -> dict[str, Any]:
    """``flask admin set-flow``: the project's parallelism / ratePerSecond; returns what is in
    force."""
    args = ["admin", "set-flow", str(project_id), "--json"]
    if parallelism is not None:
        args += ["--parallelism", str(parallelism)]
    if rate is not None:
        args += ["--rate", f"{rate:g}"]
    return json.loads(flask(env, *args).strip().splitlines()[-1])


def db_size_bytes(db: str) -> int:
    if db == "postgres":
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            return int(conn.execute("SELECT pg_database_size(%s)", (PG_DB,)).fetchone()[0])
    return sum(
        Path(f"{SQLITE_PATH}{s}").stat().st_size
        for s in ("", "-wal")
        if Path(f"{SQLITE_PATH}{s}").exists()
    )


# --- processes -------------------------------------------------------------------------------


class Procs:
    """Processes started by a benchmark; ``stop_all`` kills each one's whole tree.

    Every process gets its own session (process group); RQ's fork-per-job work horses call
    ``setpgrp`` so the tree is collected with psutil before the group is signalled.
    """

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, argv: list[str], env: dict[str, str], stdout: Any = None
    ) -> subprocess.Popen[bytes]:
        LOGS.mkdir(parents=True, exist_ok=True)
        logfile = open(LOGS / f"{name}.log", "wb")  # noqa: SIM115 (closed right after Popen)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=stdout if stdout is not None else logfile,
            stderr=logfile,
            start_new_session=True,
        )
        logfile.close()
        self.procs[name] = proc
        return proc

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        kill_tree(proc, timeout)

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


def kill_tree(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def processes() -> Iterator[Procs]:
    procs = Procs()
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield procs
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, old)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def start_web(procs: Procs, env: dict[str, str], name: str = "web") -> str:
    """Start gunicorn (2 workers x 8 threads, no access log); return its base URL."""
    port = free_port()
    procs.start(
        name,
        [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *GUNICORN_ARGS, "wsgi:app"],
        # gunicorn reads ./gunicorn.conf.py by default; its access log is on unless told not to.
        {**env, "WEB_ACCESS_LOG": ""},
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    return base


def start_workers(
    procs: Procs,
    env: dict[str, str],
    count: int | None = None,
    name: str = "worker",
    delivery_concurrency: int | None = None,
) -> None:
    """``python worker.py`` with WORKER_CONCURRENCY=count processes (an RQ WorkerPool of
    DeliveryWorker), each with DELIVERY_CONCURRENCY threads; None = the install's default."""
    extra = {}
    if count is not None:
        extra["WORKER_CONCURRENCY"] = str(count)
    if delivery_concurrency is not None:
        extra["DELIVERY_CONCURRENCY"] = str(delivery_concurrency)
    procs.start(name, [PYTHON, str(ROOT / "worker.py")], {**env, **extra})


def start_pool(
    procs: Procs, env: dict[str, str], worker_class: str, queue: str, count: int, name: str
) -> None:
    """An RQ WorkerPool of ``worker_class`` (dotted) on ``queue`` (see bench/pool.py)."""
    procs.start(
        name,
        [
            PYTHON,
            str(BENCH / "pool.py"),
            "--class",
            worker_class,
            "--queue",
            queue,
            "-n",
            str(count),
        ],
        env,
    )


def start_scheduler(procs: Procs, env: dict[str, str]) -> None:
    procs.start("scheduler", [PYTHON, str(ROOT / "scheduler.py")], env)


def wait_workers(queue: str, count: int, timeout: float = 60.0) -> float:
    """Wait until ``count`` RQ workers listen on ``queue``; return the seconds it took."""
    from rq import Queue, Worker

    conn = redis_conn()
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if Worker.count(queue=Queue(queue, connection=conn)) >= count:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"only {Worker.count(connection=conn)} of {count} workers registered")


def tree_memory(pid: int, include_root: bool = False) -> list[dict[str, float]]:
    """RSS, USS and PSS (MiB) of each descendant of ``pid`` (the pool's worker processes), and
    of ``pid`` itself with ``include_root``."""
    import psutil

    rows = []
    root = psutil.Process(pid)
    family = ([root] if include_root else []) + root.children(recursive=True)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = child.memory_full_info()
            rows.append(
                {
                    "pid": child.pid,
                    "rss": info.rss / 2**20,
                    "uss": info.uss / 2**20,
                    "pss": getattr(info, "pss", 0) / 2**20,
                    "threads": child.num_threads(),
                }
            )
    return rows


# --- receiver --------------------------------------------------------------------------------


class ReceiverClient:
    """A receiver process (``python bench/common.py receiver``) and its control endpoints."""

    def __init__(self, procs: Procs, delay: float = 0.0, name: str = "receiver") -> None:
        proc = procs.start(
            name,
            [PYTHON, str(BENCH / "common.py"), "receiver", "--delay", str(delay)],
            make_env("sqlite"),
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        self.port = int(proc.stdout.readline().decode().strip())
        self.base = f"http://127.0.0.1:{self.port}"
        import requests

        self.http = requests.Session()
        wait_http(self.base + "/count")

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    def count(self) -> int:
        return int(self.http.get(self.base + "/count", timeout=5).text)

    def records(self) -> list[dict[str, Any]]:
        """Every request received: {t (unix s), job (jobId), n (attemptNumber), p (payload)}."""
        return self.http.get(self.base + "/records", timeout=60).json()

    def reset(self) -> None:
        self.http.get(self.base + "/reset", timeout=5)

    def stats(self) -> dict[str, int]:
        """{count, in_flight, max_in_flight}: requests being answered now / at most at once
        since the last reset (from reading the request line to writing the answer)."""
        return self.http.get(self.base + "/stats", timeout=5).json()

    def wait_count(self, n: int, timeout: float, on_tick: Any = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.count()
            if on_tick:
                on_tick(got)
            if got >= n:
                return True
            time.sleep(0.05)
        return False


def serve_receiver(delay: float) -> None:
    """Threaded HTTP/1.1 server: records each POST (time, jobId, attempt, payload), answers 200."""
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    gauge = {"in_flight": 0, "max_in_flight": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the body
        # until the client's delayed ACK (~40 ms per keep-alive request).
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            at = time.time()
            with lock:
                gauge["in_flight"] += 1
                gauge["max_in_flight"] = max(gauge["max_in_flight"], gauge["in_flight"])
            try:
                self._post(at)
            finally:
                with lock:
                    gauge["in_flight"] -= 1

        def _post(self, at: float) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                data = json.loads(body)
                rec = {
                    "t": at,
                    "job": data.get("jobId"),
                    "n": data.get("attemptNumber"),
                    "p": data.get("payload"),
                }
            except ValueError:
                rec = {"t": at, "job": None, "n": None, "p": None}
            with lock:
                records.append(rec)
            if delay:
                time.sleep(delay)
            self._reply(200, b'{"ok":true}')

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/count":
                self._reply(200, str(len(records)).encode(), "text/plain")
            elif self.path == "/records":
                with lock:
                    data = json.dumps(records).encode()
                self._reply(200, data)
            elif self.path == "/reset":
                with lock:
                    records.clear()
                    gauge["max_in_flight"] = gauge["in_flight"]
                self._reply(200, b"{}")
            elif self.path == "/stats":
                with lock:
                    data = json.dumps({"count": len(records), **gauge}).encode()
                self._reply(200, data)
            else:
                self._reply(404, b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # A class attribute: listen() runs in the constructor, so setting it on the instance
        # afterwards (as this file did before) left the backlog at 5, and 128 clients
        # connecting at once got SYN retries and connection errors.
        request_queue_size = 1024
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_port, flush=True)
    server.serve_forever()


class NginxReceiver:
    """Debian's nginx answering ``return 200`` on a loopback port: a receiver that costs far
    less CPU per request than the Python one. Its own temp config dir (never the system one),
    one worker process, keep-alive without a request limit; it logs ``$msec`` per request to
    an access log, which gives the same ``count``/``records``/``reset`` as ReceiverClient.

    ``apt-get install -y nginx-light`` if ``which nginx`` finds nothing.
    """

    def __init__(self, procs: Procs, name: str = "nginx") -> None:
        import shutil

        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        self.dir = TMP / "nginx"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.dir.chmod(0o777)
        self.log = self.dir / "access.log"
        self.port = free_port()
        d = self.dir
        conf = f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format stamp '$msec';
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        location / {{
            access_log {self.log} stamp;
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.log.touch()
        self.log.chmod(0o666)
        procs.start(name, [binary, "-p", str(d), "-c", str(d / "nginx.conf")], make_env("sqlite"))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        import socket

        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(d / 'error.log').read_text()}")
            time.sleep(0.05)

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    def count(self) -> int:
        with open(self.log, "rb") as f:
            return f.read().count(b"\n")

    def records(self) -> list[dict[str, Any]]:
        with open(self.log, "rb") as f:
            return [{"t": float(x), "job": None, "n": None, "p": None} for x in f.read().split()]

    def reset(self) -> None:
        os.truncate(self.log, 0)  # nginx appends (O_APPEND): it goes on at offset 0

    def wait_count(self, n: int, timeout: float, on_tick: Any = None) -> bool:
        return ReceiverClient.wait_count(self, n, timeout, on_tick)  # type: ignore[arg-type]


# --- load generator --------------------------------------------------------------------------


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run load in a separate process; see ``_load`` for the spec. Returns its JSON result."""
    out = subprocess.run(
        [PYTHON, str(BENCH / "common.py"), "load", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def run_loads(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several load processes at once (e.g. one per core); their JSON results in order."""
    procs = [
        subprocess.Popen(
            [PYTHON, str(BENCH / "common.py"), "load", json.dumps(spec)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err[-3000:]}")
        results.append(json.loads(out))
    return results


def dispatch_spec(base: str, key: str, **spec: Any) -> dict[str, Any]:
    return {
        "url": base + "/api/jobs/dispatch",
        "method": "POST",
        "headers": {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        "dispatch": True,
        **spec,
    }


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _load(spec: dict[str, Any]) -> dict[str, Any]:
    """Threads with one requests.Session each.

    spec: url, method, headers, threads, and either ``duration`` (s, closed loop) or ``count``
    (total requests); optional ``rate`` (req/s across all threads, open loop paced by a shared
    schedule), ``warmup`` (s, not counted), ``dispatch`` (send dispatch bodies: payload
    ``{"i": n, "due": due}`` and ``scheduleFor`` from ``due_at`` (one unix time for all) or
    ``due_start`` + ``due_spread`` (job i due at due_start + i*spread/count)), ``body`` (raw
    JSON object for non-dispatch POSTs), ``body_raw`` (a string sent as is), ``record`` (return
    per-request records), ``probe_url`` (with ``rate``: also POST to that URL right after each
    request, recording its round trip), ``start_delay`` (s before the threads start; 0.2),
    ``batch`` (n: send ``{"jobs": [n dispatch bodies]}``, due ``batch_due_in`` s from now if
    given, else now).
    """
    import requests

    threads = int(spec.get("threads", 8))
    count = spec.get("count")
    duration = spec.get("duration")
    rate = spec.get("rate")
    warmup = float(spec.get("warmup", 0))
    record = bool(spec.get("record"))
    method = spec.get("method", "GET")
    url = spec["url"]
    headers = spec.get("headers", {})
    lock = threading.Lock()
    counter = [0]
    lat: list[float] = []
    probe_lat: list[float] = []
    errors: dict[str, int] = {}
    recs: list[list[Any]] = []
    raw_body = spec["body_raw"].encode() if "body_raw" in spec else None
    start_at = time.perf_counter() + float(spec.get("start_delay", 0.2))
    measure_from = start_at + warmup
    stop_at = measure_from + float(duration) if duration else None

    def body_for(i: int) -> bytes | None:
        if spec.get("batch"):
            # {"jobs": [batch items]}; due ``batch_due_in`` s from now, else due now.
            n = int(spec["batch"])
            item: dict[str, Any] = {}
            if "batch_due_in" in spec:
                item["scheduleFor"] = _iso(time.time() + float(spec["batch_due_in"]))
            jobs = [{"payload": {"i": i, "k": k}, **item} for k in range(n)]
            return json.dumps({"jobs": jobs}).encode()
        if spec.get("dispatch"):
            payload: dict[str, Any] = {"i": i}
            body: dict[str, Any] = {"payload": payload}
            due = None
            if "due_at" in spec:
                due = float(spec["due_at"])
            elif "due_start" in spec:
                due = float(spec["due_start"]) + i * float(spec["due_spread"]) / float(
                    count or 1000
                )
            if due is not None:
                payload["due"] = due
                body["scheduleFor"] = _iso(due)
            return json.dumps(body).encode()
        if "body" in spec:
            return json.dumps(spec["body"]).encode()
        if "body_raw" in spec:
            return raw_body
        return None

    def worker() -> None:
        session = requests.Session()
        probe = requests.Session()
        time.sleep(max(0.0, start_at - time.perf_counter()))
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if count is not None and i >= count:
                return
            if rate:
                target = start_at + i / float(rate)
                if stop_at is not None and target >= stop_at:
                    return
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            if stop_at is not None and now >= stop_at:
                return
            body = body_for(i)
            sent_wall = time.time()
            t0 = time.perf_counter()
            try:
                resp = session.request(method, url, data=body, headers=headers, timeout=30)
                t1 = time.perf_counter()
                recv_wall = time.time()
                ok = 200 <= resp.status_code < 300
                key = None if ok else f"HTTP {resp.status_code}"
                job = resp.json().get("jobId") if ok and spec.get("dispatch") else None
                if ok and spec.get("batch"):
                    # A 200 counts only when every item became a job.
                    results = resp.json().get("results", [])
                    if len(results) != int(spec["batch"]) or any("jobId" not in r for r in results):
                        ok, key = False, "item error"
            except requests.RequestException as exc:
                t1, recv_wall, ok, key, job = (
                    time.perf_counter(),
                    time.time(),
                    False,
                    type(exc).__name__,
                    None,
                )
            probe_rtt = None
            if rate and spec.get("probe_url"):
                p0 = time.perf_counter()
                with contextlib.suppress(requests.RequestException):
                    probe.post(spec["probe_url"], data=b'{"probe":true}', timeout=10)
                    probe_rtt = time.perf_counter() - p0
            if t0 < measure_from:
                continue
            with lock:
                if key:
                    errors[key] = errors.get(key, 0) + 1
                else:
                    lat.append(t1 - t0)
                if probe_rtt is not None:
                    probe_lat.append(probe_rtt)
                if record:
                    recs.append([i, job, sent_wall, recv_wall, ok])

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    end = time.perf_counter()
    elapsed = (end if stop_at is None else min(end, stop_at)) - max(measure_from, start_at)
    ok = len(lat)
    return {
        "ok": ok,
        "errors": errors,
        "elapsed": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "latency": summarize(lat),
        "probe": summarize(probe_lat) if probe_lat else None,
        "records": recs if record else None,
        "raw": lat if spec.get("raw") else None,
    }


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[min(rank, len(data)) - 1]


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    return parser


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("receiver")
    rec.add_argument("--delay", type=float, default=0.0)
    load = sub.add_parser("load")
    load.add_argument("spec")
    args = parser.parse_args()
    if args.cmd == "receiver":
        serve_receiver(args.delay)
    else:
        print(json.dumps(_load(json.loads(args.spec))))


if __name__ == "__main__":
    main()


# --- PostgreSQL wait events -------------------------------------------------------------------


def pg_transactions() -> int:
    """Transactions committed or rolled back in the bench database so far (all processes)."""
    import psycopg

    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as pg:
        row = pg.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (PG_DB,),
        ).fetchone()
    return int(row[0]) if row else 0


class PgWaits:
    """Sample pg_stat_activity of the bench database every ``every`` s in a thread (as
    bench/dispatch_locks.py does): what each backend is doing or waiting for; for a backend
    waiting on a lock, which statement. ``report()`` gives the mean backends per state."""

    QUERY = (
        "SELECT coalesce(wait_event_type, '-'), coalesce(wait_event, '-'), state, "
        "CASE WHEN wait_event_type = 'Lock' OR state = 'active' THEN left(query, 48) ELSE '' "
        "END FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.counts: dict[tuple[str, ...], int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PgWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as pg:
            while not self._stop.wait(self.every):
                for row in pg.execute(self.QUERY, (PG_DB,)):
                    key = tuple(str(x) for x in row)
                    self.counts[key] = self.counts.get(key, 0) + 1
                self.samples += 1

    def report(self, top: int = 12) -> str:
        n = max(self.samples, 1)
        rows = sorted(self.counts.items(), key=lambda kv: -kv[1])[:top]
        lines = [f"pg_stat_activity, {self.samples} samples: mean backends per state"]
        for (etype, event, state, query), count in rows:
            lines.append(
                f"  {count / n:5.2f}  {state:20s} {etype}/{event}"
                + (f"  [{query.replace(chr(10), ' ')}]" if query else "")
            )
        return "\n".join(lines)


# --- CPU accounting --------------------------------------------------------------------------


def cpu_snapshot(procs: Procs, extra: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds used so far by each started process tree, PostgreSQL and Redis servers."""
    import psutil

    out: dict[str, float] = {}

    def add(name: str, proc: Any) -> None:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = proc.cpu_times()
            out[name] = out.get(name, 0.0) + t.user + t.system

    for name, popen in procs.procs.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(popen.pid)
            add(name, root)
            for child in root.children(recursive=True):
                add(name, child)
    for pid, name in (extra or {}).items():
        with contextlib.suppress(psutil.NoSuchProcess):
            add(name, psutil.Process(pid))
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "redis-server"):
            add(proc.info["name"], proc)
    out["machine busy"] = sum(
        getattr(psutil.cpu_times(), f) for f in ("user", "system", "nice", "irq", "softirq")
    )
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Cores used per process group between two snapshots (machine has os.cpu_count())."""
    parts = []
    for name in after:
        used = (after[name] - before.get(name, 0.0)) / seconds
        parts.append(f"{name} {used:.2f}")
    return f"CPU cores used ({os.cpu_count()} on this machine): " + ", ".join(parts)


def pyspy() -> str:
    """py-spy: ``BENCH_PYSPY``, else on PATH, else the venv's. Without touching the venv:
    ``.venv/bin/python -m pip install --target /tmp/pyspy py-spy==0.4.3`` and
    ``BENCH_PYSPY=/tmp/pyspy/bin/py-spy``."""
    import shutil

    return (
        os.environ.get("BENCH_PYSPY")
        or shutil.which("py-spy")
        or next((p for p in ("/tmp/pyspy/bin/py-spy",) if Path(p).exists()), None)
        or str(VENV_BIN / "py-spy")
    )


def spy_on(
    procs: Procs, names: list[str], seconds: float, label: str, gil: bool = False, top: int = 30
) -> str:
    """py-spy the processes started as ``names`` (each tree: root and children) for
    ``seconds``; return a profile_summary per name."""
    from bench.profile_summary import summarize as profile_summary

    spies = {
        name: profile_children(procs.pid(name), seconds, f"{label}-{name}", True, gil)
        for name in names
    }
    out = []
    for name, group in spies.items():
        for spy in group:
            spy.wait(seconds + 60)
        paths = [s.path for s in group if Path(s.path).exists()]
        out.append(f"py-spy {name} ({seconds:g} s{', GIL holders only' if gil else ''}):")
        out.append(profile_summary(paths, top=top) if paths else "  (no samples)")
    return "\n".join(out)


def profile_children(
    pid: int,
    seconds: float,
    label: str,
    include_root: bool = False,
    gil: bool = False,
    extra: tuple[str, ...] = (),
) -> list[Any]:
    """Start py-spy (``pip install py-spy==0.4.3``) on every child of ``pid`` (and ``pid``
    itself with ``include_root``); ``gil``: only samples holding the GIL (CPU in Python).
    Return the Popen objects, each with ``.path`` (collapsed stacks for
    bench/profile_summary.py)."""
    import psutil

    spies = []
    root = psutil.Process(pid)
    for child in ([root] if include_root else []) + root.children():
        path = str(TMP / f"prof-{label}-{child.pid}.txt")
        spy = subprocess.Popen(
            [
                pyspy(),
                "record",
                "--pid",
                str(child.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                path,
                "--nonblocking",
                *(["--gil"] if gil else []),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        spy.path = path  # type: ignore[attr-defined]
        spies.append(spy)
    return spies
