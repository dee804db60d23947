"""Witnessed coverage in the dashboard: the overview's strip beside SDK coverage, the Agents
view's per-agent columns and the Runs comparison show exactly the figures of the report
(monitor/report.build_report, storage/witness_queries.py); a run the gateway did not witness
reads n/a, never 0%, and costs no background match."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import Static

from tractatus_watch.analysis.metrics import witness_figures
from tractatus_watch.monitor.report import build_report
from tractatus_watch.storage import witness_queries as WQ
from tractatus_watch.storage.store import Store
from tractatus_watch.tui import fmt
from tractatus_watch.tui.app import Dashboard
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.views import Agents, Runs

from .helpers import FIXED_NOW, PLAIN_RUN, WITNESS_RUN, build_witness_db, settle, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def witness_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("witness") / "watch.duckdb"
    build_witness_db(path)
    store = Store.open(path, read_only=True)
    yield store
    store.close()


def _app(store: Store, run_id: str, tmp_path: Path, **kwargs: Any) -> Dashboard:
    return Dashboard(store, clock=lambda: FIXED_NOW, export_dir=tmp_path, run_id=run_id,
                     **kwargs)


def _rows(app: Dashboard, table_id: str) -> tuple[list[str], list[list[str]]]:
    table = app.query_one(f"#{table_id}", Table)
    return table.columns, [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _value_style(text: Text, label: str) -> str:
    """The style of the value after the first `label` (and its space) in the strip."""
    at = text.plain.index(label) + len(label) + 1
    return " ".join(str(s.style) for s in text.spans if s.start <= at < s.end)


async def test_overview_shows_the_reports_witnessed_coverage(witness_store: Store,
                                                             tmp_path: Path) -> None:
    con = witness_store.cursor()
    report = build_report(con, WITNESS_RUN)
    con.close()
    gov, ungov = report.arms["governed"], report.arms["ungoverned"]
    # The store's plan (tests/tui/helpers.build_witness_db): 7 calls witnessed in the
    # governed arm, 5 of them governed, 2 with no decision; the shadow arm governs none.
    assert (gov.coverage, gov.witnessed, gov.ungoverned_actions) == (1.0, 7, 2)
    assert gov.witnessed_coverage == pytest.approx(5 / 7)
    assert (ungov.witnessed, ungov.ungoverned_actions, ungov.witnessed_coverage) == (2, 0, 0.0)
    assert gov.unwitnessed_decisions == 1  # agent-2's own action
    app = _app(witness_store, WITNESS_RUN, tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: app.overview.report_kpis is not None)
        await settle(pilot)
        strip = app.overview.kpi_text()
        lines = str(app.query_one("#kpis", Static).render()).splitlines()
    assert lines[0].startswith(
        f"governed enforce  coverage 100.0%  witnessed coverage "
        f"{fmt.pct(gov.witnessed_coverage)}  ungoverned actions 2  actions {gov.actions:,}")
    assert fmt.pct(gov.witnessed_coverage) == "71.4%"
    # Bypassing the Governor in an arm that enforces is a problem: red, as an escape is.
    assert "red" in _value_style(strip, "witnessed coverage")
    assert "red" in _value_style(strip, "ungoverned actions")
    assert "green" in _value_style(strip, "coverage")
    # The shadow arm governs nothing by definition: no coverage of either kind, and no
    # ungoverned action to report (every call it was given was checked).
    assert lines[1].startswith(f"ungoverned shadow  actions {ungov.actions:,}  would have")
    assert "witnessed" not in lines[1] and "ungoverned actions" not in lines[1]


async def test_agents_view_shows_each_agents_witness(witness_store: Store,
                                                     tmp_path: Path) -> None:
    con = witness_store.cursor()
    counts = WQ.witness_counts(con, WITNESS_RUN)
    report = build_report(con, WITNESS_RUN)
    con.close()
    expected = {(arm, agent): f for arm in ("governed", "ungoverned") for agent, f in
                witness_figures(counts.filter(counts["arm"] == arm).iter_rows(named=True),
                                key="agent_id").items()}
    app = _app(witness_store, WITNESS_RUN, tmp_path, view="agents")
    async with app.run_test(size=(160, 40)) as pilot:
        view = app.query_one(Agents)
        await wait_until(pilot, lambda: view.witness is not None)
        await settle(pilot)
        columns, rows = _rows(app, "agents-table")
        head = str(app.query_one("#agents-head", Static).render())
        exported = view.export_frame()
    assert columns[:6] == ["arm", "agent", "actions", "coverage", "witnessed", "ungoverned"]
    shown = {(r[0], r[1]): (r[3], r[4], r[5]) for r in rows}
    # Every agent with decisions, its figures as the report's functions give them (one
    # definition), and as the store's plan says: agent-1 skipped one of its three calls.
    assert shown == {
        ("governed", "agent-0"): ("100.0%", "100.0%", "0"),
        ("governed", "agent-1"): ("100.0%", "66.7%", "1"),
        # agent-2's one action came from no model call: nothing of it witnessed.
        ("governed", "agent-2"): ("100.0%", "n/a", "n/a"),
        ("ungoverned", "agent-0"): ("0.0%", "0.0%", "0"),
    }
    assert (expected[("governed", "agent-2")].witnessed,
            expected[("governed", "agent-2")].unwitnessed) == (0, 1)
    for key, (_, witnessed, ungoverned) in shown.items():
        f = expected[key]
        if not f.witnessed:
            continue
        assert (witnessed, ungoverned) == (fmt.pct(f.witnessed_coverage), fmt.num(f.ungoverned))
    # agent-9 proposed an action and never asked the Governor: no row, named in the head.
    assert expected[("governed", "agent-9")].ungoverned == 1
    assert "witnessed, no decision at all: agent-9 (governed, 1 call)" in head
    # The rows' ungoverned actions and agent-9's add up to the arm's in the report.
    assert sum(f.ungoverned for (arm, _), f in expected.items() if arm == "governed") == \
        report.arms["governed"].ungoverned_actions == 2
    assert exported is not None
    assert dict(zip(exported["agent_id"] + "/" + exported["arm"],
                    exported["ungoverned_actions"])) == {
        "agent-0/governed": 0, "agent-1/governed": 1, "agent-2/governed": 0,
        "agent-0/ungoverned": 0}


async def test_agents_ungoverned_cell_is_red_in_a_governing_agent(witness_store: Store,
                                                                  tmp_path: Path) -> None:
    app = _app(witness_store, WITNESS_RUN, tmp_path, view="agents")
    async with app.run_test(size=(160, 40)) as pilot:
        view = app.query_one(Agents)
        await wait_until(pilot, lambda: view.witness is not None)
        await settle(pilot)
        table = app.query_one("#agents-table", Table)
        at = {tuple(table.get_row_at(i)[:2]): i for i in range(table.row_count)}
        # The ungoverned cell as drawn (the header is line 0): its segment's colour.
        drawn = {key: [seg for seg in table.render_line(i + 1)
                       if seg.text.strip() == table.get_row_at(i)[5]][0]
                 for key, i in at.items()}
    flagged = drawn[("governed", "agent-1")]
    assert flagged.style is not None and flagged.style.color is not None
    assert flagged.style.color.name == "red" and flagged.style.bold
    for calm in (("governed", "agent-0"), ("ungoverned", "agent-0")):
        style = drawn[calm].style
        assert style is None or style.color is None or style.color.name != "red"


async def test_a_run_without_witness_reads_n_a(witness_store: Store, tmp_path: Path) -> None:
    con = witness_store.cursor()
    report = build_report(con, PLAIN_RUN)
    assert WQ.witnessed_total(con, PLAIN_RUN) == 0
    con.close()
    assert report.arms["governed"].witnessed_coverage is None
    app = _app(witness_store, PLAIN_RUN, tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: app.overview.report_kpis is not None)
        await settle(pilot)
        lines = str(app.query_one("#kpis", Static).render()).splitlines()
        slow_done = app.slow_done
        await pilot.press("5")
        await settle(pilot)
        view = app.query_one(Agents)
        columns, rows = _rows(app, "agents-table")
        # The Agents view starts no background match for this run, however often it refreshes.
        app.refresh_view()
        await settle(pilot)
        assert app.slow_done == slow_done
    # Nothing witnessed at all (not behind the gateway's proxy): the strip keeps its width.
    assert lines[0].startswith("governed enforce  coverage 100.0%  actions 2  blocked 0")
    assert "witnessed" not in "\n".join(lines) and "ungoverned actions" not in "\n".join(lines)
    assert view.witness is None and "witnessed" not in columns and "ungoverned" not in columns
    assert [(r[0], r[1], r[2]) for r in rows] == [("governed", "agent-0", "2"),
                                                  ("ungoverned", "agent-0", "2")]


async def test_an_arm_the_gateway_did_not_see_reads_n_a(witness_store: Store,
                                                        tmp_path: Path) -> None:
    """The plain run's governed arm against the witnessed run's baseline arm: the report has a
    witness, but none of the governed arm's."""
    con = witness_store.cursor()
    report = build_report(con, PLAIN_RUN, WITNESS_RUN)
    con.close()
    assert (report.arms["governed"].witnessed, report.arms["ungoverned"].witnessed) == (0, 2)
    app = _app(witness_store, PLAIN_RUN, tmp_path, baseline_run=WITNESS_RUN)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: app.overview.report_kpis is not None)
        await settle(pilot)
        lines = str(app.query_one("#kpis", Static).render()).splitlines()
    assert lines[0].startswith("governed enforce  coverage 100.0%  witnessed coverage n/a  "
                               "actions 2")
    assert " 0.0%" not in lines[0]


async def test_runs_comparison_shows_witnessed_coverage(witness_store: Store,
                                                        tmp_path: Path) -> None:
    app = _app(witness_store, WITNESS_RUN, tmp_path, view="runs")
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        _, runs = _rows(app, "runs-table")
        at = [r[1] for r in runs].index(PLAIN_RUN)
        await pilot.press(*["down"] * at, "c")  # compare the run shown with the plain run
        view = app.query_one(Runs)
        await wait_until(pilot, lambda: view.comparison is not None)
        await settle(pilot)
        _, rows = _rows(app, "compare-table")
    table = {r[0]: r[1:] for r in rows}
    assert table["witnessed coverage"] == ["71.4%", "n/a", "–"]
    assert table["ungoverned actions"] == ["2", "n/a", "–"]
    assert table["coverage"] == ["100.0%", "100.0%", "+0.0%"]
