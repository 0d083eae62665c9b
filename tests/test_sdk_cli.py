"""The ``dispatched`` CLI (sdk/python) against a live server: real HTTP, DB and Redis.

The CLI runs as a subprocess, as a user runs it; exit codes are 0 ok, 1 API error, 2 usage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV_KEYS = ("DISPATCHED_API_KEY", "DISPATCHED_BASE_URL")


@pytest.fixture()
def cli(live_server, team):
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(DISPATCHED_API_KEY=team.token, DISPATCHED_BASE_URL=live_server)

    def run(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dispatched_sdk", *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            env={**env, **extra},
        )

    run.env = env  # type: ignore[attr-defined]
    return run


def test_dispatch_get_list_cancel_and_usage(cli, tmp_path: Path):
    created = cli("jobs", "dispatch", "--payload", '{"a": 1}', "--at", "+1h", "--json")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "QUEUED" and job["jobId"].startswith("job_")

    (tmp_path / "p.json").write_text('{"from": "file"}')
    from_file = cli("jobs", "dispatch", "--payload", f"@{tmp_path / 'p.json'}", "--at", "+2h")
    assert from_file.returncode == 0 and "jobId:" in from_file.stdout
    second_id = from_file.stdout.split("jobId:")[1].split()[0]
    piped = cli("--json", "jobs", "dispatch", "--payload", "@-", "--max-retries", "1",
                stdin='{"from": "stdin"}')  # fmt: skip
    assert json.loads(piped.stdout)["maxRetries"] == 1

    shown = cli("jobs", "get", job["jobId"], "--json")
    assert json.loads(shown.stdout)["payload"] == {"a": 1}
    table = cli("jobs", "list")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "ID", "STATUS"] and len(lines) == 4
    assert job["jobId"] in table.stdout and second_id in table.stdout
    listed = json.loads(cli("jobs", "list", "--status", "queued", "--json").stdout)
    assert len(listed) == 3 and {job["jobId"], second_id} <= {j["jobId"] for j in listed}
    paged = json.loads(cli("jobs", "list", "--limit", "1", "--all", "--json").stdout)
    assert len(paged) == 3

    moved = cli("jobs", "reschedule", job["jobId"], "--at", "2099-01-01T00:00:00Z")
    assert moved.returncode == 1 and "BAD_REQUEST (400)" in moved.stderr  # > 365 days
    moved = cli("jobs", "reschedule", second_id, "--at", "+3h", "--json")
    assert moved.returncode == 0 and json.loads(moved.stdout)["jobId"] == second_id
    cancelled = cli("jobs", "cancel", job["jobId"], "--json")
    assert json.loads(cancelled.stdout) == {"jobId": job["jobId"], "status": "CANCELLED"}
    again = cli("jobs", "cancel", job["jobId"])
    assert again.returncode == 1 and again.stdout == ""
    assert "CONFLICT (409): Job is not in QUEUED status" in again.stderr
    assert cli("jobs", "attempts", job["jobId"]).stdout.strip() == "No attempts yet."
    replay = cli("jobs", "replay", job["jobId"])
    assert replay.returncode == 1 and "CONFLICT" in replay.stderr

    usage = json.loads(cli("usage", "--json").stdout)
    assert usage["jobsThisMonth"] == 3 and usage["plan"] == "free"
    assert re.search(r"^jobsThisMonth: +3$", cli("usage").stdout, re.M)


def test_exit_codes(cli, live_server):
    missing = cli("jobs", "get", "job_nope")
    assert missing.returncode == 1 and "NOT_FOUND (404)" in missing.stderr
    assert cli("jobs", "frobnicate").returncode == 2
    assert cli("jobs", "dispatch").returncode == 2  # --payload is required
    bad_json = cli("jobs", "dispatch", "--payload", "{nope")
    assert bad_json.returncode == 2 and "--payload is not valid JSON" in bad_json.stderr
    bad_time = cli("jobs", "dispatch", "--payload", "{}", "--at", "tomorrow-ish")
    assert bad_time.returncode == 2 and "--at must be" in bad_time.stderr
    no_key = cli("usage", DISPATCHED_API_KEY="")
    assert no_key.returncode == 2 and "DISPATCHED_API_KEY" in no_key.stderr
    wrong_key = cli("usage", "--api-key", "disp_k1_wrong")
    assert wrong_key.returncode == 1 and "UNAUTHORIZED (401): Unauthorized" in wrong_key.stderr
    down = cli("usage", "--base-url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the server" in down.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "dispatched"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("dispatched-sdk ")


def test_jobs_tail_follows_new_and_changing_jobs(cli, live_server, team):
    env = cli.env
    tail = subprocess.Popen(
        [sys.executable, "-m", "dispatched_sdk", "jobs", "tail", "--interval", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "DISPATCHED_API_KEY": team.token},
    )
    try:
        first = cli("jobs", "dispatch", "--payload", '{"n": 1}', "--at", "+1h", "--json")
        job_id = json.loads(first.stdout)["jobId"]
        events = [json.loads(tail.stdout.readline())]
        assert events[0]["event"] in ("SNAPSHOT", "ADDED") and events[0]["job"]["jobId"] == job_id
        cli("jobs", "cancel", job_id)
        events.append(json.loads(tail.stdout.readline()))
        assert events[1]["event"] == "MODIFIED" and events[1]["job"]["status"] == "CANCELLED"
        second = json.loads(cli("jobs", "dispatch", "--payload", "{}", "--json").stdout)
        events.append(json.loads(tail.stdout.readline()))
        assert events[2]["event"] == "ADDED" and events[2]["job"]["jobId"] == second["jobId"]
    finally:
        tail.terminate()
        tail.wait(10)


def test_jobs_tail_table(cli):
    tail = subprocess.Popen(
        [sys.executable, "-m", "dispatched_sdk", "jobs", "tail", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        assert tail.stdout.readline().split()[:3] == ["JOB", "ID", "STATUS"]
        job_id = json.loads(
            cli("jobs", "dispatch", "--payload", "{}", "--at", "+1h", "--json").stdout
        )["jobId"]
        row = tail.stdout.readline().split()
        assert row[:3] == [job_id, "QUEUED", "0"]
        time.sleep(0.3)
        cli("jobs", "cancel", job_id)
        assert tail.stdout.readline().split()[:2] == [job_id, "CANCELLED"]
    finally:
        tail.send_signal(2)  # Ctrl-C: a quiet exit 0
        assert tail.wait(10) == 0
        assert "Traceback" not in tail.stderr.read()
