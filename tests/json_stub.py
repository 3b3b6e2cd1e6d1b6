"""A stand-in HTTP service on loopback for tests that check what our code sends on the wire: a handler base that
answers JSON, and a context manager that serves it with example AWS credentials set (so requests get signed)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local_platform.json_http import JsonHandler

__all__ = ["EXAMPLE_CREDENTIALS", "JsonHandler", "serving"]

EXAMPLE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                       "AWS_SESSION_TOKEN": "token"}


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`handler` on a free loopback port, for the duration; yields its base URL."""
    for key, value in EXAMPLE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
