"""A real HTTP server on 127.0.0.1 that speaks each provider's API shapes and misbehaves on request.

It plays a script (a list of replies, in order) or asks a function for each reply, and counts
what it saw: every request, the most requests in flight at once, the connections used.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: object = None
    """A JSON value, or a function of the request path returning one (a reply in that endpoint's shape)."""
    raw: bytes | None = None
    """Sent as is instead of `body` (a body that is not JSON)."""
    delay: float = 0.0
    """Seconds before answering (a slow server)."""
    trickle: float | None = None
    """Seconds between the body's bytes (a server that never stalls long enough for a read timeout)."""
    reset_after: int | None = None
    """Bytes of the body sent before the connection is reset."""
    reason: str | None = None
    """The status line's reason phrase, when not the standard one."""


def ok(text: str = "pong", model: str = "gpt-5-mini", usage: tuple[int, int, int] = (11, 7, 3)) -> Reply:
    """A success in the shape of whichever endpoint is asked."""
    return Reply(body=lambda path: success(path, text, model, usage))


def error(status: int, message: str = "error", code: str | None = None, **headers) -> Reply:
    body = {"error": {"message": message, "type": code or "server_error", "code": code}}
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def success(path: str, text: str, model: str, usage: tuple[int, int, int] = (11, 7, 3)) -> dict:
    if path.endswith("/v1/messages"):
        return anthropic_body([{"type": "text", "text": text}], model=model, usage=usage)
    if path.endswith(":generateContent"):
        return gemini_body([{"text": text}], model=model, usage=usage)
    if path.endswith("/api/chat"):
        return ollama_body(text, model=model, usage=usage)
    if path.endswith("/responses"):
        return responses_body([reasoning(), message(output_text(text))], model=model, usage=usage)
    return chat_body(text, model=model, usage=usage)


def responses_body(output, *, status="completed", incomplete_details=None, model="gpt-5-mini", usage=(11, 7, 3)):
    return {
        "id": "resp_1", "object": "response", "status": status, "incomplete_details": incomplete_details,
        "model": model, "output": output,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                  "output_tokens_details": {"reasoning_tokens": usage[2]}, "total_tokens": usage[0] + usage[1]},
    }


def reasoning() -> dict:
    return {"type": "reasoning", "id": "rs_1", "summary": []}


def message(*parts) -> dict:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": list(parts)}


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": []}


def refusal(text: str) -> dict:
    return {"type": "refusal", "refusal": text}


def chat_body(content, *, finish_reason="stop", refusal=None, model="llama3", usage=(11, 7, 0)) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1],
                  "completion_tokens_details": {"reasoning_tokens": usage[2]}},
    }


def anthropic_body(content: list, *, stop_reason="end_turn", model="claude-haiku-4-5", usage=(11, 7, 0)) -> dict:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def anthropic_error(status: int, kind: str, message: str = "error", **headers) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def gemini_body(parts: list | None, *, finish_reason="STOP", model="gemini-2.5-flash", usage=(11, 7, 3),
                prompt_feedback=None) -> dict:
    body: dict = {
        "usageMetadata": {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1] - usage[2],
                          "thoughtsTokenCount": usage[2], "totalTokenCount": usage[0] + usage[1]},
        "modelVersion": model, "responseId": "r1",
    }
    if parts is not None:
        body["candidates"] = [{"content": {"parts": parts, "role": "model"}, "finishReason": finish_reason,
                               "index": 0}]
    if prompt_feedback:
        body["promptFeedback"] = prompt_feedback
    return body


def gemini_error(status: int, message: str = "error", state: str = "INTERNAL", details: list | None = None,
                 wrapped: bool = False) -> Reply:
    error = {"error": {"code": status, "message": message, "status": state, **({"details": details} if details else {})}}
    return Reply(status, {}, [error] if wrapped else error)


def retry_info(delay: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
         "quotaId": quota_id, "quotaValue": "250"}]}


def ollama_body(content, *, done_reason="stop", model="llama3.2", usage=(11, 7, 0), done=True) -> dict:
    return {
        "model": model, "created_at": "2026-12-01T00:00:00Z", "message": {"role": "assistant", "content": content},
        "done": done, "done_reason": done_reason, "total_duration": 1000, "prompt_eval_count": usage[0],
        "eval_count": usage[1],
    }


def ollama_error(status: int, message: str = "error", **headers) -> Reply:
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, {"error": message})


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up mid-reply is what several tests are about


class ScriptedServer:
    def __init__(self, script: list[Reply] | Callable[[dict], Reply], port: int = 0):
        self.script = script if callable(script) else list(script)
        self.requests: list[dict] = []
        self.max_in_flight = 0
        self.connections: set[int] = set()
        self._in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = {
                    "path": self.path, "body": json.loads(self.rfile.read(length) or b"{}"),
                    "headers": dict(self.headers), "arrived": time.monotonic(),
                }
                reply = server._next(request, self.client_address[1])
                time.sleep(reply.delay)
                with server._lock:
                    server._in_flight -= 1
                request["answered"] = time.monotonic()
                try:
                    self._answer(reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up: that is the point

            def _answer(self, reply: Reply) -> None:
                payload = reply.body(self.path) if callable(reply.body) else reply.body
                data = reply.raw if reply.raw is not None else json.dumps(payload).encode()
                self.send_response(reply.status, reply.reason)
                for key, value in reply.headers.items():
                    self.send_header(key, str(value))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if reply.reset_after is not None:
                    self.wfile.write(data[: reply.reset_after])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()  # with a zero linger: a reset, not a clean close
                    self.close_connection = True
                elif reply.trickle is not None:
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                else:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._http = _QuietServer(("127.0.0.1", port), Handler)
        # A short poll, so that leaving the `with` block takes milliseconds, not half a second.
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True)

    def _next(self, request: dict, port: int) -> Reply:
        with self._lock:
            self.requests.append(request)
            self.connections.add(port)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if callable(self.script):
                return self.script(request)
            return self.script.pop(0) if self.script else error(500, "script exhausted")

    @property
    def url(self) -> str:
        """The OpenAI-style base URL."""
        return f"{self.root}/v1"

    @property
    def root(self) -> str:
        """The base URL as the Anthropic, Gemini and Ollama SDKs take it."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
