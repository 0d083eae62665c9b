"""Dispatched's Python SDK: API clients, webhook verification, the ``dispatched`` CLI.

    from dispatched_sdk import Dispatched, verify

Names are imported on first use, so the receiver side (``verify``, the doctor) works without
the HTTP client's dependencies loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "Dispatched": "client",
    "Page": "client",
    "AsyncDispatched": "async_client",
    "AsyncPage": "async_client",
    "UNSET": "_core",
    "new_idempotency_key": "_core",
    "verify": "webhooks",
    "Verifier": "webhooks",
    "Delivery": "webhooks",
    "diagnose": "doctor",
    "Diagnosis": "doctor",
    **{
        name: "errors"
        for name in (
            "DispatchedError",
            "APIError",
            "APIConnectionError",
            "BadRequest",
            "Unauthorized",
            "Forbidden",
            "NotFound",
            "MethodNotAllowed",
            "Conflict",
            "PayloadTooLarge",
            "UnsupportedMediaType",
            "RateLimited",
            "LimitReached",
            "InternalError",
            "ServiceUnavailable",
            "InvalidSignature",
        )
    },
    **{
        name: "types"
        for name in (
            "Attempt",
            "BatchItem",
            "Cancelled",
            "DispatchResult",
            "EndpointState",
            "Fire",
            "FlowControl",
            "Job",
            "Project",
            "Schedule",
            "Usage",
        )
    },
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dispatched_sdk' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from ._core import UNSET, new_idempotency_key
    from .async_client import AsyncDispatched, AsyncPage
    from .client import Dispatched, Page
    from .doctor import Diagnosis, diagnose
    from .errors import (
        APIConnectionError,
        APIError,
        BadRequest,
        Conflict,
        DispatchedError,
        Forbidden,
        InternalError,
        InvalidSignature,
        LimitReached,
        MethodNotAllowed,
        NotFound,
        PayloadTooLarge,
        RateLimited,
        ServiceUnavailable,
        Unauthorized,
        UnsupportedMediaType,
    )
    from .types import (
        Attempt,
        BatchItem,
        Cancelled,
        DispatchResult,
        EndpointState,
        Fire,
        FlowControl,
        Job,
        Project,
        Schedule,
        Usage,
    )
    from .webhooks import Delivery, Verifier, verify
