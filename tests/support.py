"""Test helpers: a real HTTP webhook receiver and real worker/scheduler processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


#: A behaviour gets the 1-based number of the request on its path and returns
#: (status, headers, body, seconds to wait before answering).
Behaviour = Callable[[int], tuple[int, dict[str, str], bytes, float]]


def answer(status: int, headers: dict[str, str] | None = None, delay: float = 0.0) -> Behaviour:
    return lambda n: (status, headers or {}, b'{"ok": true}', delay)


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every request."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    #: Requests being answered right now, per path, and the most seen at once.
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    #: Requests whose sender went away before the whole body arrived (not recorded).
    incomplete: int = 0
    #: TCP connections accepted (keep-alive: fewer than requests).
    connections: int = 0

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK
            # add ~40 ms to every keep-alive request (found by bench/).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver.connections += 1

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died between the headers and the body (a worker SIGKILLed
                    # mid-request): no webhook server acts on half a request, so it is not
                    # recorded, and nobody is left to answer.
                    with receiver.lock:
                        receiver.incomplete += 1
                    self.close_connection = True
                    return
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.time())
                    )
                    n = sum(1 for r in receiver.requests if r.path == self.path)
                    now = receiver.in_flight.get(self.path, 0) + 1
                    receiver.in_flight[self.path] = now
                    receiver.max_in_flight[self.path] = max(
                        now, receiver.max_in_flight.get(self.path, 0)
                    )
                behaviour = receiver.behaviours.get(self.path, answer(200))
                status, headers, reply, delay = behaviour(n)
                try:
                    if delay:
                        receiver.release.wait(delay)
                finally:
                    with receiver.lock:
                        receiver.in_flight[self.path] -= 1
                if status in (204, 304):
                    reply = b""  # these statuses carry no body (HTTP/1.1)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if status not in (204, 304):
                    self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # A class attribute: listen() runs in the constructor. socketserver's backlog of 5
            # makes a burst of connections (a worker starting 8 deliveries at once, 50 in
            # flight) see refused or retried connects: connection errors the endpoint never
            # caused.
            request_queue_size = 1024
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def dispatch_over_http(live_server: str, team: Any, n: int = 1, **body: Any) -> list[str]:
    """Dispatch ``n`` jobs (payload ``{"n": i}`` plus ``body``) through the real API; their ids."""
    ids = []
    with requests.Session() as http:
        for i in range(n):
            r = http.post(
                f"{live_server}/api/jobs/dispatch",
                json={"payload": {"n": i}, **body},
                headers=team.headers,
                timeout=10,
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["jobId"])
    return ids


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Processes:
    """Real ``worker.py`` / ``scheduler.py`` processes with their logs in a temp dir."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, script: str, **extra_env: str) -> subprocess.Popen[bytes]:
        return self.start_command(name, [sys.executable, str(ROOT / script)], **extra_env)

    def start_command(
        self, name: str, argv: list[str], **extra_env: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(10)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
            self.procs.pop(name, None)


def wakes(redis: Any) -> list[int]:
    """Project ids waiting on the release loop's wake list, oldest first."""
    from dispatched.transport_rq import WAKE_KEY

    return [int(x) for x in reversed(redis.lrange(WAKE_KEY, 0, -1))]


def due_now(redis: Any, queue: str = "dispatched") -> list[list[int]]:
    """The pulls waiting on the delivery queue (``deliver_due`` RQ jobs): their project ids,
    oldest first."""
    from rq.job import Job as RQJob

    from dispatched.transport_rq import DELIVER_DUE_TASK

    result = []
    for rq_id in redis.lrange(f"rq:queue:{queue}", 0, -1):
        job = RQJob.fetch(rq_id.decode(), connection=redis)
        if job.func_name == DELIVER_DUE_TASK:
            result.append(list(job.args[0]))
    return result


def handed_over(redis: Any, queue: str = "dispatched") -> list[tuple[str | None, list[list[Any]]]]:
    """The RQ hand-over jobs on the delivery queue: ``(holder, [[job_id, attempt], ...])``
    (pulls of due attempts, ``due_now``, are left out)."""
    from rq.job import Job as RQJob

    from dispatched.transport_rq import DELIVER_DUE_TASK

    result = []
    for rq_id in redis.lrange(f"rq:queue:{queue}", 0, -1):
        job = RQJob.fetch(rq_id.decode(), connection=redis)
        if job.func_name == DELIVER_DUE_TASK:
            continue
        assert job.func_name == "dispatched.delivery.deliver_batch"
        holder, attempts = job.args
        assert holder is None or holder == f"rq:{job.id}"
        result.append((holder, attempts))
    return result


def sdk_verifier_accepts(token: str, authorization: str | None, raw_body: bytes) -> bool:
    """The official JS SDK's ``DispatchedWebhookClient.getVerifiedPayload``, in Python.

    Users give the verifier their bearer token; it accepts a request whose trimmed
    Authorization header equals ``Bearer <token>`` (or the bare token) and whose body is JSON
    with truthy ``jobId``, ``attemptId``, ``attemptNumber`` and ``payload``.
    """
    auth = (authorization or "").strip()
    if not auth or auth not in (f"Bearer {token}", token):
        return False
    body = json.loads(raw_body)
    return all(_js_truthy(body.get(f)) for f in ("jobId", "attemptId", "attemptNumber", "payload"))


def _js_truthy(value: object) -> bool:
    """JavaScript's truthiness (objects and arrays, even empty ones, are true)."""
    if value is None or value is False or value == "":
        return False
    return not (isinstance(value, int | float) and (value == 0 or value != value))
