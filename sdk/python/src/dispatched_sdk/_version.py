"""The distribution's version (sent in the client's User-Agent)."""

__version__ = "0.1.0"
