#!/usr/bin/env python3
"""Regenerate the README screenshots from a seeded demo, in Debian's Chromium.

    .venv/bin/python scripts/screenshots.py        # writes docs/screenshots/*.png

Starts a throw-away instance (SQLite + embedded Redis in a temp dir, web + worker +
scheduler), seeds the demo team with a month of history, dispatches a few live jobs, logs in
with Playwright and captures the overview, the jobs table and a job page.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from dispatched.embedded import start_redis

    tmp = Path(tempfile.mkdtemp(prefix="dispatched-shots-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DISPATCHED_ENV": "development",  # the echo receiver, an http:// demo webhook
        "DATABASE_URL": f"sqlite:///{tmp / 'demo.db'}",
        "REDIS_URL": os.environ.get("SCREENSHOT_REDIS_URL") or start_redis(tmp),
        "PUBLIC_URL": base,
        "PYTHONUNBUFFERED": "1",
        "WORKER_CONCURRENCY": "2",
    }
    py = sys.executable
    flask = [py, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    demo = json.loads(
        subprocess.run(
            [*flask, "admin", "seed-demo", "--history", "--json"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for cmd in (
            [py, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--threads", "4", "wsgi:app"],
            [py, "worker.py"],
            [py, "scheduler.py"],
        )
    ]
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/healthz", timeout=3).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {demo['apiKey']}"}
        for n in range(6):
            requests.post(
                f"{base}/api/jobs/dispatch",
                headers=headers,
                timeout=5,
                json={"payload": {"type": "email.welcome", "userId": 5000 + n}},
            )
        for minutes in (5, 30, 90):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60 * minutes))
            requests.post(
                f"{base}/api/jobs/dispatch",
                headers=headers,
                timeout=5,
                json={"payload": {"type": "report.weekly"}, "scheduleFor": when},
            )
        time.sleep(4)
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/login")
            page.fill("input[name=email]", demo["login"]["email"])
            page.fill("input[name=password]", demo["login"]["password"])
            page.click("button[type=submit]")
            page.wait_for_selector("svg.chart")
            page.screenshot(path=str(OUT / "overview.png"), full_page=True)
            page.click("nav.tabs >> text=Jobs")
            page.wait_for_selector("#job-rows tr")
            page.screenshot(path=str(OUT / "jobs.png"), full_page=False)
            page.goto(page.url + "?status=FAILED")
            page.click("#job-rows a >> nth=0")
            page.wait_for_selector(".timeline")
            page.screenshot(path=str(OUT / "job.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 375, "height": 740})
            phone.context.add_cookies(page.context.cookies())
            phone.goto(page.url.split("/jobs/")[0] + "/jobs")
            phone.screenshot(path=str(OUT / "jobs-phone.png"))
            browser.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # each process stops its own children
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"screenshots written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
