"""A webhook receiver in a thread: counts deliveries per task id (the `X-SOP-Task-Id` header) and can refuse the
first deliveries with 500 to exercise retries."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, refuse_first: int = 0) -> None:
        self.deliveries: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.refused = 0
        self._refuse_first = refuse_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    refuse = receiver.refused < receiver._refuse_first
                    if refuse:
                        receiver.refused += 1
                    else:
                        receiver.deliveries[self.headers["X-SOP-Task-Id"]] += 1
                        receiver.bodies[body["id"]] = body
                self.send_response(500 if refuse else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def count(self, task_id: str) -> int:
        with self._lock:
            return self.deliveries[task_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
