"""Plan limits (DESIGN.md §3), read from the app config's ``PLANS`` table."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app


@dataclass(frozen=True)
class Plan:
    name: str
    rate_per_minute: int
    monthly_quota: int | None
    retry_cap: int
    payload_max_bytes: int
    delivery_timeout: int

    @property
    def rate_limit(self) -> str:
        """The limit in Flask-Limiter's notation, e.g. ``"60 per minute"``."""
        return f"{self.rate_per_minute} per minute"


def names() -> list[str]:
    """Return the configured plan names."""
    return list(current_app.config["PLANS"])


def get(name: str) -> Plan:
    """Return the plan called ``name``; an unknown name falls back to the default plan."""
    table = current_app.config["PLANS"]
    limits = table.get(name) or table[current_app.config["DEFAULT_PLAN"]]
    return Plan(name=name if name in table else current_app.config["DEFAULT_PLAN"], **limits)
