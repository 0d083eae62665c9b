"""Outgoing HTTP for deliveries: an SSRF-safe requests session (requests-hardened).

Redirects are never followed (a 3xx is a failed attempt); the connect timeout is 5 s and the
read timeout the plan's delivery timeout. With private webhooks disallowed, the address a
request actually connects to is checked: loopback, private, link-local (metadata), CGNAT and
similar ranges are refused. With ``http://`` webhooks disallowed (production's default), such a
URL is refused before anything is sent: the signed request and its bearer token would cross the
network in clear text.
"""

from __future__ import annotations

import email.utils
import os
import time
from dataclasses import dataclass

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

from .version import __version__

CONNECT_TIMEOUT = 5.0
EXCERPT_BYTES = 2048
MAX_READ = 64 * 1024
USER_AGENT = f"Dispatched/{__version__}"

_sessions: dict[bool, HTTPSession] = {}


@dataclass(frozen=True)
class Result:
    """What happened to one POST."""

    #: success | http_error | gone | timeout | connection_error | refused | error | worker_lost
    outcome: str
    duration_ms: int | None
    http_status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "success"


#: Keep-alive connections kept per host: as many as a worker's threads may use at once.
POOL_PER_HOST = 256
#: Hosts with a connection pool at once (least recently used ones are closed beyond it).
POOL_HOSTS = 500


def session(allow_private: bool) -> HTTPSession:
    """Return this process's pooled session (keep-alive to busy receivers), shared by every
    delivery thread of the process (urllib3's pools are thread-safe)."""
    if allow_private not in _sessions:
        http = HTTPSession(
            Config(
                ip_filter_enable=not allow_private,
                ip_filter_allow_loopback_ips=False,
                never_redirect=True,
                default_timeout=(CONNECT_TIMEOUT, 15.0),
                user_agent_override=USER_AGENT,
            )
        )
        # No proxies or .netrc from the environment: the SSRF filter checks the address
        # actually connected to, which a proxy would hide; and looking them up costs several
        # file-system calls per request. A custom CA bundle is still honoured, read once.
        http.trust_env = False
        http.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        for adapter in http.adapters.values():
            # requests' default keeps 10 connections per host: with 64 threads posting to one
            # busy endpoint, the rest would be opened and thrown away on every request.
            adapter.init_poolmanager(POOL_HOSTS, POOL_PER_HOST)
        _sessions[allow_private] = http
    return _sessions[allow_private]


def parse_retry_after(value: str | None) -> float | None:
    """Parse Retry-After as seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _read_excerpt(response: requests.Response, deadline: float) -> str:
    """Read up to MAX_READ bytes before ``deadline`` (whole small bodies keep the connection
    reusable); the status is already known, so a slow body only shortens the excerpt."""
    data = bytearray()
    for chunk in response.iter_content(8192):
        data += chunk
        if len(data) > MAX_READ or time.monotonic() > deadline:
            break
    return bytes(data[:EXCERPT_BYTES]).decode("utf-8", "replace")


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
    *,
    allow_http: bool,
) -> Result:
    """POST ``body`` to ``url``; classify the answer. Never raises for network errors."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    if not allow_http and not url.lower().startswith("https://"):
        return Result(
            "refused",
            0,
            error=f"refused: {url} is not an https:// URL; set ALLOW_HTTP_WEBHOOKS=1 to allow it",
        )
    try:
        response = session(allow_private).post(
            url,
            data=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT, timeout),
            allow_redirects=False,
            stream=True,
        )
    except InvalidIPAddress as exc:
        return Result(
            "refused",
            elapsed(),
            error=f"refused: {url} resolves to a private "
            f"address ({exc}); set ALLOW_PRIVATE_WEBHOOKS=1 to allow it",
        )
    except requests.Timeout as exc:
        return Result("timeout", elapsed(), error=f"timed out after {timeout:g}s: {exc}")
    except requests.ConnectionError as exc:
        return Result("connection_error", elapsed(), error=f"connection failed: {exc}")
    except requests.RequestException as exc:
        return Result("error", elapsed(), error=f"request failed: {exc}")
    try:
        excerpt = _read_excerpt(response, started + CONNECT_TIMEOUT + timeout)
    except (requests.RequestException, OSError, ValueError) as exc:
        excerpt = f"<body unreadable: {exc}>"
    finally:
        response.close()  # returns the connection to the pool when the body was read whole
    status = response.status_code
    if 200 <= status < 300:
        return Result("success", elapsed(), status, excerpt)
    if status == 410:
        return Result("gone", elapsed(), status, excerpt, error="HTTP 410 Gone: not retried")
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += f" redirect to {response.headers.get('Location', '?')!r} (not followed)"
    retry_after = (
        parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
    )
    return Result("http_error", elapsed(), status, excerpt, error=error, retry_after=retry_after)
