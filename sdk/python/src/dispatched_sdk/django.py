"""Django: a view decorator (CSRF-exempt) that verifies ``request.body``, the raw bytes.

    from dispatched_sdk.django import verify_webhook

    @verify_webhook(secret=settings.DISPATCHED_WEBHOOK_SECRET)
    def hook(request, delivery):
        handle(delivery["payload"])
        return HttpResponse(status=204)

Only POST is accepted (405 otherwise). A request that does not verify gets 401 with
``{"error": "INVALID_SIGNATURE", "data": {"reason", "message"}}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

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

    Webhooks carry no CSRF token, so the view is exempt; the signature is its protection.
    Credentials left out come from ``DISPATCHED_WEBHOOK_SECRET`` /
    ``DISPATCHED_WEBHOOK_BEARER_TOKEN`` at request time.
    """
    verifier = Verifier(secret, bearer_token, tolerance=tolerance)

    def decorate(view: F) -> F:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            try:
                delivery = verifier.verify(request.headers, request.body)
            except InvalidSignature as exc:
                return JsonResponse(rejection(exc), status=401)
            kwargs[argument] = delivery
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
