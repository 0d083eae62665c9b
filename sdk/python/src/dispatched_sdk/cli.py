"""The ``dispatched`` command line: jobs, schedules, the project, usage, and ``verify``.

Credentials come from ``--api-key`` / ``--base-url`` or ``DISPATCHED_API_KEY`` /
``DISPATCHED_BASE_URL``. Exit codes: 0 ok, 1 the API refused (code and message on stderr) or
a delivery does not verify, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

from . import _core as core
from . import types as t
from ._version import __version__
from .errors import APIConnectionError, APIError, RateLimited

JOB_STATUSES = ("QUEUED", "DISPATCHED", "STARTED", "COMPLETED", "FAILED", "CANCELLED")
EPILOG = "Exit codes: 0 ok, 1 API error or delivery does not verify, 2 usage error."


class UsageError(Exception):
    """A bad argument: exit 2."""


# --- argument parsing --------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``dispatched --json jobs list`` too)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (DISPATCHED_API_KEY)")
    parent.add_argument(
        "--base-url", default=argparse.SUPPRESS, help="server URL (DISPATCHED_BASE_URL)"
    )
    parent.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    parent.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="dispatched",
        description="Dispatched from the command line: background jobs over webhooks.",
        epilog=EPILOG,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"dispatched-sdk {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def command(sub: Any, name: str, help: str, handler: Callable[..., int]) -> Any:
        p = sub.add_parser(name, help=help, description=help, parents=[common], epilog=EPILOG)
        p.set_defaults(handler=handler)
        return p

    jobs = groups.add_parser("jobs", help="dispatch, inspect and follow jobs").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    p = command(jobs, "dispatch", "create a job", cmd_dispatch)
    p.add_argument("--payload", required=True, help="JSON object, @file or @- (stdin)")
    p.add_argument("--at", help="when: ISO-8601 (naive = UTC), now, or +30s/+10m/+2h/+1d")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--idempotency-key", help="a repeat within 24 h returns the original job")
    p.add_argument("--callback", help="URL told when the job completes")
    p.add_argument("--failure-callback", help="URL told when the job fails")
    p = command(jobs, "batch", "create up to 100 jobs from a JSON array (or JSON lines)", cmd_batch)
    p.add_argument("--file", required=True, help="JSON array of dispatch bodies, @- for stdin")
    for name, text, handler in (
        ("get", "show a job", cmd_get),
        ("cancel", "cancel a QUEUED job", cmd_cancel),
        ("replay", "deliver a FAILED job again with a fresh retry budget", cmd_replay),
        ("attempts", "a job's delivery attempts", cmd_attempts),
    ):
        command(jobs, name, text, handler).add_argument("job_id", metavar="ID")
    p = command(jobs, "reschedule", "move a QUEUED job", cmd_reschedule)
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--at", required=True, help="ISO-8601, now, or +30s/+10m/+2h/+1d")
    p = command(jobs, "list", "list jobs, newest first", cmd_list)
    p.add_argument("--status", type=str.upper, choices=JOB_STATUSES)
    p.add_argument("--limit", type=int, help="jobs per page (1-100)")
    p.add_argument("--cursor")
    p.add_argument("--all", action="store_true", help="walk every page")
    p = command(jobs, "tail", "follow new and changing jobs live (Ctrl-C stops)", cmd_tail)
    p.add_argument("--status", type=str.upper, choices=JOB_STATUSES)
    p.add_argument("--limit", type=int, default=50, help="newest jobs watched (default 50)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")

    schedules = groups.add_parser("schedules", help="recurring schedules").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    p = command(schedules, "create", "create a recurring schedule", cmd_schedule_create)
    p.add_argument("--cron", required=True, help="5-field cron expression")
    p.add_argument("--payload", required=True, help="JSON object, @file or @- (stdin)")
    p.add_argument("--timezone", help="IANA zone (default UTC)")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--name")
    p.add_argument("--catch-up", choices=("none", "latest"))
    p = command(schedules, "list", "list schedules", cmd_schedule_list)
    p.add_argument("--limit", type=int)
    p.add_argument("--cursor")
    p.add_argument("--all", action="store_true", help="walk every page")
    for name, text, handler in (
        ("get", "show a schedule", cmd_schedule_get),
        ("delete", "delete a schedule", cmd_schedule_delete),
        ("pause", "pause a schedule", cmd_schedule_pause),
        ("resume", "resume a schedule", cmd_schedule_resume),
    ):
        command(schedules, name, text, handler).add_argument("schedule_id", metavar="ID")
    p = command(schedules, "update", "change a schedule", cmd_schedule_update)
    p.add_argument("schedule_id", metavar="ID")
    p.add_argument("--cron")
    p.add_argument("--payload", help="JSON object, @file or @- (stdin)")
    p.add_argument("--timezone")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--name")
    p.add_argument("--catch-up", choices=("none", "latest"))
    p = command(
        schedules, "preview", "next fire times of a schedule, or of --cron", cmd_schedule_preview
    )
    p.add_argument("schedule_id", metavar="ID", nargs="?")
    p.add_argument("--cron", help="preview an expression without creating a schedule")
    p.add_argument("--timezone")
    p.add_argument("--count", type=int)
    p.add_argument("--from", dest="start", help="ISO-8601 start (default now)")
    p = command(schedules, "jobs", "jobs a schedule created", cmd_schedule_jobs)
    p.add_argument("schedule_id", metavar="ID")
    p.add_argument("--limit", type=int)
    p.add_argument("--all", action="store_true", help="walk every page")

    project = groups.add_parser("project", help="project settings").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    command(project, "get", "show the project", cmd_project_get)
    p = command(project, "update", "change the project (admin key)", cmd_project_update)
    p.add_argument("--webhook-url")
    p.add_argument("--parallelism", help="an integer, or 'default' for the plan's cap")
    p.add_argument("--rate", help="attempt starts per second, or 'none'")
    command(project, "resume", "resume a paused endpoint", cmd_project_resume)

    command(groups, "usage", "this month's usage against the plan", cmd_usage)

    p = command(groups, "verify", "say why a delivery does (not) verify", cmd_verify)
    p.add_argument("--secret", help="signing secret, whsec_… (DISPATCHED_WEBHOOK_SECRET)")
    p.add_argument("--previous-secret", help="the secret before a rotation, to recognise one")
    p.add_argument("--bearer-token", help="bearer token, whbt_… (DISPATCHED_WEBHOOK_BEARER_TOKEN)")
    p.add_argument("--headers", required=True, help="file of 'Name: value' lines (or JSON)")
    p.add_argument("--body", required=True, help="file with the raw body as received")
    p.add_argument("--tolerance", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--now", help="when it was received: ISO-8601 or Unix seconds (default now)")
    return parser


# --- helpers -----------------------------------------------------------------------------------


def _read(source: str) -> bytes:
    """A file's bytes, ``-`` for stdin."""
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source!r}: {exc.strerror}") from None


def _json_arg(value: str, what: str) -> Any:
    text = _read(value[1:]).decode("utf-8") if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _when(value: str | None) -> datetime | str | None:
    """``--at``: None/now = now, +10m = from now, else ISO-8601 (naive = UTC)."""
    if value is None or value.lower() == "now":
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return datetime.now(timezone.utc) + timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        return t.parse_time(value)
    except ValueError:
        raise UsageError(f"--at must be ISO-8601, 'now' or +N[smhd], got {value!r}") from None


def _time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_fields(raw: dict[str, Any]) -> None:
    width = max((len(k) for k in raw), default=0)
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key + ':':<{width + 1}} {'-' if value is None else value}")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


JOB_COLUMNS = ("JOB ID", "STATUS", "ATTEMPTS", "SCHEDULED FOR", "UPDATED", "LAST ERROR")


def _job_row(job: t.Job) -> list[Any]:
    error = (job.last_error or "")[:40] or None
    return [
        job.job_id,
        job.status,
        job.attempts,
        _time(job.scheduled_for),
        _time(job.updated_at),
        error,
    ]


def _tail_line(cells: Sequence[str]) -> str:
    """A row of ``jobs tail``: fixed widths, since rows print as they come."""
    widths = (28, 10, 8, 20, 20)
    fixed = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
    return f"{fixed}  {cells[-1]}".rstrip()


def _show(args: argparse.Namespace, raw: dict[str, Any]) -> int:
    if getattr(args, "json", False):
        _print_json(raw)
    else:
        _print_fields(raw)
    return 0


def _show_jobs(args: argparse.Namespace, jobs: list[t.Job]) -> int:
    if getattr(args, "json", False):
        _print_json([j.raw for j in jobs])
    elif jobs:
        print(_table(JOB_COLUMNS, [_job_row(j) for j in jobs]))
    else:
        print("No jobs.")
    return 0


def _page(page: Any, walk_all: bool) -> list[Any]:
    return list(page) if walk_all else page.items


def _client(args: argparse.Namespace) -> Any:
    try:
        from .client import Dispatched
    except ImportError as exc:  # installed with --no-deps next to a server (dev.py run's venv)
        raise UsageError(
            f"the API commands need {exc.name}: pip install ./sdk/python with its dependencies"
        ) from None

    api_key = getattr(args, "api_key", None) or os.environ.get(core.ENV_API_KEY)
    if not api_key:
        raise UsageError(f"no API key: pass --api-key or set {core.ENV_API_KEY}")
    return Dispatched(
        api_key,
        base_url=getattr(args, "base_url", None),
        timeout=getattr(args, "timeout", 30.0),
    )


# --- commands ----------------------------------------------------------------------------------


def cmd_dispatch(args: argparse.Namespace) -> int:
    payload = _json_arg(args.payload, "--payload")
    result = _client(args).jobs.dispatch(
        payload,
        schedule_for=_when(args.at),
        max_retries=args.max_retries,
        idempotency_key=args.idempotency_key,
        callback=args.callback,
        failure_callback=args.failure_callback,
    )
    return _show(args, result.raw)


def cmd_batch(args: argparse.Namespace) -> int:
    source = args.file[1:] if args.file.startswith("@") else args.file
    text = _read(source).decode("utf-8")
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise UsageError(f"--file is neither a JSON array nor JSON lines: {exc}") from None
    items = document.get("jobs") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise UsageError('--file must hold a JSON array of dispatch bodies (or {"jobs": [...]})')
    results = _client(args).jobs.dispatch_batch(items)
    if getattr(args, "json", False):
        _print_json([r.raw for r in results])
    else:
        rows = [
            [
                r.index,
                r.job.job_id if r.job else None,
                "ok" if r.ok else f"{r.error.code}: {r.error.message}",
            ]
            for r in results
        ]
        print(_table(("#", "JOB ID", "RESULT"), rows))
    return 0 if all(r.ok for r in results) else 1


def cmd_get(args: argparse.Namespace) -> int:
    return _show(args, _client(args).jobs.get(args.job_id).raw)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _show(args, _client(args).jobs.cancel(args.job_id).raw)


def cmd_replay(args: argparse.Namespace) -> int:
    return _show(args, _client(args).jobs.replay(args.job_id).raw)


def cmd_reschedule(args: argparse.Namespace) -> int:
    return _show(args, _client(args).jobs.reschedule(args.job_id, _when(args.at)).raw)


def cmd_attempts(args: argparse.Namespace) -> int:
    attempts = _client(args).jobs.attempts(args.job_id)
    if getattr(args, "json", False):
        _print_json([a.raw for a in attempts])
    elif not attempts:
        print("No attempts yet.")
    else:
        rows = [
            [
                a.attempt_number,
                a.attempt_id,
                _time(a.started_at),
                a.outcome or "in flight",
                a.http_status,
                a.duration_ms,
                (a.error or "")[:60] or None,
            ]
            for a in attempts
        ]
        print(_table(("#", "ATTEMPT ID", "STARTED", "OUTCOME", "HTTP", "MS", "ERROR"), rows))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _client(args).jobs.list(status=args.status, limit=args.limit, cursor=args.cursor)
    code = _show_jobs(args, _page(page, args.all))
    if page.next_cursor and not args.all and not getattr(args, "json", False):
        print(f"(more: --cursor {page.next_cursor} or --all)", file=sys.stderr)
    return code


def cmd_tail(args: argparse.Namespace) -> int:
    """Poll the newest jobs; print each new job and each change of one, like kubectl get -w."""
    client = _client(args)
    as_json = getattr(args, "json", False)
    seen: dict[str, tuple[Any, ...]] = {}
    first = True
    if not as_json:
        print(_tail_line(JOB_COLUMNS))
        sys.stdout.flush()
    try:
        while True:
            try:
                jobs = client.jobs.list(status=args.status, limit=args.limit).items
            except RateLimited as exc:
                time.sleep(exc.retry_after or args.interval)
                continue
            for job in reversed(jobs):  # oldest first, like a log
                state = (job.status, job.attempts, job.raw.get("updatedAt"), job.last_error)
                before = seen.get(job.job_id)
                if before == state:
                    continue
                seen[job.job_id] = state
                event = "ADDED" if before is None else "MODIFIED"
                if as_json:
                    print(json.dumps({"event": "SNAPSHOT" if first else event, "job": job.raw}))
                else:
                    print(_tail_line(["-" if c is None else str(c) for c in _job_row(job)]))
            sys.stdout.flush()
            first = False
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_schedule_create(args: argparse.Namespace) -> int:
    schedule = _client(args).schedules.create(
        args.cron,
        _json_arg(args.payload, "--payload"),
        timezone=args.timezone,
        max_retries=args.max_retries,
        name=args.name,
        catch_up=args.catch_up,
    )
    return _show(args, schedule.raw)


def _show_schedules(args: argparse.Namespace, schedules: list[t.Schedule]) -> int:
    if getattr(args, "json", False):
        _print_json([s.raw for s in schedules])
    elif not schedules:
        print("No schedules.")
    else:
        rows = [
            [
                s.schedule_id,
                s.name,
                s.cron,
                s.timezone,
                "yes" if s.paused else "no",
                _time(s.next_fire_at),
            ]
            for s in schedules
        ]
        print(_table(("SCHEDULE ID", "NAME", "CRON", "TIMEZONE", "PAUSED", "NEXT FIRE"), rows))
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    page = _client(args).schedules.list(limit=args.limit, cursor=args.cursor)
    return _show_schedules(args, _page(page, args.all))


def cmd_schedule_get(args: argparse.Namespace) -> int:
    return _show(args, _client(args).schedules.get(args.schedule_id).raw)


def cmd_schedule_delete(args: argparse.Namespace) -> int:
    _client(args).schedules.delete(args.schedule_id)
    return _show(args, {"scheduleId": args.schedule_id, "deleted": True})


def cmd_schedule_pause(args: argparse.Namespace) -> int:
    return _show(args, _client(args).schedules.pause(args.schedule_id).raw)


def cmd_schedule_resume(args: argparse.Namespace) -> int:
    return _show(args, _client(args).schedules.resume(args.schedule_id).raw)


def cmd_schedule_update(args: argparse.Namespace) -> int:
    fields = {
        "cron": args.cron,
        "timezone": args.timezone,
        "max_retries": args.max_retries,
        "name": args.name,
        "catch_up": args.catch_up,
        "payload": _json_arg(args.payload, "--payload") if args.payload else None,
    }
    changes = {k: v for k, v in fields.items() if v is not None}
    if not changes:
        raise UsageError("nothing to change: give --cron, --payload, --timezone, ...")
    return _show(args, _client(args).schedules.update(args.schedule_id, **changes).raw)


def cmd_schedule_preview(args: argparse.Namespace) -> int:
    client = _client(args)
    start = _when(args.start) if args.start else None
    if args.schedule_id and args.cron:
        raise UsageError("give a schedule ID or --cron, not both")
    if args.schedule_id:
        fires = client.schedules.preview(args.schedule_id, count=args.count, start=start)
    elif args.cron:
        fires = client.schedules.preview_cron(
            args.cron, timezone=args.timezone, count=args.count, start=start
        )
    else:
        raise UsageError("give a schedule ID or --cron")
    if getattr(args, "json", False):
        _print_json([f.raw for f in fires])
    else:
        rows = [[f.raw.get("at"), f.raw.get("local"), f.dst] for f in fires]
        print(_table(("AT (UTC)", "LOCAL", "DST"), rows))
    return 0


def cmd_schedule_jobs(args: argparse.Namespace) -> int:
    page = _client(args).schedules.jobs(args.schedule_id, limit=args.limit)
    return _show_jobs(args, _page(page, args.all))


def cmd_project_get(args: argparse.Namespace) -> int:
    return _show(args, _client(args).project.get().raw)


def cmd_project_update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.webhook_url is not None:
        changes["webhook_url"] = args.webhook_url
    if args.parallelism is not None:
        changes["parallelism"] = _number(args.parallelism, "--parallelism", int, "default")
    if args.rate is not None:
        changes["rate_per_second"] = _number(args.rate, "--rate", float, "none")
    if not changes:
        raise UsageError("nothing to change: give --webhook-url, --parallelism or --rate")
    return _show(args, _client(args).project.update(**changes).raw)


def _number(value: str, flag: str, kind: type, reset: str) -> Any:
    if value.lower() == reset:
        return None
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"{flag} must be a number or {reset!r}, got {value!r}") from None


def cmd_project_resume(args: argparse.Namespace) -> int:
    return _show(args, _client(args).project.resume().raw)


def cmd_usage(args: argparse.Namespace) -> int:
    return _show(args, _client(args).usage().raw)


def cmd_verify(args: argparse.Namespace) -> int:
    from .doctor import diagnose, parse_header_block

    secret = args.secret or os.environ.get("DISPATCHED_WEBHOOK_SECRET")
    token = args.bearer_token or os.environ.get("DISPATCHED_WEBHOOK_BEARER_TOKEN")
    if not secret and not token and not args.previous_secret:
        raise UsageError("give --secret and/or --bearer-token")
    headers = parse_header_block(_read(args.headers).decode("utf-8", "replace"))
    if not headers:
        raise UsageError(f"no 'Name: value' header lines in {args.headers!r}")
    now: float | datetime | None = None
    if args.now:
        now = float(args.now) if re.fullmatch(r"\d+(\.\d+)?", args.now) else _when(args.now)
    diagnosis = diagnose(
        headers,
        _read(args.body),
        secret=secret,
        previous_secret=args.previous_secret,
        bearer_token=token,
        tolerance=args.tolerance,
        now=now,
    )
    if getattr(args, "json", False):
        _print_json(diagnosis.to_dict())
    else:
        print(diagnosis.text())
    return 0 if diagnosis.verified else 1


# --- entry point -------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    print(f"dispatched: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        return args.handler(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        _fail(str(exc), 2)
    except ValueError as exc:  # e.g. an id or a time the SDK refuses before sending
        _fail(str(exc), 2)
    except APIError as exc:
        _fail(f"{exc.code} ({exc.status}): {exc.message}", 1)
    except APIConnectionError as exc:
        _fail(f"cannot reach the server: {exc}", 1)
    except BrokenPipeError:  # `dispatched jobs tail | head`
        return 0
