"""WSGI entry point: ``gunicorn wsgi:app``."""

from dispatched import create_app

app = create_app()
