"""Live mode: a real spool source collected by the `live` wiring (CollectionSession: runner, writer,
source health) into a database the dashboard reads in the same process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from textual.widgets import Static

from tractatus_watch.monitor.session import CollectionSession
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.analysis.alerts.alert_rules import Matcher
from tractatus_watch.analysis.alerts.engine import AlertState, Silence, Transition
from tractatus_watch.storage import queries as Q
from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.storage.alert_store import DuckDBAlertStore
from tractatus_watch.storage.store import Store
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.app import Dashboard

from .helpers import screen_text, settle


def decision(i: int, *, arm: str, round_: int, blocked: bool) -> dict[str, Any]:
    return {
        "schema": "tractatus.decision/1", "decision_id": f"live-{arm}-{i}",
        "agent_id": f"agent-{i % 3}", "round": round_, "arm": arm,
        "mode": "enforce" if arm == "governed" else "shadow",
        "action": {"kind": "clickbait" if blocked else "informative", "summary": f"post {i}"},
        "checks": [{"service": "BoundaryEnforcer", "rule_id": "STR-001",
                    "verdict": "block" if blocked else "allow",
                    "raw_verdict": "REQUIRE_HUMAN_DECISION" if blocked else "PROCEED",
                    "enforced": arm == "governed", "latency_us": 200,
                    "reason": "clickbait headline" if blocked else ""}],
        "verdict": "block" if blocked else "allow",
        "executed": not (blocked and arm == "governed"), "latency_us": 250,
        "ts": time.time(),
    }


def write_round(spool: SpoolWriter, round_: int, n: int) -> None:
    for i in range(n):
        for arm in ("governed", "ungoverned"):
            spool.write("decision", decision(round_ * 1000 + i, arm=arm, round_=round_,
                                             blocked=i % 5 == 0))
    spool.rotate()


async def wait_for(pilot: Any, predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(screen_text(pilot.app))
        await pilot.pause(0.05)


async def test_live_dashboard_follows_a_spool_and_alerts(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = SpoolWriter(folder, max_age_s=60, fsync=False)
    store = Store.open(tmp_path / "live.duckdb")
    session = CollectionSession(store, [SpoolReader(folder, settle_s=0.2, poll_s=0.05)],
                                run_id="live-run").start()
    app = Dashboard(store, live_writer=session.writer, source_health=session.health,
                    silence_writer=DuckDBAlertStore(store).add_silence, interval=0.25,
                    export_dir=tmp_path)
    try:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            assert "no data yet" in screen_text(app)
            write_round(spool, 0, 10)

            def kpis() -> str:
                return str(app.query_one("#kpis", Static).render())

            await wait_for(pilot, lambda: "actions 10 " in kpis())
            # Each arm labelled with its mode: the shadow arm would have blocked, never blocked.
            governed, ungoverned = kpis().splitlines()  # a line per arm
            assert governed.startswith(
                "governed enforce  coverage 100.0%  actions 10  blocked 2  escaped 0")
            assert ungoverned.startswith(
                "ungoverned shadow  actions 10  would have blocked 2  escaped 2")
            assert app.scope.run_id == "live-run"
            status = str(app.query_one("#status").render())
            # Long source names keep their end (the folder) on the status line.
            assert f"{str(folder.resolve())[-20:]} connected" in status and "/s" in status
            assert " last " in status
            write_round(spool, 1, 15)
            await wait_for(pilot, lambda: "actions 25 " in kpis())
            await pilot.press("7")
            await settle(pilot)
            table = app.query_one("#events-table", Table)
            assert table.row_count == 50
            assert str(table.get_row_at(0)[1]).strip() == "1"  # the newest round first

            # The alert engine's store records a critical alert going to firing: a toast and
            # the bell.
            now = time.time()
            labels = {"alertname": "CoverageBelowTarget", "arm": "governed"}
            state = AlertState(fingerprint="fp1", alertname="CoverageBelowTarget",
                               state="firing", labels=labels, annotations={}, value=0.9,
                               active_since=now, updated_at=now, run_id="live-run",
                               severity="critical")
            DuckDBAlertStore(store).save(
                [Transition("fp1", "CoverageBelowTarget", "pending", "firing", now, labels, {},
                            0.9, "live-run", "critical")], {"fp1": state})
            await wait_for(pilot, lambda: app.bells == 1)
            await wait_for(pilot, lambda: "CoverageBelowTarget: inactive → firing"
                           in screen_text(app))
            await wait_for(pilot, lambda: "alerts 1 firing" in kpis())
            # A silenced alert is counted apart from the firing ones (as `check` counts).
            DuckDBAlertStore(store).add_silence(Silence(
                silence_id="s1", matchers=tuple(Matcher(k, v) for k, v in labels.items()),
                starts_at=now - 1, ends_at=now + 3600, comment="known", created_by="test"))
            await wait_for(pilot, lambda: "alerts 0 firing, 1 silenced" in kpis())
            session.close()  # the training ends: the dashboard stays on the final state
            con = store.cursor()
            assert list(Q.ended_runs(con)) == ["live-run"]  # the collector stopped: ended
            con.close()
            await wait_for(pilot, lambda: "stopped" in str(
                app.query_one("#status").render()))
            await pilot.press("1")
            await settle(pilot)
            assert "actions 25 " in kpis()
    finally:
        session.close()
        spool.close()
        store.close()
