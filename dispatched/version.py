"""The release version (base layer, so any module may name it without importing the app)."""

from __future__ import annotations

__version__ = "0.1.0"
