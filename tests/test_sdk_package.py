"""The SDK distribution (sdk/python) builds into a wheel that installs and runs by itself.

Users install it with ``pip install ./sdk/python`` (from PyPI's build backend and
dependencies); here the wheel is built offline with the venv's setuptools and installed into a
bare directory, so only its own files are tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SDK = Path(__file__).resolve().parent.parent / "sdk" / "python"


def test_wheel_builds_installs_and_runs(tmp_path):
    # A copy: setuptools builds in the source tree (build/, *.egg-info).
    source = shutil.copytree(SDK, tmp_path / "source", ignore=shutil.ignore_patterns("*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("dispatched_sdk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    for module in ("__init__", "client", "async_client", "webhooks", "doctor", "cli", "flask",
                   "django", "fastapi"):  # fmt: skip
        assert f"dispatched_sdk/{module}.py" in names
    assert "dispatched_sdk/py.typed" in names
    assert "Requires-Python: >=3.10" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == [
        "Requires-Dist: httpx<1,>=0.25",
        "Requires-Dist: standardwebhooks>=1.0",
    ]
    assert {"flask", "django", "fastapi"} <= {
        line.split(": ", 1)[1]
        for line in metadata.splitlines()
        if line.startswith("Provides-Extra")
    }
    assert b"dispatched = dispatched_sdk.cli:main" in entry_points

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import dispatched_sdk; print(dispatched_sdk.__file__)"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(target))  # the installed copy, not the repository's
    version = subprocess.run(
        [str(target / "bin" / "dispatched"), "--version"], capture_output=True, text=True, env=env
    )
    assert version.returncode == 0 and version.stdout.strip() == "dispatched-sdk 0.1.0"
