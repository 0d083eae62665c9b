"""Baseline of the delivery benchmarks: an RQ task that only POSTs to the receiver.

``post(url, body)`` is what RQ runs for each bare job: one ``requests`` POST on a per-process
``requests.Session`` (keep-alive, like the delivery task's pooled session, so the baseline is
not handicapped by a TCP handshake per job). ``BareWorker`` is ``rq.SimpleWorker`` with RQ's
own scheduler thread off, exactly as ``DeliveryWorker`` does.
"""

from __future__ import annotations

from typing import Any

import requests
from rq import SimpleWorker

_session = requests.Session()


def post(url: str, body: bytes) -> int:
    response = _session.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    _ = response.content  # read the body so the connection goes back to the pool
    return response.status_code


class BareWorker(SimpleWorker):
    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        return super().work(*args, **kwargs)


def enqueue(conn: Any, queue_name: str, url: str, n: int) -> None:
    """Put ``n`` bare jobs on ``queue_name`` (bodies shaped like a delivery's)."""
    import json

    from rq import Queue

    queue = Queue(queue_name, connection=conn)
    batch = []
    for i in range(n):
        body = json.dumps(
            {
                "jobId": f"bare_{i}",
                "attemptId": f"att_{i}",
                "attempt": f"att_{i}",
                "attemptNumber": 1,
                "payload": {"i": i},
            },
            separators=(",", ":"),
        ).encode()
        batch.append(
            Queue.prepare_data(
                "bench.bare_task.post",
                args=(url, body),
                result_ttl=0,
                timeout=90,
                job_id=f"bare_{i}-1",
            )
        )
        if len(batch) == 500:
            queue.enqueue_many(batch)
            batch = []
    if batch:
        queue.enqueue_many(batch)
