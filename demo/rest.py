"""The demo's own HTTP client for the gateway: JSON over kept-alive HTTP/1.1 connections, one
per calling thread, on the standard library's http.client.

Why not httpx, which the rest of the project uses: the demo sends tens of thousands of small
requests per run (every rollout is marked running and finished, asks the model once, is read
and deleted), and on this machine httpx spends about three times the CPU of http.client on
each of them, CPU that the trainer, the agents and the writer of the same process compete for
under one interpreter lock. The requests are the same either way.

A connection the server has closed while idle (uvicorn ends kept-alive connections after a few
seconds) is noticed before it is reused, as httpcore does: an idle connection that has
something to read has been closed by the other side. Should the close cross the request on the
wire anyway, a GET or DELETE (idempotent) is sent once more on a new connection; nothing else
is ever sent twice.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from typing import Any, Final, Mapping
from urllib.parse import urlencode, urlsplit

_IDEMPOTENT: Final = frozenset({"GET", "DELETE"})
# What a kept-alive connection the server closed meanwhile raises on the next request.
_STALE: Final = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class HTTPStatusError(RuntimeError):
    """An answer of 400 or above (`Response.raise_for_status`)."""

    def __init__(self, method: str, path: str, response: Response) -> None:
        super().__init__(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        self.response = response


class Response:
    def __init__(self, method: str, path: str, status_code: int, content: bytes) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> Response:
        if self.status_code >= 400:
            raise HTTPStatusError(self.method, self.path, self)
        return self


class JsonClient:
    """`request(method, path, params=..., json=...)` against `base_url`, with `headers` on
    every request (the gateway's key: kept in the headers only, never shown)."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"expected an http:// URL, got {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def __repr__(self) -> str:
        return f"JsonClient(http://{self.host}:{self.port}{self.prefix})"

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:  # closed by the server while idle (or it sent what we never asked)
                conn.close()
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None) -> Response:
        target = self.prefix + path
        if params:
            target += "?" + urlencode(params, doseq=True)
        body = None if json is None else _dumps(json)
        conn = self._connection()
        reused = conn.sock is not None
        try:
            status, content = self._exchange(conn, method, target, body)
        except _STALE:
            if not (reused and method in _IDEMPOTENT):
                raise
            status, content = self._exchange(conn, method, target, body)  # a new connection
        return Response(method, path, status, content)

    def _exchange(self, conn: http.client.HTTPConnection, method: str, target: str,
                  body: bytes | None) -> tuple[int, bytes]:
        try:
            conn.request(method, target, body=body, headers=self._headers)
            answer = conn.getresponse()
            content = answer.read()
        except BaseException:
            conn.close()  # in an unknown state: the next request opens a new one
            raise
        if answer.will_close:
            conn.close()
        return answer.status, content

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None) -> Response:
        return self.request("POST", path, json=json)

    def patch(self, path: str, *, json: Any = None) -> Response:
        return self.request("PATCH", path, json=json)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", path)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


__all__ = ["HTTPStatusError", "JsonClient", "Response"]
