"""Log output: plain text (the default) or one JSON object per line (``LOG_FORMAT=json``).

Every process (web, worker, scheduler, the CLI) logs to stderr through the root logger;
gunicorn's error and access logs use the same formatter (``gunicorn.conf.py``). A JSON line has
``ts`` (UTC, milliseconds), ``level``, ``logger``, ``pid``, ``message``, ``exc`` when there is
a traceback, and, for gunicorn's access log, the request's fields (``remote``, ``method``,
``path``, ``query``, ``status``, ``bytes``, ``durationMs``, ``userAgent``, ``referer``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: The values of ``LOG_FORMAT``.
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: gunicorn's access log line in text mode (its atoms: client, request line, status, bytes,
#: duration in ms, referer, user agent).
ACCESS_TEXT_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'

#: gunicorn access-log atoms → JSON field names.
ACCESS_FIELDS = {
    "h": "remote",
    "m": "method",
    "U": "path",
    "q": "query",
    "s": "status",
    "B": "bytes",
    "M": "durationMs",
    "a": "userAgent",
    "f": "referer",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            atoms = record.args
            entry["message"] = f"{atoms.get('m', '')} {atoms.get('U', '')} {atoms.get('s', '')}"
            for atom, name in ACCESS_FIELDS.items():
                value = atoms.get(atom)
                if value not in (None, "-", ""):
                    # gunicorn escapes quotes for its text line; JSON escapes them itself.
                    entry[name] = _number(value) if atom in "sBM" else value.replace('\\"', '"')
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["exc"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _number(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def check_format(log_format: str) -> str:
    """Return ``log_format`` normalised, or raise ValueError naming the bad value."""
    normalised = (log_format or "text").strip().lower()
    if normalised not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, got {log_format!r}")
    return normalised


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json")."""
    return JsonFormatter() if check_format(log_format) == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: str) -> None:
    """Send the root logger to stderr in ``log_format``, unless something configured it first
    (gunicorn's ``logconfig_dict``, a test runner)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)


def gunicorn_logconfig(level: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict`` for JSON logs: its error and access logs and the app's
    (root) logs, all as JSON on stderr/stdout."""
    handler = {"class": "logging.StreamHandler", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "dispatched.logs.JsonFormatter"}},
        "handlers": {
            "console": {**handler, "stream": "ext://sys.stderr"},
            "access": {**handler, "stream": "ext://sys.stdout"},
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
