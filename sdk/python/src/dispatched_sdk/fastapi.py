"""FastAPI / Starlette: a dependency that verifies ``await request.body()``, the raw bytes.

    from dispatched_sdk.fastapi import WebhookVerifier
    from dispatched_sdk import Delivery

    verified = WebhookVerifier(secret=os.environ["DISPATCHED_WEBHOOK_SECRET"])

    @app.post("/webhooks/dispatched", status_code=204)
    async def hook(delivery: Annotated[Delivery, Depends(verified)]):
        handle(delivery["payload"])

A request that does not verify gets 401 with ``{"detail": {"error": "INVALID_SIGNATURE",
"data": {"reason", "message"}}}``. Declare no body model on the route: use the delivery.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at run time.
from collections.abc import Sequence
from datetime import timedelta

from fastapi import HTTPException, Request

from ._signature import DEFAULT_TOLERANCE
from .errors import InvalidSignature
from .webhooks import Delivery, Verifier, rejection


class WebhookVerifier:
    """A dependency: ``Depends(WebhookVerifier(secret=...))`` gives the verified delivery.

    Credentials left out come from ``DISPATCHED_WEBHOOK_SECRET`` /
    ``DISPATCHED_WEBHOOK_BEARER_TOKEN`` at request time.
    """

    def __init__(
        self,
        secret: str | Sequence[str] | None = None,
        bearer_token: str | None = None,
        *,
        tolerance: float | timedelta = DEFAULT_TOLERANCE,
    ) -> None:
        self.verifier = Verifier(secret, bearer_token, tolerance=tolerance)

    async def __call__(self, request: Request) -> Delivery:
        raw = await request.body()
        try:
            return self.verifier.verify(request.headers, raw)
        except InvalidSignature as exc:
            raise HTTPException(status_code=401, detail=rejection(exc)) from None


def verify_webhook(
    secret: str | Sequence[str] | None = None,
    bearer_token: str | None = None,
    *,
    tolerance: float | timedelta = DEFAULT_TOLERANCE,
) -> WebhookVerifier:
    """Same as ``WebhookVerifier(...)``, named like the Flask and Django helpers."""
    return WebhookVerifier(secret, bearer_token, tolerance=tolerance)
