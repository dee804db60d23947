"""The Overview's charts on the dashboard: rates on the fixed 0-100% scale, evasions and the
gap's interval drawn, the baseline run overlaid, and `:smooth` (off by default)."""

from __future__ import annotations

import asyncio
from typing import Any

import polars as pl
import pytest
from textual.widgets import Input

from tractatus_watch.storage import queries as Q
from tractatus_watch.tui.chart import Chart, ema

from .helpers import SNAP_BASELINE, SNAP_RUN, settle


def _series(chart: Chart) -> dict[str, list[float]]:
    return {line.label: [float(v) for v in line.y] for line in chart.lines}


async def _smooth(pilot: Any, text: str) -> None:
    await pilot.press("colon")
    pilot.app.query_one("#prompt", Input).value = text
    await pilot.press("enter")
    await settle(pilot)


async def test_rates_fixed_scale_overlay_and_smoothing(make_snap_app, snap_db: Any) -> None:
    from tractatus_watch.storage.store import Store

    app = make_snap_app(interval=60.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        a, b, d, e = (app.query_one(f"#chart-{k}", Chart) for k in "abde")
        raw = _series(b)
        assert a.y_kind == b.y_kind == "rate" and a.y_axis.get_ticks(0.1, 0.2) == \
            [0, 0.25, 0.5, 0.75, 1.0]
        assert set(raw) == {"blocked", "blocked (baseline run)"}
        # Evasions: a chart of their own, counts from 0 with whole-number ticks.
        evasions = _series(e)
        assert e.display and e.y_kind == "count" and list(evasions) == ["evasions"]
        assert e.y_axis.get_ticks(0.0, 7.6) == [0, 1, 2, 3, 4, 5, 6, 7]
        assert "95% CI" in _series(d) and "smoothed" not in (b.border_subtitle or "")
        await _smooth(pilot, "smooth 0.5")
        smoothed = _series(b)
        assert "smoothed 0.5" in str(b.border_subtitle)
        assert smoothed["blocked"] == pytest.approx(ema(raw["blocked"], 0.5))
        await _smooth(pilot, "smooth off")
        assert _series(b)["blocked"] == pytest.approx(raw["blocked"])
    store = Store.open(snap_db, read_only=True)
    con = store.cursor()
    try:
        gov = Q.per_round(con, SNAP_RUN, "governed")
        other = Q.per_round(con, SNAP_BASELINE, "governed")
    finally:
        con.close()
        store.close()
    assert raw["blocked"] == pytest.approx(gov["blocked_rate"].to_list())
    assert evasions["evasions"] == gov["evasions"].cast(float).to_list()
    assert raw["blocked (baseline run)"] == pytest.approx(other["blocked_rate"].to_list())
    assert max(evasions["evasions"]) > 0  # the data has evasions: the line is not a flat 0


async def test_evasions_share_the_rates_chart_at_80x24(make_snap_app, snap_db: Any) -> None:
    """At 80x24 the charts are two: evasions, as a rate of actions, on the rates' chart."""
    from tractatus_watch.storage.store import Store

    app = make_snap_app(interval=60.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        a, e = app.query_one("#chart-a", Chart), app.query_one("#chart-e", Chart)
        rates, shown = _series(a), e.display
    store = Store.open(snap_db, read_only=True)
    con = store.cursor()
    try:
        gov = Q.per_round(con, SNAP_RUN, "governed")
    finally:
        con.close()
        store.close()
    assert not shown and a.y_kind == "rate"
    assert rates["evasions"] == pytest.approx((gov["evasions"] / gov["actions"]).to_list())
    assert rates["blocked"] == pytest.approx(gov["blocked_rate"].to_list())


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_kpi_strip_a_line_per_arm_at_120_and_whole_items_at_80(make_snap_app,
                                                              size: tuple[int, int]) -> None:
    from dataclasses import replace

    from textual.widgets import Static

    from tractatus_watch.tui.views import Overview

    app = make_snap_app(interval=60.0)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        view = app.query_one(Overview)
        assert view.report_kpis is not None
        # Showcase-sized figures (the issue's: 13,828 actions, 3,857 escaped).
        view.report_kpis = replace(view.report_kpis, actions=13_828, escaped=3_857,
                                   baseline_escaped=13_828)
        view.refresh_kpis()
        lines = str(app.query_one("#kpis", Static).render()).splitlines()
    if size[0] == 120:  # a line per arm, whole
        assert len(lines) == 2 and lines[0].startswith("governed enforce  coverage 100.0%")
        assert lines[1].startswith("ungoverned shadow")
    else:  # each arm's line breaks between items, never inside one
        assert len(lines) == 4
        assert any(line.startswith("│ gap -0.0") for line in lines)  # label and value together
    assert all(len(line) <= size[0] - 2 for line in lines)


def _agents_db(path: Any) -> None:
    """Three runs of 1, 10 and 100 agents (both arms each), through the real writer."""
    from support.synthetic import decisions_batch

    from tractatus_watch.storage.store import Store
    from tractatus_watch.storage.writer import Writer

    store = Store.open(path)
    writer = Writer(store)
    for seed, agents in enumerate((1, 10, 100)):
        writer.submit(decisions_batch(0, 2_000, run_id=f"agents-{agents}", rounds=4,
                                      agents=agents, seed=seed, total=2_000))
    writer.close()
    store.close()


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_overhead_against_agents_on_a_log_axis(tmp_path: Any,
                                                     size: tuple[int, int]) -> None:
    """The x of each point is log10 of the fetched number of agents, the y the fetched
    p50/p99, and the difference is governed minus ungoverned of the same run."""
    from tractatus_watch.storage.store import Store
    from tractatus_watch.tui import data as D
    from tractatus_watch.tui.app import Dashboard

    path = tmp_path / "agents.duckdb"
    _agents_db(path)
    store = Store.open(path, read_only=True)
    try:
        con = store.cursor()
        table = D.fetch_overhead_detail(con, "agents-1").by_agents
        con.close()
        app = Dashboard(store, clock=lambda: 0.0, export_dir=tmp_path, view="overhead",
                        interval=60.0)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            compact = size[1] < 34
            chart = app.query_one("#chart-agents-compact" if compact else "#chart-agents",
                                  Chart)
            diff_chart = chart if compact else app.query_one("#chart-agents-diff", Chart)
            deadline = asyncio.get_running_loop().time() + 20
            while not diff_chart.lines:
                assert asyncio.get_running_loop().time() < deadline, "agents chart not drawn"
                await pilot.pause(0.02)
            xs = {line.label: [float(v) for v in line.x] for line in chart.lines}
            got = _series(chart) | _series(diff_chart)
            x_ticks = chart.x_axis.get_ticks(0.0, 2.0)
            x_labels = chart.x_axis.get_labels_for_ticks(x_ticks)
            shown = (app.query_one("#chart-service").display,
                     app.query_one("#overhead-agents").display)
    finally:
        store.close()
    assert table["agents"].unique().sort().to_list() == [1, 10, 100]
    gov = table.filter(pl.col("arm") == "governed").sort("agents")
    ung = table.filter(pl.col("arm") == "ungoverned").sort("agents")
    assert gov["run_id"].to_list() == ung["run_id"].to_list()  # the same runs, in order
    # Log axis: the x positions are the agent counts, 1, 10 and 100 evenly spaced.
    assert xs["governed p50"] == pytest.approx([0.0, 1.0, 2.0])
    assert x_labels == ["1", "10", "100"]
    assert got["governed p50"] == pytest.approx(gov["p50_us"].to_list())
    assert got["ungoverned p50"] == pytest.approx(ung["p50_us"].to_list())
    assert got["governed - ungoverned p50"] == pytest.approx(
        (gov["p50_us"] - ung["p50_us"]).to_list())
    assert any(v != 0 for v in got["governed - ungoverned p50"])  # not trivially 0
    if compact:  # one row: the per-round mean and the agents chart with the difference
        assert shown == (False, False) and "governed p99" not in got
    else:
        assert shown == (True, True)
        assert got["governed p99"] == pytest.approx(gov["p99_us"].to_list())
        assert got["governed - ungoverned p99"] == pytest.approx(
            (gov["p99_us"] - ung["p99_us"]).to_list())


async def test_S_toggles_smoothing_at_the_default_weight(make_snap_app) -> None:
    from tractatus_watch.tui.commands import DEFAULT_SMOOTHING

    app = make_snap_app(interval=60.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        b, e = app.query_one("#chart-b", Chart), app.query_one("#chart-e", Chart)
        raw, raw_e = _series(b)["blocked"], _series(e)["evasions"]
        await pilot.press("S")
        await settle(pilot)
        assert app.context.smoothing == DEFAULT_SMOOTHING == 0.6
        assert _series(b)["blocked"] == pytest.approx(ema(raw, 0.6))
        assert _series(e)["evasions"] == pytest.approx(ema(raw_e, 0.6))
        assert "smoothed 0.6" in str(b.border_subtitle)
        await pilot.press("S")
        await settle(pilot)
        assert app.context.smoothing == 0.0 and _series(b)["blocked"] == pytest.approx(raw)
        assert "smoothed" not in str(b.border_subtitle)
        # On at another weight (`:smooth 0.9`): S turns it off; from another view too.
        await _smooth(pilot, "smooth 0.9")
        assert _series(b)["blocked"] == pytest.approx(ema(raw, 0.9))
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        assert app.context.smoothing == 0.0
        await pilot.press("1")
        await settle(pilot)
        assert _series(b)["blocked"] == pytest.approx(raw)
