"""Flask: a view decorator that verifies the raw body before anything parses it.

    from dispatched_sdk.flask import verify_webhook

    @app.post("/webhooks/dispatched")
    @verify_webhook(secret=os.environ["DISPATCHED_WEBHOOK_SECRET"])
    def hook(delivery):
        handle(delivery["payload"])
        return "", 204

A request that does not verify gets 401 with ``{"error": "INVALID_SIGNATURE", "data":
{"reason", "message"}}`` (Dispatched retries it, and its attempt log shows the reason).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from flask import jsonify, request

from ._signature import DEFAULT_TOLERANCE
from .errors import InvalidSignature
from .webhooks import Verifier, rejection

F = TypeVar("F", bound=Callable[..., Any])


def verify_webhook(
    secret: str | Sequence[str] | None = None,
    bearer_token: str | None = None,
    *,
    tolerance: float | timedelta = DEFAULT_TOLERANCE,
    argument: str = "delivery",
) -> Callable[[F], F]:
    """Verify the request, then call the view with the delivery as keyword ``argument``.

    Credentials left out come from ``DISPATCHED_WEBHOOK_SECRET`` /
    ``DISPATCHED_WEBHOOK_BEARER_TOKEN`` at request time.
    """
    verifier = Verifier(secret, bearer_token, tolerance=tolerance)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # The raw bytes, cached so the view may still read request.get_data()/.json.
            raw = request.get_data(cache=True)
            try:
                delivery = verifier.verify(request.headers, raw)
            except InvalidSignature as exc:
                return jsonify(rejection(exc)), 401
            kwargs[argument] = delivery
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
