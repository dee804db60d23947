"""Every view shows what the database holds: displayed values are checked against SQL run
directly on the stored tables (not through the dashboard's own queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from tractatus_watch.monitor.report import build_report
from tractatus_watch.storage.store import Store
from tractatus_watch.tui.table import Table
from tractatus_watch.tui import fmt

from support import truth

from .helpers import screen_text, settle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def sql(store: Store, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    # Through the test's own cursor: DuckDB refuses a second connection to an open file.
    con = store.cursor()
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def rows_of(app: Any, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", Table)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_overview_kpis_and_rule_trends(make_app, ro_store: Store) -> None:
    app = make_app()
    # Wide enough for the strip's full labels (narrower, they shorten: test_parts.py).
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await settle(pilot)
        kpis = str(app.query_one("#kpis", Static).render())
        screen = screen_text(app)
    actions, covered, blocked = sql(ro_store, """
        SELECT count(*), count_if(covered), count_if(attempted AND NOT executed)
        FROM decisions WHERE run_id = 'alpha' AND arm = 'governed'""")[0]
    escaped_base = sql(ro_store, """SELECT count_if(attempted AND executed) FROM decisions
                                  WHERE run_id = 'alpha' AND arm = 'ungoverned'""")[0][0]
    # The gap's definition (which rounds, which interval) belongs to monitor/report.py: the
    # strip must show exactly what build_report computes.
    con = ro_store.cursor()
    gap = build_report(con, "alpha").gap
    con.close()
    assert gap is not None
    assert f"coverage {fmt.pct(covered / actions)}" in kpis
    assert f"actions {actions:,}" in kpis
    assert f"blocked {blocked:,}" in kpis
    # A line per arm, each figure labelled with its arm and mode.
    assert kpis.splitlines()[1].startswith(
        f"ungoverned shadow  actions 2,000  would have blocked {escaped_base:,}  "
        f"escaped {escaped_base:,}")
    assert f"gap {gap.absolute:+.3f} [{gap.lo:+.3f}, {gap.hi:+.3f}]" in kpis
    assert "alerts 1 firing, 1 pending" in kpis
    # One sparkline row per rule of the watched arm with its rate: block verdicts over
    # evaluations (every check of the service evaluates every rule of its recorded set).
    con = ro_store.cursor()
    rules = truth.rules(con, "alpha")
    con.close()
    governed = [r for r in rules.values() if r.arm == "governed"]
    assert governed and all(r.evaluations for r in governed)
    for r in governed:
        assert f"{r.rule_id} · {r.service}" in screen
        assert f"{fmt.pct(r.rule_rate)} of {r.evaluations:,}" in screen
    assert "1 alert fired" in screen  # the alert marker of the firing alert
    assert "run alpha" in screen


async def test_overview_empty_database_says_what_to_do(tmp_path: Path) -> None:
    from tractatus_watch.storage.store import Store
    from tractatus_watch.tui.app import Dashboard

    Store.open(tmp_path / "empty.duckdb").close()
    store = Store.open(tmp_path / "empty.duckdb", read_only=True)
    app = Dashboard(store, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "no data yet: is the trainer using the hooks file?" in screen_text(app)
        for key in "234567":
            await pilot.press(key)
            await settle(pilot)
            assert "no data yet" in screen_text(app), key
    store.close()


async def test_rules_view(make_app, ro_store: Store) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        shown = {(r[0], r[1], r[2]): r for r in rows_of(app, "rules-table")}
    con = ro_store.cursor()
    expected = truth.rules(con, "alpha")
    con.close()
    reasons = dict(((s, r), why) for s, r, why in sql(ro_store, """
        SELECT service, rule_id, arg_max(reason, ts) FILTER (WHERE verdict <> 'allow')
        FROM checks WHERE run_id = 'alpha' GROUP BY ALL"""))
    # arm: all shows one row per arm and rule: rates stay per arm.
    assert set(shown) == set(expected) and len(shown) == 16
    for key, r in expected.items():
        row = shown[key]
        assert row[3:8] == [f"{r.evaluations:,}", f"{r.fires:,}", f"{r.blocks:,}",
                            f"{r.would_have_blocked:,}", fmt.pct(r.rule_rate, 2)], key
        assert row[10] == (reasons.get(key[1:]) or "")
    # The ungoverned arm is shadow: its verdicts would have blocked, never "blocked".
    assert all(r[5] == "0" for k, r in shown.items() if k[0] == "ungoverned")
async def test_alerts_view(make_app, ro_store: Store) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        alerts = rows_of(app, "alerts-table")
        history = rows_of(app, "history-table")
        screen = screen_text(app)
    stored = sql(ro_store, "SELECT state, alertname, severity, value FROM alerts "
                         "ORDER BY state = 'firing' DESC")
    assert [(r[0], r[1], r[2], r[6]) for r in alerts] == [
        (s, n, sev, f"{v:.4f}") for s, n, sev, v in stored]
    assert "arm=governed" in alerts[0][3]
    events = sql(ro_store, "SELECT from_state, to_state FROM alert_events ORDER BY ts DESC")
    assert [(r[2], r[3]) for r in history] == events
    assert "no active silences" in screen


async def test_runs_view_and_comparison(make_app, ro_store: Store) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        runs = {r[1]: r for r in rows_of(app, "runs-table")}
        expected = sql(ro_store, "SELECT run_id, count(*), max(round) + 1 FROM decisions "
                               "GROUP BY run_id")
        assert set(runs) == {r[0] for r in expected}
        for run_id, actions, rounds in expected:
            assert runs[run_id][5] == f"{actions:,}" and runs[run_id][4] == str(rounds)
        assert runs["alpha"][0] == "●"  # the run shown
        await pilot.press("down", "c")  # compare alpha with beta
        await settle(pilot)
        compare = {r[0]: r for r in rows_of(app, "compare-table")}
    beta_actions = sql(ro_store, "SELECT count(*) FROM decisions WHERE run_id = 'beta' "
                               "AND arm = 'governed'")[0][0]
    alpha_actions = sql(ro_store, "SELECT count(*) FROM decisions WHERE run_id = 'alpha' "
                                "AND arm = 'governed'")[0][0]
    assert compare["actions"][1:] == [f"{alpha_actions:,}", f"{beta_actions:,}",
                                      f"{beta_actions - alpha_actions:+,}"]


async def test_agents_view_sort_filter_pages(make_app, ro_store: Store) -> None:
    app = make_app(view="agents")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        rows = rows_of(app, "agents-table")
        expected = sql(ro_store, """
            SELECT arm, agent_id, count(*), count_if(attempted AND NOT executed),
                   count_if(attempted AND executed)
            FROM decisions WHERE run_id = 'alpha' GROUP BY ALL ORDER BY agent_id, arm""")
        assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
            (a, g, f"{n:,}", f"{b:,}", f"{e:,}") for a, g, n, b, e in expected]
        # o: sort by the next column (actions, largest first); O reverses.
        await pilot.press("o")
        await settle(pilot)
        assert "sorted by actions ↓" in screen_text(app)
        counts = [int(r[2].replace(",", "")) for r in rows_of(app, "agents-table")]
        assert counts == sorted(counts, reverse=True)
        await pilot.press("O")
        await settle(pilot)
        counts = [int(r[2].replace(",", "")) for r in rows_of(app, "agents-table")]
        assert counts == sorted(counts)


async def test_overhead_view(make_app, ro_store: Store) -> None:
    app = make_app(view="overhead")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        rows = {(r[0], r[1]): r for r in rows_of(app, "overhead-table")}
        screen = screen_text(app)
    expected = sql(ro_store, """
        SELECT run_id, arm, count(DISTINCT agent_id), quantile_cont(latency_us, 0.5),
               quantile_cont(latency_us, 0.99)
        FROM decisions GROUP BY ALL""")
    assert len(rows) == len(expected) == 4
    for run_id, arm, agents, p50, p99 in expected:
        row = rows[(run_id, arm)]
        assert row[2:5] == [str(agents), fmt.us(p50), fmt.us(p99)]
    assert "check p50" in screen and "mean latency per action" in screen


async def test_events_view_pages_and_detail(make_app, ro_store: Store) -> None:
    app = make_app(view="events")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        first = rows_of(app, "events-table")
        newest = sql(ro_store, """SELECT decision_id, verdict FROM decisions WHERE run_id = 'alpha'
                                ORDER BY ts DESC, decision_id LIMIT 100""")
        table = app.query_one("#events-table", Table)
        keys = [table.key_at(i) for i in range(len(first))]
        assert keys == [d for d, _ in newest[:50]]
        assert [r[6] for r in first] == [v for _, v in newest[:50]]
        detail = str(app.query_one("#event-detail", Static).render())
        checks = sql(ro_store, "SELECT service, rule_id, verdict FROM checks WHERE run_id = 'alpha'"
                             " AND decision_id = ? ORDER BY idx", [newest[0][0]])
        assert newest[0][0] in detail
        for service, rule, verdict in checks:
            assert f"{service} {rule} {verdict}" in detail
        # n: the next (older) page continues exactly where the first ended.
        await pilot.press("n")
        await settle(pilot)
        keys = [table.key_at(i)
                for i in range(table.row_count)]
        assert keys == [d for d, _ in newest[50:100]]


async def test_no_color_at_80x24(make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    from tractatus_watch.tui.chart import Chart

    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = screen_text(app)
        # Without colour the lines of a chart (coverage, blocked, evasions) differ by their
        # dots.
        chart = app.query_one("#chart-a", Chart)
        modes = [line.dots.name for line in chart.lines]
    assert "coverage 100.0%" in screen and "alerts 1 firing" in screen
    assert modes == ["braille", "quadrant", "half"]
