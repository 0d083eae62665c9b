"""The lock files match the top-level lists: every pin is locked, with hashes, and the runtime
and dev locks agree (regenerate them with `python3 dev.py lock`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(top_level(path.parent / line.split(None, 1)[1]))
        elif line:
            match = PIN.match(line)
            assert match, f"{path.name}: {line!r} is not pinned as name==version"
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def locked(path: Path) -> dict[str, set[str]]:
    """Versions per package in a lock (a package may have one per Python version)."""
    versions: dict[str, set[str]] = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            following = lines[number + 1] if number + 1 < len(lines) else ""
            assert line.endswith("\\") and "--hash=sha256:" in following, (path.name, line)
            versions.setdefault(canonical(match.group(1)), set()).add(match.group(2))
    return versions


def test_every_top_level_pin_is_in_the_locks_with_hashes():
    for source, lock in [
        ("requirements.in", "requirements.txt"),
        ("requirements-dev.in", "requirements-dev.txt"),
    ]:
        pins, versions = top_level(ROOT / source), locked(ROOT / lock)
        for name, version in pins.items():
            assert versions.get(name) == {version}, (
                f"{lock} has {name} {versions.get(name)}, {source} pins {version}: "
                "run `python3 dev.py lock`"
            )


def test_the_dev_lock_pins_the_runtime_lock_versions():
    runtime, dev = locked(ROOT / "requirements.txt"), locked(ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_flask_limiter_has_no_redis_extra():
    assert "flask-limiter[" not in (ROOT / "requirements.in").read_text().lower()
