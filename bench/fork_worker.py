"""The fork-per-job variant of ``DeliveryWorker``, for the worker-class comparison.

``ForkDeliveryWorker`` subclasses ``rq.Worker`` (a fresh ``os.fork()`` "work horse" per job)
with the same app-context logic as ``dispatched.rq_worker.DeliveryWorker``: the app is built
once per worker process and inherited by each forked horse. A forked child must not reuse the
parent's pooled DB connections, so the engine's pool is dropped in the child
(``dispose(close=False)``, via ``os.register_at_fork``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import has_app_context
from rq import Worker

_registered: set[int] = set()


class ForkDeliveryWorker(Worker):
    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        if has_app_context():
            return self._work_registered(*args, **kwargs)
        from dispatched import create_app

        with create_app().app_context():
            return self._work_registered(*args, **kwargs)

    def _work_registered(self, *args: Any, **kwargs: Any) -> bool:
        from dispatched.extensions import db

        engine = db.engine
        if id(engine) not in _registered:
            _registered.add(id(engine))
            os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        return super().work(*args, **kwargs)

    def perform_job(self, job: Any, queue: Any) -> bool:
        from dispatched.extensions import db

        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()
