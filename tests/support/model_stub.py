"""A tiny OpenAI-compatible model server on 127.0.0.1, for the gateway's LLM proxy.

It answers `POST /v1/chat/completions` (and `/v1/completions`) with a fixed completion in the
shape vLLM gives the verl trainer (`prompt_token_ids`, per-choice `token_ids`, `logprobs`), and
echoes what the proxy forwarded (`model`, `temperature`, `logprobs`, `return_token_ids`), so
a test can see which model name and sampling settings a gateway applied. A request whose last
message is "overflow" is refused with 400, as a model server refuses a prompt that is too long.
Every request received is kept in `requests` (path, body). `respond` replaces the fixed
completion (the answer to a chat completion request's body).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

OVERFLOW = "overflow"
CONTEXT_ERROR = {"error": {"message": "maximum context length is 32768 tokens",
                           "type": "BadRequestError", "code": 400}}


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to one chat completion request (deterministic)."""
    messages = body.get("messages") or [{}]
    said = str(messages[-1].get("content", ""))
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0,
        "model": body.get("model"),
        "prompt_token_ids": [1, 2, 3],
        "choices": [{
            "index": 0, "finish_reason": "stop", "token_ids": [7, 8],
            "message": {"role": "assistant", "content": f"echo: {said}"},
            "logprobs": {"content": [{"token": "echo", "logprob": -0.25},
                                     {"token": ":", "logprob": -0.5}]},
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "forwarded": {k: body.get(k) for k in
                      ("model", "temperature", "logprobs", "return_token_ids")},
    }


class StubModelServer:
    """`with StubModelServer() as stub:` serves on `stub.base_url` (…/v1) until the block ends."""

    def __init__(self, respond: Callable[[dict[str, Any]], dict[str, Any]] = completion) -> None:
        self.respond = respond
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    self._answer(400, {"error": {"message": "body must be a JSON object"}})
                    return
                with stub._lock:
                    stub.requests.append((self.path, body))
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self._answer(404, {"error": {"message": f"no route {self.path}"}})
                elif str((body.get("messages") or [{}])[-1].get("content")) == OVERFLOW:
                    self._answer(400, CONTEXT_ERROR)
                else:
                    self._answer(200, stub.respond(body))

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep the test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="stub-model")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> StubModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
