"""Webhook receivers built with the SDK's helpers in Flask, Django and FastAPI, for the tests of
tests/test_sdk_receivers.py (each framework's own test client) and tests/test_sdk_e2e.py (real
servers receiving real deliveries). Each records the deliveries its view got."""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import django
import uvicorn
from dispatched_sdk import Delivery, InvalidSignature, verify
from dispatched_sdk.django import verify_webhook as django_verify_webhook
from dispatched_sdk.fastapi import WebhookVerifier
from dispatched_sdk.flask import verify_webhook as flask_verify_webhook
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import clear_url_caches, path
from fastapi import Depends, FastAPI
from flask import Flask, request
from werkzeug.serving import make_server

#: Django's URLconf (settings.ROOT_URLCONF is this module): each test sets the views it needs.
urlpatterns: list[Any] = []


def setup_django() -> None:
    """Configure Django once per process: CSRF middleware on, so the exemption is tested."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="sdk-tests",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()


def flask_app(received: list, **credentials: Any) -> Flask:
    app = Flask("flask_receiver")

    @app.post("/hook")
    @flask_verify_webhook(**credentials)
    def hook(delivery: Delivery) -> Any:
        received.append(delivery)
        # The raw body stays readable after the decorator.
        assert request.get_json()["jobId"] == delivery["jobId"]
        return {"ok": True, "jobId": delivery["jobId"]}

    @app.post("/parsed")
    def parsed() -> Any:
        """The classic bug: verifying the JSON the framework parsed, encoded again."""
        try:
            delivery = verify(request.headers, json.dumps(request.get_json()), **credentials)
        except InvalidSignature as exc:
            return {"error": exc.reason, "message": exc.message}, 401
        received.append(delivery)
        return {"ok": True}

    return app


def django_app(received: list, **credentials: Any) -> Callable[..., Any]:
    """Route /hook to a Django view and return Django's WSGI application."""
    setup_django()
    from django.core.handlers.wsgi import WSGIHandler

    @django_verify_webhook(**credentials)
    def hook(request: HttpRequest, delivery: Delivery) -> JsonResponse:
        received.append(delivery)
        return JsonResponse({"ok": True, "jobId": delivery["jobId"]})

    urlpatterns[:] = [path("hook", hook)]
    clear_url_caches()
    return WSGIHandler()


def fastapi_app(received: list, **credentials: Any) -> FastAPI:
    app = FastAPI()
    verified = WebhookVerifier(**credentials)

    @app.post("/hook")
    async def hook(delivery: Annotated[Delivery, Depends(verified)]) -> dict:
        received.append(delivery)
        return {"ok": True, "jobId": delivery["jobId"]}

    return app


class WSGIServer:
    """A WSGI app (Flask or Django) behind a real threaded HTTP server on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


class ASGIServer:
    """An ASGI app (FastAPI) behind a real uvicorn server on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.daemon = True
        self.thread.start()
        self.sock = sock
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "uvicorn did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()
