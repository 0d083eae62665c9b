"""Security headers on every response: CSP, framing, sniffing, referrer, HSTS.

The dashboard runs no inline script or style: htmx (configured by the ``htmx-config`` meta tag
in ``base.html``: no eval, no script tags in swapped content, no injected indicator styles)
and ``static/app.js`` come from our own origin, so the policy allows scripts and styles from
``'self'`` only, and neither ``'unsafe-inline'`` nor ``'unsafe-eval'``. API (JSON) responses
get the same headers: harmless there, and one rule is easier to check than two.
"""

from __future__ import annotations

from flask import Flask, Response

#: The Content-Security-Policy of every response.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)

#: Sent on every response, whatever the route.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: One year; sent only when the app is served over https (PUBLIC_URL): a browser that saw it
#: refuses plain http to this host for that long. Not ``includeSubDomains``: other hosts under
#: the same name are the operator's business.
HSTS = "max-age=31536000"


def init_app(app: Flask) -> None:
    """Add the security headers to every response of ``app``."""
    headers = dict(HEADERS)
    if app.config["PUBLIC_URL"].lower().startswith("https://"):
        headers["Strict-Transport-Security"] = HSTS

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
