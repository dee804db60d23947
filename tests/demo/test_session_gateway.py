"""The demo session's two gateways: its own process (the default, collectors/gateway_process.py)
and the tap in the session's process (`gateway_process=False`). The same seed trains the same
way through either, and the store ends with the same report: the gateway's place is a matter
of speed only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tractatus_watch.demo.scenarios import SCENARIOS
from tractatus_watch.demo.session import DemoSession
from tractatus_watch.monitor.report import build_report
from tractatus_watch.storage.store import Store

SHORT = SCENARIOS["demo2"].with_overrides(rounds=2)
# Timed on the wall clock: what the Governor's checks took differs from run to run.
TIMED = ("latency", "overhead")


def figures(doc: Any) -> Any:
    """The report's figures, but for the timed ones, to 9 digits (the store sums in parallel:
    the last bit of a mean may differ)."""
    if isinstance(doc, dict):
        return {k: figures(v) for k, v in doc.items() if not any(t in k for t in TIMED)}
    if isinstance(doc, list):
        return [figures(v) for v in doc]
    if isinstance(doc, float):
        return float(f"{doc:.9g}")
    return doc


def run(tmp_path: Path, name: str, seed: int = 4, **kw: Any
        ) -> tuple[list[Any], dict[str, Any], Any]:
    with Store.open(tmp_path / f"{name}.duckdb") as store:
        session = DemoSession(store, SHORT, seed, "same-run", flush_interval_s=1.0, **kw)
        session.run()
        report = build_report(store.cursor(), "same-run").to_json()
    rounds = [(r.round, r.rollouts, r.decisions, r.proposed, sorted(r.reward.items()),
               sorted((arm, tuple(s)) for arm, s in r.shares.items())) for r in session.rounds]
    return rounds, report, session


def test_both_gateways_train_and_store_the_same(tmp_path: Path) -> None:
    assert DemoSession.__dataclass_fields__["gateway_process"].default is True
    own_rounds, own_report, own = run(tmp_path, "own")
    here_rounds, here_report, here = run(tmp_path, "here", gateway_process=False)
    assert type(own._tap).__name__ == "GatewayProcess"
    assert type(here._tap).__name__ == "GatewayTap"
    assert len(own_rounds) == 2 and own_rounds == here_rounds
    assert own_report["arms"]["governed"]["actions"] == 2 * 16 * 8
    assert figures(own_report) == figures(here_report)
    assert figures(own_report) != figures(run(tmp_path, "other", seed=5)[1])  # it can fail
