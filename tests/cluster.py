"""A private PostgreSQL cluster and a PgBouncer in front of it, for tests that restart the
database or go through a pooler: never the machine's shared server.

The cluster lives in a temp dir on a free port with trust authentication on 127.0.0.1 only.
PostgreSQL's ``initdb`` and PgBouncer refuse to run as root, so as root both run as the
``postgres`` user (``runuser``); as anyone else, as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


def _as_service_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` on a free port; ``restart()`` is a real server restart."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="dispatched-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *argv: str, timeout: float = 120) -> None:
        # No pipes: a server started by pg_ctl would hold them open.
        subprocess.run(
            _as_service_user([str(self.bindir / argv[0]), *argv[1:]]),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def start(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=200 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options,
                  "-w", "start")  # fmt: skip
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "app")
        return self

    def url(self, port: int | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port or self.port}/app"

    def restart(self) -> None:
        """Stop the server (fast: connections are cut) and start it again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-m", "fast",
                  "-w", "restart")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of a PrivatePostgres."""

    def __init__(self, postgres: PrivatePostgres, pool_size: int = 20) -> None:
        self.postgres = postgres
        self.port = free_port()
        self.ini = postgres.dir / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"app = host=127.0.0.1 port={postgres.port} dbname=app user=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {postgres.dir}\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            f"logfile = {postgres.dir / 'pgbouncer.log'}\n"
            f"pidfile = {postgres.dir / 'pgbouncer.pid'}\n"
            "server_reset_query =\n"
            # After a failed server login (PostgreSQL restarting) retry in 1 s, not 15 s.
            "server_login_retry = 1\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.ini, "postgres", "postgres")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.proc = subprocess.Popen(
            _as_service_user([binary, str(self.ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.port, 15)
        return self

    def log(self) -> str:
        path = self.postgres.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self) -> str:
        return self.postgres.url(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


def pgbouncer_available() -> bool:
    return bool(shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer"))
