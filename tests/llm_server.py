"""A real HTTP server on 127.0.0.1 that speaks the OpenAI API shapes and plays a scripted sequence."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    delay: float = 0.0
    """Seconds to wait before answering (a slow server, for read timeouts)."""


def ok(text: str = "pong", model: str = "gpt-5-mini") -> Reply:
    """A success in the shape the request's endpoint expects (filled in by the server)."""
    return Reply(200, body={"__ok__": text, "model": model})


def error(status: int, message: str = "error", code: str | None = None, **headers) -> Reply:
    body = {"error": {"message": message, "type": code or "server_error", "code": code}}
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


class ScriptedServer:
    def __init__(self, script: list[Reply]):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                reply = server.script.pop(0) if server.script else error(500, "script exhausted")
                time.sleep(reply.delay)
                payload = reply.body
                if payload and "__ok__" in payload:
                    payload = _success(self.path, payload["__ok__"], payload["model"])
                data = json.dumps(payload or {}).encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, str(value))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a read timeout): that is the point

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()


def _success(path: str, text: str, model: str) -> dict:
    if path.endswith("/responses"):
        return {
            "model": model,
            "output": [
                {"type": "reasoning", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]},
            ],
        }
    return {"model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
