"""The collector commands as a user runs them: `gateway`, `collect --spool`, `ingest`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.storage.store import Store

from support import clients

from .test_cli_storage import tw

KEY = "tw-test-key-5f1c"  # what must never appear in any output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], db: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "tractatus_watch", *args, "--db", str(db)],
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def count(db: Path, sql: str) -> int:
    with Store.open(db, read_only=True) as store:
        return int(store.cursor().execute(sql).fetchall()[0][0])


def test_gateway_command_captures_an_agent_lightning_flow(tmp_path: Path) -> None:
    db, port = tmp_path / "gw.duckdb", free_port()
    key_file = tmp_path / "agl.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    proc = start(["gateway", "--port", str(port), "--key-file", str(key_file), "--run", "gw-1"],
                 db)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with clients.client(timeout=0.5) as health:
        while True:
            try:
                if health.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.1)
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"})
    assert httpx.get(f"{base}/api/rollouts", params={"state_in": "queuing"}).status_code == 401
    client.post("/api/rollouts", json=[{"input": {}, "rollout_id": "r1"}]).raise_for_status()
    client.patch("/api/rollouts/r1", json={"status": {"state": "running",
                                                      "last_attempt_id": "0"}})
    gov = Governor(mode="enforce", agent_id="agent-7", arm="governed", run_id="gw-1")
    for text in ("What the new housing figures mean", "You won't believe this SHOCKING trick!!"):
        decision = gov.check({"kind": "publish", "text": text}, round=3, rollout_id="r1")
        client.post("/api/rollouts/r1/attempt/0/events",
                    json={"event_type": "tractatus.decision",
                          "data": decision.to_payload()}).raise_for_status()
    client.post("/api/rollouts/r1/attempt/0/events",
                json={"event_type": "reward", "data": {"value": 0.5}}).raise_for_status()
    client.patch("/api/rollouts/r1", json={"status": {"state": "succeeded"}}).raise_for_status()
    # Agent Lightning's own read API answers as it always does.
    assert [e["event_type"] for e in client.get("/api/rollouts/r1/events").json()] == [
        "tractatus.decision", "tractatus.decision", "reward"]
    code, out, err = stop(proc)
    assert code == 0, err
    assert KEY not in out + err
    assert count(db, "SELECT count(*) FROM decisions WHERE run_id = 'gw-1' AND round = 3") == 2
    assert count(db, "SELECT count(*) FROM decisions WHERE attempted AND NOT executed") == 1
    assert count(db, "SELECT count(*) FROM rewards WHERE value = 0.5 AND arm = 'governed'") == 1
    assert count(db, "SELECT count(*) FROM rollouts WHERE rollout_id = 'r1'") >= 2


def test_collect_spool_evaluates_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    db, spool, alert_log = tmp_path / "c.duckdb", tmp_path / "spool", tmp_path / "alerts.jsonl"
    writer = SpoolWriter(spool)
    gov = Governor(mode="enforce", agent_id="a", arm="governed", run_id="sp-1", sink=writer)
    off = Governor(mode="off", agent_id="b", arm="governed", run_id="sp-1", sink=writer)
    for i in range(20):
        gov.check({"kind": "publish", "text": f"Item {i} on housing"}, round=0)
    off.check({"kind": "publish", "text": "unchecked"}, round=0)  # coverage falls below 100%
    writer.close()
    proc = start(["collect", "--spool", str(spool), "--alert-log", str(alert_log),
                  "--alert-interval", "0.5"], db)
    deadline = time.monotonic() + 60
    while not alert_log.exists() or "GovernanceCoverageBelow100" not in alert_log.read_text():
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.2)
    code, _, err = stop(proc)
    assert code == 0, err
    assert all(json.loads(line) for line in err.splitlines() if line.startswith("{"))
    assert count(db, "SELECT count(*) FROM decisions WHERE run_id = 'sp-1'") == 21
    fired = [json.loads(line) for line in alert_log.read_text().splitlines()]
    assert any(t["alertname"] == "GovernanceCoverageBelow100" and t["to"] == "firing"
               for t in fired)


def test_ingest_audit_log_then_again_stores_nothing_new(tmp_path: Path) -> None:
    db, log = tmp_path / "a.duckdb", tmp_path / "decisions-2026-11-20.jsonl"
    lines = [
        {"timestamp": "2026-11-20T10:00:00Z", "sessionId": "s1", "action": "boundary_enforcement",
         "allowed": False, "violations": ["inst_017"]},
        {"timestamp": "2026-11-20T10:00:01Z", "sessionId": "s1", "action": "boundary_enforcement",
         "allowed": True, "violations": []},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    first = tw("ingest", str(log), "--run", "audit-1", db=db)
    assert first.returncode == 0, first.stderr
    assert "stored: 2 new decisions in run audit-1" in first.stdout
    assert "1 quarantined" in first.stdout
    second = tw("ingest", str(log), "--run", "audit-1", db=db)
    assert second.returncode == 0 and "stored: 0 new decisions" in second.stdout
    assert count(db, "SELECT count(*) FROM decisions") == 2
    assert count(db, "SELECT count(*) FROM quarantine") == 1
    missing = tw("ingest", str(tmp_path / "nope.jsonl"), db=db)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no such file")
