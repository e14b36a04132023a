"""A real OpenAI-compatible HTTP server on loopback that fails on purpose, for testing
the judge client's retries, validation retries and cache."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FlakyServer:
    """`script` is a list of behaviours consumed one per request: "500", "drop", "429",
    "invalid" (not JSON), "wrong" (JSON of the wrong shape) or a dict (the good answer).
    When the script runs out, `default` is answered — a dict, or a function of the request
    body that returns one (a judge that follows fixed rules)."""

    def __init__(self, script: list, default=None):
        self.script = list(script)
        self.default = default
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    step = server.script.pop(0) if server.script else server.default
                if callable(step):
                    step = step(body)
                if step == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.connection.close()
                    return
                if step in ("500", "429"):
                    self.send_response(int(step))
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "on purpose"}}')
                    return
                content = {"invalid": "this is not json {", "wrong": json.dumps({"unexpected": 1})}.get(step) if isinstance(step, str) else json.dumps(step)
                payload = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
