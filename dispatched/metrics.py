"""Prometheus metrics, kept in Redis so every web, worker and scheduler process adds to the
same counters (no per-process registry, no multiprocess directory), rendered at ``/metrics``.

Recording is best effort: a metrics write never fails a delivery or a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError

from . import clock, redis_client, transport, workers
from .extensions import db
from .models import Job, JobStatus, ProjectFlow

logger = logging.getLogger(__name__)

KEY = "dispatched:metrics"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


def count_job(event: str, count: int = 1) -> None:
    """Count a job event: dispatched, completed, failed, cancelled, replayed."""
    _hincr({f"jobs_total|{event}": count})


def count_callback(outcome: str) -> None:
    """Count a callback attempt: delivered, failed (retries spent), or a retried outcome."""
    _hincr({f"callbacks_total|{outcome}": 1})


def count_jobs(events: dict[str, int]) -> None:
    """Count several job events (event → how many) in one Redis round trip."""
    if events:
        _hincr({f"jobs_total|{event}": n for event, n in events.items()})


def job_counter(event: str, n: int) -> Callable[[Any], None]:
    """Return a function that adds ``n`` job events to a Redis pipeline (so they travel with
    other commands, e.g. the ingest hand-off: ``transport.admit(..., also=...)``)."""

    def add(pipe: Any) -> None:
        if n:
            pipe.hincrby(KEY, f"jobs_total|{event}", n)

    return add


def observe_attempts(attempts: Iterable[tuple[str, float | None, float | None]]) -> None:
    """Count delivery attempts ``(outcome, latency s, lateness s)`` in one Redis round trip."""
    fields: dict[str, float] = {}
    for outcome, seconds, lateness in attempts:
        parts = {f"attempts_total|{outcome}": 1.0}
        if seconds is not None:
            parts.update(_histogram("latency", seconds, LATENCY_BUCKETS))
        if lateness is not None:
            parts.update(_histogram("lateness", max(lateness, 0.0), LATENESS_BUCKETS))
        for field, amount in parts.items():
            fields[field] = fields.get(field, 0) + amount
    if fields:
        _hincr(fields)


def _histogram(name: str, value: float, buckets: Iterable[float]) -> dict[str, float]:
    fields: dict[str, float] = {f"{name}_sum": value, f"{name}_count": 1}
    for bound in buckets:
        if value <= bound:
            fields[f"{name}_bucket|{bound}"] = 1
    return fields


def _hincr(fields: dict[str, float]) -> None:
    try:
        pipe = redis_client.connection().pipeline(transaction=False)
        for field, amount in fields.items():
            if isinstance(amount, float) and not amount.is_integer():
                pipe.hincrbyfloat(KEY, field, amount)
            else:
                pipe.hincrby(KEY, field, int(amount))
        pipe.execute()
    except RedisError as exc:
        logger.debug("metrics not recorded (Redis unreachable): %s", exc)


def render() -> str:
    """Return the Prometheus text exposition of every metric."""
    lines: list[str] = []
    try:
        raw = {k.decode(): float(v) for k, v in redis_client.connection().hgetall(KEY).items()}
        depth = transport.depth()
    except (RedisError, transport.TransportUnavailable):
        raw, depth = {}, None

    def counter(name: str, label: str, help_text: str, prefix: str) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} counter"])
        for field, value in sorted(raw.items()):
            if field.startswith(prefix + "|"):
                lines.append(f'{name}{{{label}="{field.split("|", 1)[1]}"}} {value:g}')

    def histogram(name: str, help_text: str, key: str, buckets: Iterable[float]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} histogram"])
        for bound in buckets:
            lines.append(f'{name}_bucket{{le="{bound}"}} {raw.get(f"{key}_bucket|{bound}", 0):g}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {raw.get(f"{key}_count", 0):g}')
        lines.append(f"{name}_sum {raw.get(f'{key}_sum', 0):g}")
        lines.append(f"{name}_count {raw.get(f'{key}_count', 0):g}")

    counter("dispatched_jobs_total", "event", "Jobs by lifecycle event.", "jobs_total")
    counter(
        "dispatched_callback_attempts_total",
        "outcome",
        "Callback attempts: delivered, failed (retries spent), or the outcome of one retried.",
        "callbacks_total",
    )
    counter(
        "dispatched_delivery_attempts_total",
        "outcome",
        "Delivery attempts by outcome.",
        "attempts_total",
    )
    histogram(
        "dispatched_delivery_latency_seconds",
        "Webhook request duration.",
        "latency",
        LATENCY_BUCKETS,
    )
    histogram(
        "dispatched_schedule_lateness_seconds",
        "Attempt start minus its due time (scheduled time, or retry time).",
        "lateness",
        LATENESS_BUCKETS,
    )
    if depth is not None:
        lines += [
            "# HELP dispatched_queue_depth Attempts waiting, by place.",
            "# TYPE dispatched_queue_depth gauge",
        ]
        lines += [f'dispatched_queue_depth{{place="{k}"}} {v}' for k, v in depth.items()]
    lines += [
        "# HELP dispatched_worker_in_flight Attempts held per live worker process: being sent,"
        " or claimed and next in line for a thread.",
        "# TYPE dispatched_worker_in_flight gauge",
    ]
    live = workers.load()
    for worker_id, in_flight, _ in live:
        lines.append(f'dispatched_worker_in_flight{{worker="{worker_id}"}} {in_flight}')
    lines += [
        "# HELP dispatched_worker_capacity Delivery threads per live worker process"
        " (DELIVERY_CONCURRENCY); it may hold half as many again, next in line.",
        "# TYPE dispatched_worker_capacity gauge",
    ]
    for worker_id, _, capacity in live:
        lines.append(f'dispatched_worker_capacity{{worker="{worker_id}"}} {capacity}')
    now = clock.utcnow()
    flow_counts = db.session.execute(
        sa.select(
            sa.func.count().filter(ProjectFlow.effective.is_not(None)),
            sa.func.count().filter(ProjectFlow.paused_until > now),
            sa.func.count().filter(ProjectFlow.waiting.is_(True)),
            sa.func.count().filter(ProjectFlow.endpoint_paused_at.is_not(None)),
        )
    ).one()
    lines += [
        "# HELP dispatched_projects Projects by flow-control state (DESIGN.md §9).",
        "# TYPE dispatched_projects gauge",
    ]
    for state, value in zip(("throttled", "paused", "waiting"), flow_counts[:3], strict=True):
        lines.append(f'dispatched_projects{{state="{state}"}} {value}')
    lines += [
        "# HELP dispatched_endpoints_paused Projects whose endpoint is paused after failing "
        "(DESIGN.md §12).",
        "# TYPE dispatched_endpoints_paused gauge",
        f"dispatched_endpoints_paused {flow_counts[3]}",
    ]
    counts = dict(
        db.session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all()
    )
    lines += ["# HELP dispatched_jobs Jobs by current status.", "# TYPE dispatched_jobs gauge"]
    lines += [f'dispatched_jobs{{status="{s}"}} {counts.get(s, 0)}' for s in JobStatus.ALL]
    return "\n".join(lines) + "\n"
