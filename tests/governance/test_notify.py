"""The webhook notifier against real HTTP receivers on 127.0.0.1: retries with backoff, failures
logged with the receiver and status (never the token), redirects refused, a bounded queue, a
bounded close. The logs are the collectors' JSON lines, captured."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tractatus_watch.collectors.runner import setup_logging
from tractatus_watch.analysis.alerts.engine import Transition
from tractatus_watch.analysis.alerts.notify import JsonlNotifier, WebhookNotifier, redact_url

TOKEN = "tok-SECRET-4f1d9c"
T0 = 1_800_000_000.0
FAST = {"backoff_s": 0.02, "max_backoff_s": 0.1, "timeout": 5.0}


def resolved(run_id: str) -> Transition:
    labels = {"alertname": "Probe", "run_id": run_id}
    return Transition(fingerprint=f"fp-{run_id}", alertname="Probe", from_state="firing",
                      to_state="resolved", ts=T0, labels=labels, annotations={}, value=1.0,
                      run_id=run_id, starts_at=T0 - 60, ends_at=T0)


class Receiver:
    """A real HTTP server in a thread; answers each POST with the next scripted reply."""

    def __init__(self, replies: list[tuple[int, dict[str, str]]] | None = None, *,
                 hold: threading.Event | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies = list(replies or [])
        self.hold = hold
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(body) if body else None})
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                status, headers = receiver.replies.pop(0) if receiver.replies else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 (a followed 302 would arrive as a GET)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture()
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kw: Any) -> Receiver:
        made.append(Receiver(*args, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture()
def logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The notifier's JSON log lines, as the collectors write them (and the raw text checked
    for the token at the end of every test)."""
    buf = io.StringIO()
    root = logging.getLogger("tractatus_watch")
    level, propagate = root.level, root.propagate
    handler = setup_logging(stream=buf)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buf.getvalue().splitlines()
                if json.loads(line)["logger"] == "tractatus_watch.analysis.alerts.notify"]

    yield lines
    root.removeHandler(handler)
    root.setLevel(level)
    root.propagate = propagate
    assert TOKEN not in buf.getvalue()


@pytest.fixture()
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TW_TEST_HOOK_TOKEN", TOKEN)
    return "TW_TEST_HOOK_TOKEN"


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_a_500_then_200_is_retried_and_delivered_once(receivers, logs, token_env) -> None:
    rx = receivers([(500, {}), (200, {})])
    hook = WebhookNotifier(rx.url, group_by=["run_id"], bearer_token_env=token_env, **FAST)
    hook.notify([resolved("r1")], [])
    assert hook.flush(20)
    assert (hook.sent, hook.failures, hook.dropped, hook.retries) == (1, 0, 0, 1)
    assert len(rx.requests) == 2 and rx.requests[0]["body"] == rx.requests[1]["body"]
    assert rx.requests[1]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert rx.requests[1]["body"]["groupKey"] == '{}:{run_id="r1"}'
    failed = [x for x in logs() if x["level"] == "warning"]
    assert [(x["msg"], x["receiver"], x["status"], x["attempt"]) for x in failed] == [
        ("webhook attempt failed, retrying", rx.url, 500, 1)]
    assert hook.summary() == {"notifier": "webhook", "receiver": rx.url, "sent": 1,
                              "failed": 0, "dropped": 0, "retries": 1}


def test_a_refused_connection_is_logged_and_failed_after_the_retries(logs, token_env) -> None:
    # A bound socket that never listens: connections to it are refused, and no other
    # process can take the port while the test runs.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"http://127.0.0.1:{port}/hook?apikey=qs-SECRET"
        hook = WebhookNotifier(url, group_by=["run_id"], bearer_token_env=token_env,
                               max_attempts=3, **FAST)
        hook.notify([resolved("r1")], [])
        assert hook.flush(20)
    assert (hook.sent, hook.failures, hook.dropped, hook.retries) == (0, 1, 0, 2)
    safe = f"http://127.0.0.1:{port}/hook?apikey=***"
    lines = logs()
    assert [(x["level"], x["attempt"], x["receiver"]) for x in lines] == [
        ("warning", 1, safe), ("warning", 2, safe), ("error", 3, safe)]
    assert all("ConnectionRefusedError" in x["error"] for x in lines)
    assert "qs-SECRET" not in json.dumps(lines) + hook.last_error + repr(hook)
    assert hook.last_error.startswith("URLError posting to " + safe)


def test_a_redirect_is_not_followed_and_its_target_never_sees_the_token(
        receivers, logs, token_env) -> None:
    thief = receivers()
    rx = receivers([(302, {"Location": f"http://127.0.0.1:{thief.port}/steal"})])
    hook = WebhookNotifier(rx.url, group_by=["run_id"], bearer_token_env=token_env, **FAST)
    hook.notify([resolved("r1")], [])
    assert hook.flush(20)
    assert (hook.sent, hook.failures, hook.retries) == (0, 1, 0)  # a redirect is not retried
    assert len(rx.requests) == 1 and thief.requests == []
    [line] = logs()
    assert (line["level"], line["msg"], line["status"], line["location_host"]) == (
        "error", "webhook notification failed", 302, f"127.0.0.1:{thief.port}")
    assert "not followed" in hook.last_error


def test_a_full_queue_drops_the_oldest_and_a_stuck_receiver_never_blocks_notify(
        receivers, logs) -> None:
    hold = threading.Event()
    rx = receivers(hold=hold)
    hook = WebhookNotifier(rx.url, group_by=["run_id"], max_queue=2, **FAST)
    hook.notify([resolved("r1")], [])
    wait_for(lambda: len(rx.requests) == 1)  # r1 is in flight, held by the receiver
    started = time.monotonic()
    for run in ("r2", "r3", "r4", "r5"):
        hook.notify([resolved(run)], [])
    assert time.monotonic() - started < 2.0  # the receiver holds r1 for up to 30 s
    assert hook.dropped == 2
    hold.set()
    assert hook.flush(20)
    assert [r["body"]["groupLabels"]["run_id"] for r in rx.requests] == ["r1", "r4", "r5"]
    assert (hook.sent, hook.failures, hook.dropped) == (3, 0, 2)
    assert [x["dropped"] for x in logs() if "queue full" in x["msg"]] == [1, 2]


def test_close_delivers_what_is_queued_and_gives_up_at_its_deadline(receivers, logs) -> None:
    ok = receivers()
    hook = WebhookNotifier(ok.url, group_by=["run_id"], **FAST)
    hook.notify([resolved("r1"), resolved("r2")], [])
    hook.close(10)
    assert hook.sent == 2 and len(ok.requests) == 2

    hold = threading.Event()
    down = receivers(hold=hold)  # takes each request and answers nothing (until teardown)
    stuck = WebhookNotifier(down.url, group_by=["run_id"], max_attempts=1000,
                            max_total_s=1000, backoff_s=0.05, timeout=1.0)
    stuck.notify([resolved(r) for r in ("r1", "r2", "r3")], [])
    wait_for(lambda: len(down.requests) == 1)
    started = time.monotonic()
    stuck.close(0.5)
    # The deadline, plus the attempt in flight (its timeout), plus a margin: never the 1000
    # attempts a live notifier would make.
    assert time.monotonic() - started < 0.5 + 1.0 + 2.0
    assert stuck.dropped == 2  # r2 and r3 were never attempted
    wait_for(lambda: stuck.failures == 1)  # r1 timed out after the deadline: not retried
    assert stuck.sent == 0 and stuck.retries == 0 and len(down.requests) == 1
    assert any(x["msg"] == "webhook notifications not delivered before close"
               and x["dropped"] == 2 for x in logs())
    stuck.notify([resolved("r4")], [])  # after close: counted, never sent
    assert stuck.dropped == 3


def test_credentials_in_a_receiver_url_are_redacted() -> None:
    assert redact_url("https://bob:pw-SECRET@hooks.example:8443/a/b?token=t-SECRET&x=1#frag") == (
        "https://***@hooks.example:8443/a/b?token=***&x=***")
    assert redact_url("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
    hook = WebhookNotifier("https://bob:pw-SECRET@hooks.example/a")
    assert "pw-SECRET" not in repr(hook) and "pw-SECRET" not in json.dumps(hook.summary())


def test_the_alert_log_and_its_folders_are_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "logs" / "alerts.jsonl"
        JsonlNotifier(path).notify([resolved("r1")], [])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path.parent, path.parent.parent)] == [
        0o700, 0o700]
    assert json.loads(path.read_text())["to"] == "resolved"
