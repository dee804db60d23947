"""Test helpers for the dashboard: deterministic databases and reading the screen as text."""

from __future__ import annotations

import asyncio
import functools
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console

from tractatus_watch.storage.batch import ARROW_SCHEMAS, Batch
from tractatus_watch.storage.store import Store
from support.synthetic import BASE_TS_US, decisions_batch
from tractatus_watch.storage.writer import Writer
from support.sinks import DecisionList

# A fixed "now" for the app clock: a little after the synthetic data ends, so ages are stable.
FIXED_NOW = BASE_TS_US / 1e6 + 3600.0


def rewards(run_id: str, n: int, rounds: int, *, arm: str, mean: float, seed: int,
            agents: int = 4) -> pa.Table:
    """Rewards of one arm, spread over rounds (the synthetic batches only reward one arm)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    rnd = (idx * rounds // n).astype(np.int32)
    return pa.Table.from_pydict({
        "run_id": pa.array([run_id] * n), "reward_id": pa.array([f"{arm}-rw{i}" for i in idx]),
        "rollout_id": pa.array([f"{arm}-ro{i}" for i in idx]),
        "agent_id": pa.array([f"agent-{i % agents}" for i in idx]), "round": pa.array(rnd),
        "arm": pa.array([arm] * n),
        "value": pa.array(np.round(mean + rng.normal(0, 0.05, n), 6)),
        "ts": pa.array(BASE_TS_US + idx * 2_000, type=pa.timestamp("us")),
    }, schema=ARROW_SCHEMAS["rewards"])


def build_db(path: Path, *, runs: tuple[tuple[str, int, int], ...] = (("alpha", 4000, 20),
                                                                      ("beta", 1200, 8)),
             agents: int = 6, alerts: bool = True) -> None:
    """Runs of synthetic decisions (name, decisions, rounds) plus rewards in both arms, stored
    through the real writer; then alert rows as the alert engine would leave them."""
    store = Store.open(path)
    writer = Writer(store)
    for seed, (run_id, n, rounds) in enumerate(runs):
        batch = decisions_batch(0, n, run_id=run_id, rounds=rounds, agents=agents,
                                block_rate=0.08, seed=seed, total=n, rulesets=True)
        writer.submit(batch)
        writer.submit(Batch({"rewards": pa.concat_tables([
            rewards(run_id, n // 10, rounds, arm="ungoverned", mean=0.80, seed=seed + 10),
            rewards(run_id, n // 10, rounds, arm="governed", mean=0.75, seed=seed + 20)])}))
    writer.close()
    if alerts:
        add_alerts(store, runs[0][0])
    store.close()


def ts(seconds_after_base: float) -> str:
    from datetime import datetime, timezone

    t = datetime.fromtimestamp(BASE_TS_US / 1e6 + seconds_after_base, tz=timezone.utc)
    return t.replace(tzinfo=None).isoformat(sep=" ")


ALERT_SQL = """INSERT INTO alerts (fingerprint, alertname, run_id, state, severity, labels,
    annotations, value, active_since, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?::TIMESTAMP,
    ?::TIMESTAMP)"""


def add_alerts(store: Store, run_id: str) -> None:
    con = store.cursor()
    con.execute(ALERT_SQL,
                ["fp-cov", "CoverageBelowTarget", run_id, "firing", "critical",
                 json.dumps({"alertname": "CoverageBelowTarget", "arm": "governed"}),
                 json.dumps({"summary": "coverage below 100%"}), 0.97, ts(1), ts(3)])
    con.execute(ALERT_SQL,
                ["fp-drift", "BlockRateDrift", run_id, "pending", "warning",
                 json.dumps({"alertname": "BlockRateDrift", "rule_id": "STR-001"}),
                 "{}", 0.12, ts(2), ts(3)])
    for i, (a, b) in enumerate((("inactive", "pending"), ("pending", "firing"))):
        con.execute("INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?, ?::TIMESTAMP)",
                    ["fp-cov", "CoverageBelowTarget", run_id, a, b, 0.97,
                     json.dumps({"alertname": "CoverageBelowTarget", "arm": "governed"}),
                     ts(1 + i)])
    con.close()


def screen_text(app: Any) -> str:
    """The current screen as plain text (what a user reads)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True,
                                                       screen_stack=app._background_screens))
    return console.export_text()


async def wait_until(pilot: Any, predicate: Any, timeout: float = 30.0) -> None:
    """Until `predicate()` holds (bounded), letting the app run."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not within {timeout} s: {screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def settle(pilot: Any, timeout: float = 20.0) -> None:
    """Wait until the dashboard has refreshed at least once and nothing is in flight."""
    app = pilot.app
    deadline = asyncio.get_running_loop().time() + timeout
    while not app.refreshes or not app.idle:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"dashboard did not settle ({app.refreshes} refreshes)")
        await pilot.pause(0.02)
    await pilot.pause()


@functools.cache
def command() -> list[str]:
    """The `tractatus-watch` program; until cli.py imports commands/tui.py, the same entry
    point with that module imported first (probed once a session: each probe is a process)."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("tractatus-watch"))
    probe = subprocess.run([exe, "open", "--help"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        return [exe]
    return [sys.executable, "-c", "import sys; import tractatus_watch.cli.commands.tui; "
            "from tractatus_watch.cli import main; sys.argv[0] = 'tractatus-watch'; main()"]


async def view_screens(make_app: Any, store: Any) -> list[str]:
    """Every view's screen above the status line (which names the store), then the status
    line itself: for comparing one database shown through two kinds of store."""
    from tractatus_watch.tui.views import VIEWS

    app = make_app(store=store)
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        for view in VIEWS:
            await pilot.press(view.KEY)
            await settle(pilot)
            if view.KEY == "1":  # the header's figures come from the background lane
                await wait_until(pilot, lambda: app.overview.report_kpis is not None)
                await settle(pilot)
            out.append("\n".join(screen_text(app).splitlines()[:-2]))
        out.append(str(app.query_one("#status").render()))
    return out


# The snapshot database: run ids, counts and alert labels as long as a `demo showcase` run
# leaves them, so the snapshots show what a user sees at 80x24 and 120x40.
SNAP_RUN = "showcase-s7-20261118-110640"
SNAP_BASELINE = "showcase-s3-20261117-093015"


def _with_evasions(batch: Batch, every: int) -> Batch:
    """The synthetic batch with every `every`-th decision marked as an evasion."""
    decisions = batch.tables["decisions"]
    evasion = pa.array(np.arange(decisions.num_rows) % every == 0)
    i = decisions.schema.get_field_index("evasion")
    return Batch({**batch.tables,
                  "decisions": decisions.set_column(i, decisions.schema.field(i), evasion)})


def build_snapshot_db(path: Path) -> None:
    """Two showcase-like runs (14,000 and 6,000 decisions over 12 rounds, evasions in both),
    rewards in both arms, alerts with long labels and their history."""
    store = Store.open(path)
    writer = Writer(store)
    for seed, (run_id, n, every) in enumerate(((SNAP_RUN, 14_000, 61),
                                                (SNAP_BASELINE, 6_000, 37))):
        batch = decisions_batch(0, n, run_id=run_id, rounds=12, agents=8, block_rate=0.11,
                                seed=seed + 3, total=n)
        writer.submit(_with_evasions(batch, every))
        writer.submit(Batch({"rewards": pa.concat_tables([
            rewards(run_id, n // 10, 12, arm="ungoverned", mean=0.81, seed=seed + 30),
            rewards(run_id, n // 10, 12, arm="governed", mean=0.74, seed=seed + 40)])}))
    writer.close()
    con = store.cursor()
    labels = {"alertname": "GovernanceEscapedViolations", "arm": "governed",
              "service": "CrossReferenceValidator", "rule_id": "CONTENT-CLICKBAIT"}
    con.execute(ALERT_SQL, ["fp-esc", labels["alertname"], SNAP_RUN, "firing", "critical",
                            json.dumps(labels), json.dumps({"summary": "3 escaped"}), 3.0,
                            ts(1), ts(9)])
    drift = {"alertname": "GovernanceLatencyGrowth", "arm": "ungoverned",
             "service": "BoundaryEnforcer"}
    con.execute(ALERT_SQL, ["fp-lat", drift["alertname"], SNAP_RUN, "pending", "warning",
                            json.dumps(drift), "{}", 1.27, ts(4), ts(9)])
    for i, (a, b) in enumerate((("inactive", "pending"), ("pending", "firing"))):
        con.execute("INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?, ?::TIMESTAMP)",
                    ["fp-esc", labels["alertname"], SNAP_RUN, a, b, 3.0, json.dumps(labels),
                     ts(5 + 4 * i)])
    con.close()
    store.close()


# --- a run the gateway witnessed ------------------------------------------------------------------

WITNESS_RUN = "witnessed-run"
PLAIN_RUN = "plain-run"   # decisions only: a run not behind the gateway proxy


def _publish_call(i: int, headline: str) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {
        "name": "publish", "arguments": json.dumps({"headline": headline, "text": "Sources."})}}


def build_witness_db(path: Path) -> None:
    """WITNESS_RUN: the tool calls of recorded model responses (records/witness.py, as a tap
    extracts them) and the decisions of the real Governor given those calls, through the real
    writer. Governed arm (enforce): agent-0 governs its 3 calls; agent-1 governs 2 of its 3
    (one skipped: ungoverned); agent-9 never asks the Governor (1 call, no decision); agent-2
    governs one action that came from no model call (an unwitnessed decision). Ungoverned arm
    (shadow): agent-0 checks its 2 calls in shadow. PLAIN_RUN: decisions, nothing witnessed."""
    from tractatus_watch.collectors.sink import writer_sink
    from tractatus_watch.governance.governor import Governor
    from tractatus_watch.records.delivery import Records
    from tractatus_watch.records.witness import witnessed_actions

    # (arm, mode, agent, round, calls in the response, indices of the calls governed)
    plan = [("governed", "enforce", "agent-0", 0, 2, (0, 1)),
            ("governed", "enforce", "agent-0", 1, 1, (0,)),
            ("governed", "enforce", "agent-1", 0, 3, (0, 2)),
            ("governed", "enforce", "agent-9", 1, 1, ()),
            ("governed", "enforce", "agent-2", 1, 0, ()),
            ("ungoverned", "shadow", "agent-0", 0, 2, (0, 1))]
    records = Records()
    n = 0
    for k, (arm, mode, agent, rnd, calls, governed) in enumerate(plan):
        rollout = f"ro-{k}"
        tool_calls = [_publish_call(n + i, f"Story {n + i}: what the figures say")
                      for i in range(calls)]
        n += calls
        response = {"response": {"choices": [{"index": 0, "message": {
            "role": "assistant", "tool_calls": tool_calls}}]}}
        records.witnessed.extend(witnessed_actions(
            response, event_id=f"{rollout}:0:model_request:0", rollout_id=rollout, position=0,
            ts=BASE_TS_US / 1e6 + k, run_id=WITNESS_RUN, agent_id=agent, arm=arm, round=rnd))
        sink = DecisionList()
        gov = Governor(mode=mode, agent_id=agent, arm=arm, run_id=WITNESS_RUN, sink=sink)
        for i in governed:
            gov.check({"kind": "publish", "domain": "content",
                       "summary": json.loads(tool_calls[i]["function"]["arguments"])["headline"]},
                      round=rnd, rollout_id=rollout, tool_call=tool_calls[i])
        if not calls:  # an action of the agent's own, not proposed by the model
            gov.check({"kind": "publish", "domain": "content", "summary": "Own story"},
                      round=rnd, rollout_id=rollout)
        records.decisions.extend(sink.decisions)
    plain = DecisionList()
    for arm, mode in (("governed", "enforce"), ("ungoverned", "shadow")):
        gov = Governor(mode=mode, agent_id="agent-0", arm=arm, run_id=PLAIN_RUN, sink=plain)
        for rnd in range(2):
            gov.check({"kind": "publish", "domain": "content", "summary": "Plain story"},
                      round=rnd, rollout_id=f"plain-{arm}-{rnd}")
    store = Store.open(path)
    writer = Writer(store)
    writer_sink(writer, WITNESS_RUN)(records)
    writer_sink(writer, PLAIN_RUN)(Records(decisions=plain.decisions))
    writer.close()
    store.close()
