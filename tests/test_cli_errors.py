"""Bad input and a dying writer, through the real program: one `error: ...` line on stderr,
exit code 2, never a traceback (not even a thread's).

The writer dies of a real cause: a file size limit (RLIMIT_FSIZE, which binds root too; Python
ignores SIGXFSZ, so DuckDB's write fails with EFBIG, "File too large") below what the input
needs, so a commit cannot write the database's .wal."""

from __future__ import annotations

import json
import os
import resource
import shlex
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.spool_writer import SpoolWriter

from .collectors.conftest import AglServer

SECRET = "k3y-SECRET-body"
NOT_UTF8 = b"\xff\xfe" + SECRET.encode() + b"\x80\n"
BINARY = b"\x00\x01\x02" + SECRET.encode() + b"\x00\n"
# Enough for the schema (the migrations pass), far too little for the input's .wal.
FILE_LIMIT = 1_500_000
# A plain log record (logging.basicConfig in cli.py), as `ingest` writes them.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (WARNING|ERROR|CRITICAL) ")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TRACTATUS_WATCH", "AGL_KEY"))}


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def tw(*args: str, extra_env: dict[str, str] | None = None, limit: bool = False,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args],
                          env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limited if limit else None)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def assert_ends_with_writer_error(stderr: str, code: int) -> str:
    """Collectors log JSON lines on stderr (or plain log lines); besides them, exactly one
    line: the error, last."""
    assert code == 2, stderr
    assert "Traceback" not in stderr and "Exception in thread" not in stderr
    lines = stderr.splitlines()
    others = [ln for ln in lines if not ln.startswith("{") and not LOG_LINE.match(ln)]
    assert others == [lines[-1]], stderr
    assert lines[-1].startswith("error: writer failed: ") and "File too large" in lines[-1]
    return lines[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- key and token files ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["collect", "--agl", "http://127.0.0.1:9"],
    ["gateway", "--port", "0"],
    ["live", "--agl", "http://127.0.0.1:9"],
    ["demo", "--agl", "http://127.0.0.1:9", "--headless"],
], ids=lambda a: a[0])
def test_a_key_file_that_is_not_utf8_is_one_line(tmp_path: Path, args: list[str]) -> None:
    key = tmp_path / "agl.key"
    key.write_bytes(NOT_UTF8)
    key.chmod(0o600)
    proc = tw(*args, "--key-file", str(key), "--db", str(tmp_path / "w.duckdb"))
    assert_one_line_error(proc, f"key file {key} is not UTF-8 text")
    assert not (tmp_path / "w.duckdb").exists()  # refused before anything was opened


def test_a_binary_key_file_is_one_line(tmp_path: Path) -> None:
    key = tmp_path / "agl.key"
    key.write_bytes(BINARY)  # valid UTF-8, but nothing a header can carry
    proc = tw("collect", "--agl", "http://127.0.0.1:9", "--key-file", str(key),
              "--db", str(tmp_path / "w.duckdb"))
    assert_one_line_error(proc, f"key file {key} holds characters other than printable ASCII")


@pytest.mark.parametrize("content", [NOT_UTF8, BINARY], ids=["not-utf8", "binary"])
@pytest.mark.parametrize("option", ["open --remote", "collect --serve", "collect --webhook"])
def test_a_bad_token_file_is_one_line(tmp_path: Path, option: str, content: bytes) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    spool = tmp_path / "spool"
    spool.mkdir()
    db = str(tmp_path / "w.duckdb")
    args = {
        "open --remote": ["open", "--remote", "quack:127.0.0.1:9", "--token-file", str(token)],
        "collect --serve": ["collect", "--spool", str(spool), "--serve", str(free_port()),
                            "--token-file", str(token), "--db", db],
        "collect --webhook": ["collect", "--spool", str(spool), "--webhook",
                              "http://127.0.0.1:9/hook", "--webhook-token-file", str(token),
                              "--db", db],
    }[option]
    line = assert_one_line_error(tw(*args), str(token))
    assert ("is not UTF-8 text" if content == NOT_UTF8 else "printable ASCII") in line
    assert not (tmp_path / "w.duckdb").exists()


# --- the writer's death -------------------------------------------------------------------------

def write_spool(folder: Path, n: int = 3000) -> None:
    writer = SpoolWriter(folder)
    gov = Governor(mode="enforce", agent_id="a", arm="governed", run_id="big", sink=writer)
    for i in range(n):
        gov.check({"kind": "publish", "text": f"Item {i} on housing " + "x" * 200},
                  round=i // 100)
    writer.close()


def test_the_writer_dying_under_collect_ends_it_in_one_line(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    write_spool(spool)
    started = time.monotonic()
    # Without the fix this ran on (the spool reader idles on a dead writer) until the timeout.
    proc = tw("collect", "--spool", str(spool), "--db", str(tmp_path / "w.duckdb"),
              limit=True, timeout=90)
    assert_ends_with_writer_error(proc.stderr, proc.returncode)
    assert time.monotonic() - started < 60
    logged = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.startswith("{")]
    assert any(x["msg"] == "the writer failed: stopping the sources" for x in logged)


def test_the_writer_dying_under_ingest_ends_it_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "decisions-2026-11-20.jsonl"
    log.write_text("".join(json.dumps({
        "timestamp": f"2026-11-20T10:{(i // 60) % 60:02d}:{i % 60:02d}Z", "sessionId": f"s{i % 7}",
        "action": "boundary_enforcement", "allowed": i % 3 != 0, "id": f"d{i}",
        "violations": ["inst_017"] if i % 3 == 0 else []}) + "\n" for i in range(30000)))
    proc = tw("ingest", str(log), "--db", str(tmp_path / "w.duckdb"), limit=True)
    assert_ends_with_writer_error(proc.stderr, proc.returncode)


def test_the_writer_dying_under_gateway_ends_it_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tractatus_watch", "gateway", "--port", str(port),
         "--db", str(tmp_path / "w.duckdb")], env={**env(), "AGL_KEY": SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limited)
    try:
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {SECRET}"},
                              timeout=10)
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        client.post("/api/rollouts", json=[{"input": {}, "rollout_id": "r1"}]).raise_for_status()
        client.patch("/api/rollouts/r1", json={"status": {"state": "running",
                                                          "last_attempt_id": "0"}})
        gov = Governor(mode="enforce", agent_id="a", arm="governed", run_id="g")
        i = 0
        # The decisions outgrow the file size limit: the writer dies, and so must the gateway.
        while proc.poll() is None:
            assert time.monotonic() < deadline + 60, "the gateway outlived its writer"
            decision = gov.check({"kind": "publish", "text": f"Item {i} " + "x" * 2000},
                                 round=i // 100, rollout_id="r1")
            i += 1
            try:
                client.post("/api/rollouts/r1/attempt/0/events", json={
                    "event_type": "tractatus.decision", "data": decision.to_payload()})
            except httpx.TransportError:
                time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert_ends_with_writer_error(err, proc.returncode)
    assert SECRET not in err


TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (CI installs it)")
def test_the_writer_dying_under_live_ends_it_in_one_line(tmp_path: Path) -> None:
    spool, db = tmp_path / "spool", tmp_path / "w.duckdb"
    write_spool(spool)
    exit_file = tmp_path / "exit-code"
    # The dashboard draws on the terminal's stderr: run it in tmux, the limit set by a wrapper.
    program = [sys.executable, "-c",
               "import resource, runpy, sys; "
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_LIMIT}, {FILE_LIMIT})); "
               "sys.argv = ['tractatus-watch', *sys.argv[1:]]; "
               "runpy.run_module('tractatus_watch', run_name='__main__')",
               "live", "--spool", str(spool), "--no-alerts", "--db", str(db)]
    script = f"{shlex.join(program)}; echo $? > {exit_file}; sleep 60"
    socket_name = f"tw-test-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        return subprocess.run([TMUX or "tmux", "-L", socket_name, *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    live_log = db.with_name(db.name + ".live.log")
    try:
        subprocess.run([TMUX or "tmux", "-L", socket_name, "new-session", "-d", "-s", "tw",
                        "-x", "160", "-y", "40", "sh", "-c", script], check=True, timeout=30,
                       env={**env(), "TERM": "xterm-256color"})
        deadline = time.monotonic() + 90
        while not (live_log.exists() and "stopping the sources" in live_log.read_text()):
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "tw")
            time.sleep(0.2)
        tmux("send-keys", "-t", "tw", "q")
        while not exit_file.exists():
            assert time.monotonic() < deadline + 30, tmux("capture-pane", "-p", "-t", "tw")
            time.sleep(0.2)
        screen = tmux("capture-pane", "-p", "-t", "tw", "-S", "-200")
    finally:
        subprocess.run([TMUX or "tmux", "-L", socket_name, "kill-server"], capture_output=True,
                       timeout=30)
    assert exit_file.read_text().strip() == "2", screen
    assert "Traceback" not in screen and "Exception in thread" not in screen
    errors = [ln for ln in screen.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: writer failed: "), screen


# --- demo --agl -----------------------------------------------------------------------------------

def test_demo_against_a_dead_gateway_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        proc = tw("demo", "--agl", url, "--headless", "--rounds", "1",
                  "--db", str(tmp_path / "w.duckdb"))
    assert_one_line_error(proc, f"cannot reach Agent Lightning at {url}", "Connection refused")


def test_demo_with_a_wrong_key_is_one_line(tmp_path: Path) -> None:
    server = AglServer(tmp_path, "the-right-key-" + uuid.uuid4().hex)
    server.start()
    try:
        key = tmp_path / "wrong.key"
        key.write_text(SECRET + "\n")
        key.chmod(0o600)
        proc = tw("demo", "--agl", server.url, "--key-file", str(key), "--headless",
                  "--rounds", "1", "--db", str(tmp_path / "w.duckdb"))
        no_key = tw("demo", "--agl", server.url, "--headless", "--rounds", "1",
                    "--db", str(tmp_path / "w.duckdb"))
    finally:
        server.stop()
    for p in (proc, no_key):
        assert_one_line_error(p, f"Agent Lightning at {server.url} refused the key (HTTP 401)")
    assert server.key not in proc.stderr + no_key.stderr


def test_a_bad_umask_setting_is_one_line(tmp_path: Path) -> None:
    proc = tw("runs", "--db", str(tmp_path / "w.duckdb"),
              extra_env={"TRACTATUS_WATCH_UMASK": "rw-r--"})
    assert_one_line_error(proc, "TRACTATUS_WATCH_UMASK: expected an octal umask")

