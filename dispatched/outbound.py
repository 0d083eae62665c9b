"""Outgoing HTTP for deliveries: pooled urllib3 connections with an SSRF filter on the address
actually connected to.

Redirects are never followed (a 3xx is a failed attempt); the connect timeout is 5 s and the
read timeout the plan's delivery timeout. With private webhooks disallowed, every new
connection resolves its host, refuses it if any address it resolves to is loopback, private,
link-local (cloud metadata), CGNAT, multicast or otherwise not globally routable, and then
connects to one of the addresses it checked: the check and the connection use the same
address, so a DNS answer that changes between them (rebinding) cannot slip past it. TLS still
verifies the certificate against the URL's host name (SNI included). With ``http://``
webhooks disallowed (production's default), such a URL is refused before anything is sent:
the signed request and its bearer token would cross the network in clear text.

Why urllib3 directly and not requests + requests-hardened (the client until issue 9): the
delivery engine sends a request per attempt on up to ``DELIVERY_CONCURRENCY`` threads per
process, and requests' session layer (preparing, merging settings, cookies, hooks) was over
half of a worker's CPU at 256 in flight; requests-hardened also resolved the host on every
request, where a pooled keep-alive connection needs no new address. urllib3 is maintained, is
what requests sends with, and keeps the pools (keep-alive per host) thread-safe.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass

import certifi
import urllib3
from urllib3 import HTTPHeaderDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.connection import allowed_gai_family
from urllib3.util.ssl_ import create_urllib3_context

from .version import __version__

CONNECT_TIMEOUT = 5.0
EXCERPT_BYTES = 2048
MAX_READ = 64 * 1024
USER_AGENT = f"Dispatched/{__version__}"

#: Sent with every webhook, callback and test event (the header set requests sent before).
DEFAULT_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
}

#: Keep-alive connections kept per host: as many as a worker's threads may use at once.
POOL_PER_HOST = 256
#: Hosts with a connection pool at once (least recently used ones are closed beyond it).
POOL_HOSTS = 500

#: Ranges refused beyond what ``ipaddress`` calls not global (it calls these global).
EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.88.99.0/24",  # 6to4 relay anycast
        "100.64.0.0/10",  # CG-NAT: can route to internal workloads
        "192.0.0.0/24",  # IETF protocol assignments (older CPythons call parts global)
        "5f00::/16",  # IPv6 segment routing
        "64:ff9b::/96",  # NAT64: reaches IPv4 addresses, private ones included
        "64:ff9b:1::/48",  # local-use NAT64
        "2001:20::/28",  # ORCHIDv2
        "2002::/16",  # 6to4: embeds an IPv4 address
        "3fff::/20",  # documentation
        # Older CPythons (before 3.11.10) call these global:
        "::/96",  # IPv4-compatible (deprecated): embeds an IPv4 address
        "::ffff:0:0:0/96",  # IPv4-translated
        "fec0::/10",  # site-local (deprecated)
    )
)


class PrivateAddress(HTTPError):
    """The host resolves to an address deliveries must not reach (``str``: the address)."""


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


def forbidden(address: str) -> bool:
    """Whether deliveries must not connect to ``address`` (an IP address as a string)."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone is not part of it
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or any(ip in net for net in EXTRA_BLOCKED)


def checked_addresses(host: str, port: int) -> list[tuple]:
    """Resolve ``host`` (``getaddrinfo`` entries) and refuse it if any address is forbidden:
    a name with one private address among public ones is not a webhook host.

    Raises PrivateAddress, or socket.gaierror when it does not resolve."""
    found = socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(), socket.SOCK_STREAM)
    for *_, sockaddr in found:
        if forbidden(sockaddr[0]):
            raise PrivateAddress(sockaddr[0])
    return found


def check_host(host: str, port: int) -> None:
    """Refuse a host that resolves to a forbidden address (saving a webhook URL; the
    connection is checked again when a delivery connects). Raises PrivateAddress, or
    socket.gaierror / UnicodeError when it does not resolve."""
    checked_addresses(host, port)


class _Filtered:
    """Connects only to addresses it checked (mixed into urllib3's connection classes)."""

    def _new_conn(self) -> socket.socket:
        try:
            found = checked_addresses(self._dns_host, self.port)  # type: ignore[attr-defined]
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[attr-defined]
        # One connect timeout for the whole connection, however many addresses the name has:
        # a host publishing many unreachable ones must not hold a delivery thread for each.
        deadline = time.monotonic() + self.timeout  # type: ignore[attr-defined]
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in found:
            left = deadline - time.monotonic()
            if left <= 0:
                error = TimeoutError("connect timeout")
                break
            sock = None
            try:
                sock = socket.socket(family, kind, proto)
                for option in self.socket_options or ():  # type: ignore[attr-defined]
                    sock.setsockopt(*option)
                sock.settimeout(left)
                sock.connect(sockaddr)
                sock.settimeout(self.timeout)  # type: ignore[attr-defined]
                return sock
            except OSError as exc:
                if sock is not None:
                    sock.close()
                error = exc
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(
                self,
                f"Connection to {self.host} timed out. (connect timeout={self.timeout})",  # type: ignore[attr-defined]
            ) from error
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class _FilteredHTTPConnection(_Filtered, HTTPConnection):
    pass


class _FilteredHTTPSConnection(_Filtered, HTTPSConnection):
    pass


class _FilteredHTTPPool(HTTPConnectionPool):
    ConnectionCls = _FilteredHTTPConnection


class _FilteredHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _FilteredHTTPSConnection


_managers: dict[bool, urllib3.PoolManager] = {}


def tls_context() -> ssl.SSLContext:
    """The TLS settings of every delivery: certificates verified against the URL's host name,
    with certifi's CA bundle or the operator's (``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, a
    file or a hashed directory, as requests took them). Built and loaded once: loading a CA
    bundle for each new connection costs tens of milliseconds of CPU."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    bundle = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    )
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    else:
        context.load_verify_locations(cafile=bundle)
    return context


def manager(allow_private: bool) -> urllib3.PoolManager:
    """This process's connection pools, shared by every delivery thread (urllib3's pools are
    thread-safe). No proxy is ever used, whatever the environment says: a proxy would hide the
    address the filter checks. TLS: ``tls_context``, read when the pools are made."""
    if allow_private not in _managers:
        pools = urllib3.PoolManager(
            num_pools=POOL_HOSTS,
            maxsize=POOL_PER_HOST,
            cert_reqs="CERT_REQUIRED",
            ssl_context=tls_context(),
        )
        if not allow_private:
            pools.pool_classes_by_scheme = {
                "http": _FilteredHTTPPool,
                "https": _FilteredHTTPSPool,
            }
        _managers[allow_private] = pools
    return _managers[allow_private]


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


def _read_excerpt(response: urllib3.BaseHTTPResponse, deadline: float) -> str:
    """Read up to MAX_READ bytes before ``deadline``; the status is already known, so a slow
    body only shortens the excerpt. A body read whole gives its connection back to the pool
    (keep-alive); one cut short closes it, as what is left of it would precede the next
    answer."""
    data = bytearray()
    complete = False
    try:
        for chunk in response.stream(8192):
            data += chunk
            if len(data) > MAX_READ or time.monotonic() > deadline:
                break
        else:
            complete = True
    finally:
        if not complete:
            response.close()
        response.release_conn()
    return bytes(data[:EXCERPT_BYTES]).decode("utf-8", "replace")


def _with_defaults(headers: dict[str, str]) -> HTTPHeaderDict:
    """``DEFAULT_HEADERS`` overridden by ``headers``, whatever the case of their names."""
    merged = HTTPHeaderDict(DEFAULT_HEADERS)
    for name, value in headers.items():
        merged[name] = value
    return merged


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
        response = manager(allow_private).urlopen(
            "POST",
            url,
            body=body,
            headers=_with_defaults(headers),
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout),
            retries=False,
            redirect=False,
            preload_content=False,
        )
    except PrivateAddress as exc:
        return Result(
            "refused",
            elapsed(),
            error=f"refused: {url} resolves to a private "
            f"address ({exc}); set ALLOW_PRIVATE_WEBHOOKS=1 to allow it",
        )
    # NewConnectionError is a ConnectTimeoutError to urllib3: a refused connection is not a
    # timeout, so it is classified first.
    except (NewConnectionError, ProtocolError, SSLError) as exc:
        return Result("connection_error", elapsed(), error=f"connection failed: {exc}")
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        return Result("timeout", elapsed(), error=f"timed out after {timeout:g}s: {exc}")
    except (HTTPError, OSError, ValueError) as exc:
        return Result("error", elapsed(), error=f"request failed: {exc}")
    try:
        excerpt = _read_excerpt(response, started + CONNECT_TIMEOUT + timeout)
    except (HTTPError, OSError, ValueError) as exc:
        excerpt = f"<body unreadable: {exc}>"
    status = response.status
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
