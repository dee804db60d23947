"""The demo's own HTTP client (demo/rest.py) against a real local server: JSON both ways, the
key in the headers, one kept-alive connection per thread, and a connection the server closed
while idle replaced before it is reused."""

from __future__ import annotations

import json
import select
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from tractatus_watch.demo.rest import HTTPStatusError, JsonClient


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 0.3  # an idle kept-alive connection is closed by the server after this
    peers: list[tuple[str, int]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        type(self).peers.append(self.client_address)
        status = 404 if "/missing" in self.path else 200
        doc = {"method": self.command, "path": self.path, "body": body,
               "auth": self.headers.get("Authorization")}
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Echo.peers = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/base"
    httpd.shutdown()
    httpd.server_close()


def test_json_both_ways_with_the_key(server: str) -> None:
    client = JsonClient(server, headers={"Authorization": "Bearer k"})
    try:
        doc = client.patch("/api/rollouts/r1", json={"status": {"state": "running"}}).json()
        assert doc == {"method": "PATCH", "path": "/base/api/rollouts/r1",
                       "body": {"status": {"state": "running"}}, "auth": "Bearer k"}
        got = client.get("/api/rollouts", params={"state_in": "queuing", "limit": 5}).json()
        assert got["path"] == "/base/api/rollouts?state_in=queuing&limit=5"
        with pytest.raises(HTTPStatusError, match="HTTP 404"):
            client.delete("/missing/x").raise_for_status()
        assert "Bearer k" not in repr(client)
    finally:
        client.close()


def test_one_kept_alive_connection_per_thread(server: str) -> None:
    client = JsonClient(server)
    try:
        for _ in range(3):
            assert client.get("/a").status_code == 200
        other = threading.Thread(target=lambda: client.get("/b"))
        other.start()
        other.join(10)
        ports = [port for _, port in _Echo.peers]
        assert len(ports) == 4 and len(set(ports[:3])) == 1 and ports[3] != ports[0]
    finally:
        client.close()


def test_a_connection_the_server_closed_is_replaced(server: str) -> None:
    client = JsonClient(server)
    try:
        assert client.get("/first").status_code == 200
        sock = client._local.conn.sock
        # Wait until the server has closed the idle connection (its 0.3 s timeout).
        deadline = time.monotonic() + 10
        while not select.select([sock], [], [], 0.05)[0] and time.monotonic() < deadline:
            pass
        assert select.select([sock], [], [], 0)[0]
        for method in ("post", "patch"):  # never sent twice: these need the check
            resp = getattr(client, method)(f"/after-{method}", json={"n": 1})
            assert resp.status_code == 200 and resp.json()["body"] == {"n": 1}
        first, second, _ = [port for _, port in _Echo.peers]
        assert first != second
    finally:
        client.close()
