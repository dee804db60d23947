"""The demo's model server: each agent's policy as an OpenAI-compatible chat-completions endpoint.

In a real deployment the trainer serves its model with vLLM and registers it with the gateway
(`POST /api/models`); agents ask it for their next actions through the gateway's proxy, which
records every call as a `model_request` event. The demo does the same with its softmax
policies: this server answers `POST /v1/chat/completions` with one completion whose first choice
carries the rollout's actions as parallel tool calls (`finish_reason: "tool_calls"`).

The proxy overwrites `model` with the gateway's configured name and adds fields of its own
(`logprobs`, `return_token_ids`, `temperature`), so the server ignores fields it does not know
and tells agents apart by the standard `user` field ("governed/agent-0"). A bad request gets an
OpenAI-style error body with 400 (the proxy retries 5xx answers, never 4xx).

Standard library only: a ThreadingHTTPServer on 127.0.0.1 speaking HTTP/1.1 with keep-alive
(the gateway's client keeps its connections open).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Final, Mapping

log = logging.getLogger(__name__)

# (tool name, arguments) of each action the policy proposes, in order.
ToolCalls = list[tuple[str, Mapping[str, Any]]]
# Given the request body, the tool calls to answer with.
Planner = Callable[[Mapping[str, Any]], ToolCalls]

COMPLETIONS_PATH: Final = "/v1/chat/completions"
MAX_BODY: Final = 1 << 20  # an agent's request is a few KB; more is not one of ours


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class PolicyServer:
    """Serve `planners` (keyed by the request's `user`) on 127.0.0.1 until `close()`."""

    def __init__(self, planners: Mapping[str, Planner], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.planners = planners
        self._httpd = _Server((host, port), _Handler)
        self._httpd.policy = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.1}, name="demo-policy-server", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The OpenAI base URL to register with the gateway (`.../v1`)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> PolicyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(self, body: Any) -> dict[str, Any]:
        """The chat completion answering `body` (raises BadRequest)."""
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or \
                not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise BadRequest("messages: expected a non-empty list of {role, content} objects",
                             "messages")
        if body.get("stream"):
            raise BadRequest("stream: this model server does not stream", "stream")
        user = body.get("user")
        planner = self.planners.get(user) if isinstance(user, str) else None
        if planner is None:
            raise BadRequest(f"user: no policy for {user!r} (expected 'ARM/AGENT', e.g. "
                             "'governed/agent-0')", "user")
        offered = _offered_tools(body.get("tools"))
        calls = planner(body)
        for name, _ in calls:
            if name not in offered:
                raise BadRequest(f"tools: the policy acts through the {name!r} tool; offer it",
                                 "tools")
        return _completion(body, calls)


def _offered_tools(tools: Any) -> set[str]:
    if not isinstance(tools, list):
        return set()
    names = set()
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return names


def _completion(body: Mapping[str, Any], calls: ToolCalls) -> dict[str, Any]:
    arguments = [json.dumps(args) for _, args in calls]
    tool_calls = [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
                   "function": {"name": name, "arguments": text}}
                  for (name, _), text in zip(calls, arguments)]
    # A token is about four characters: plausible counts, as a tokenizer would give.
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 8
    completion_tokens = sum(len(text) for text in arguments) // 4 + 1
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
        "created": int(time.time()), "model": str(body.get("model") or ""),
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                     "message": {"role": "assistant", "content": None,
                                 "tool_calls": tool_calls}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(message: str, param: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    policy: PolicyServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the kept-alive connections, whose threads would otherwise wait for the client."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses its connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    timeout = 120  # an idle kept-alive connection ends by itself
    server: _Server

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        if self.path.split("?", 1)[0] != COMPLETIONS_PATH:
            self._drain()
            self._send(404, error_body(f"no route {self.path}; the model is at "
                                       f"{COMPLETIONS_PATH}", kind="not_found_error"))
            return
        try:
            body = json.loads(self._read_body())
            answer = self.server.policy.complete(body)
        except BadRequest as exc:
            self._send(400, error_body(str(exc), exc.param))
            return
        except ValueError as exc:  # not JSON, or not UTF-8
            self._send(400, error_body(f"the request body is not JSON: {exc}"))
            return
        except Exception as exc:  # a bug in a planner: say so, keep serving
            log.exception("policy server: request failed")
            self._send(500, error_body(f"policy failed: {exc}", kind="server_error"))
            return
        self._send(200, answer)

    def do_GET(self) -> None:  # noqa: N802
        self._send(404, error_body(f"no route {self.path}; the model is at POST "
                                   f"{COMPLETIONS_PATH}", kind="not_found_error"))

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            raise BadRequest("Content-Length: required") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise BadRequest(f"the request body must be under {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _drain(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= MAX_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(self, status: int, doc: Mapping[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request on stderr otherwise
