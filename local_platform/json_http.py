"""A small JSON-over-HTTP handler base on loopback: what the local agent serves (ECS task metadata and task
protection), and what the tests' stand-in services answer with."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: Any) -> None:
        self._reply_json_text(status, json.dumps(body))

    def _reply_json_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass
