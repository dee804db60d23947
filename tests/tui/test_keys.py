"""Every key of the dashboard, driven with Pilot on a real database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.widgets import ContentSwitcher, Input, Static

from tractatus_watch.storage.store import Store
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.app import Dashboard
from tractatus_watch.tui.screens import HelpScreen, SilenceScreen
from tractatus_watch.tui.views import VIEWS, Agents, Events

from .helpers import FIXED_NOW, screen_text, settle


def rows_of(app: Any, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", Table)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def status(app: Any) -> str:
    return str(app.query_one("#status").render())


async def type_prompt(pilot: Any, opener: str, text: str) -> None:
    await pilot.press(opener)
    prompt = pilot.app.query_one("#prompt", Input)
    assert prompt.display and prompt.has_focus
    prompt.value = text
    await pilot.press("enter")
    await settle(pilot)


async def test_number_keys_switch_views(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for i, view in enumerate(VIEWS):
            await pilot.press(view.KEY)
            await settle(pilot)
            assert app.query_one("#views", ContentSwitcher).current == f"view-{view.TITLE.lower()}"
            assert app.current_view.has_focus_within or app.current_view.has_focus
        # The footer lists the keys of the view in focus (here Events: n, p, g).
        screen = screen_text(app)
        assert "n Older" in screen and "p Newer" in screen


async def test_help_lists_every_key(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for binding in Dashboard.BINDINGS:
            assert Dashboard.HELP.get(binding.action, binding.description)[:30] in text, binding
        for view in VIEWS:
            for binding in view.BINDINGS:
                assert binding.description in text, (view.TITLE, binding)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_filter_key_per_view(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("slash")  # the overview has no filter: says where filters are
        await pilot.pause()
        assert "has no filter" in screen_text(app)
        await pilot.press("2")
        await type_prompt(pilot, "slash", "STR-001")
        assert {r[2] for r in rows_of(app, "rules-table")} == {"STR-001"}  # after the arm
        await pilot.press("5")
        await type_prompt(pilot, "slash", "escaped>0")
        rows = rows_of(app, "agents-table")
        assert rows and all(int(r[5]) > 0 for r in rows)
        await type_prompt(pilot, "slash", "escaped>")  # invalid: error, prompt stays open
        assert "escaped takes a number" in screen_text(app)
        await pilot.press("escape")
        assert not app.query_one("#prompt", Input).display
        await pilot.press("7")
        await type_prompt(pilot, "slash", "verdict=block arm=governed")
        rows = rows_of(app, "events-table")
        assert rows and all(r[6] == "block" and r[3] == "governed" for r in rows)


async def test_command_line(make_app) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await type_prompt(pilot, "colon", "run beta")
        assert app.scope.run_id == "beta" and not app.scope.follow_latest
        assert "run beta" in screen_text(app)
        await type_prompt(pilot, "colon", "baseline alpha")
        assert app.scope.baseline_run == "alpha"
        assert "run beta vs alpha" in screen_text(app)
        await type_prompt(pilot, "colon", "interval 0.5")
        assert app.interval == 0.5 and "every 0.5s" in status(app)
        await type_prompt(pilot, "colon", "view 3")
        assert app.current_view.TITLE == "Alerts"
        await type_prompt(pilot, "colon", "theme nord")
        assert app.theme == "nord"
        await type_prompt(pilot, "colon", "run nosuch")
        assert "no run 'nosuch'" in screen_text(app)
        await pilot.press("escape")
        await type_prompt(pilot, "colon", "frobnicate")
        assert "unknown command 'frobnicate'" in screen_text(app)
        await pilot.press("escape")
        await type_prompt(pilot, "colon", "run latest")
        assert app.scope.follow_latest and app.scope.run_id == "alpha"


async def test_pause_and_interval_keys(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.interval == 5.0 and app.refresher.armed
        await pilot.press("space")
        assert app.paused and not app.refresher.armed and "PAUSED" in status(app)
        done = app.refreshes
        await pilot.press("r")  # a manual refresh still works while paused
        await settle(pilot)
        assert app.refreshes == done + 1 and not app.refresher.armed
        await pilot.press("space")
        await settle(pilot)
        assert not app.paused and app.refresher.armed and "PAUSED" not in status(app)
        await pilot.press("plus")
        assert app.interval == 10.0 and "every 10s" in status(app)
        await pilot.press("minus", "minus")
        assert app.interval == 2.0 and "every 2s" in status(app)


async def test_no_overlapping_refreshes(make_app) -> None:
    """Refresh requests while a fetch is in flight are folded into one follow-up fetch."""
    app = make_app(view="rules")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        started = app.refresher.token
        for _ in range(5):
            app.refresh_view()
        assert app.refresher.busy and app.refresher.token == started + 1
        await settle(pilot)
        assert app.refresher.token == started + 2  # the five requests became one more fetch


async def test_export_and_screenshot_keys(make_app, tmp_path: Path) -> None:
    app = make_app(export_dir=tmp_path, view="rules")
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        csv = list(tmp_path.glob("tractatus-watch-rules-alpha-*.csv"))
        assert len(csv) == 1
        exported = pl.read_csv(csv[0])
        shown = rows_of(app, "rules-table")
        assert exported.height == len(shown)
        assert sorted(exported["rule_id"].to_list()) == sorted(r[2] for r in shown)
        assert "exported 16 rows" in screen_text(app)  # a row per arm and rule
        await pilot.press("5")
        await settle(pilot)
        await type_prompt(pilot, "colon", f"export parquet {tmp_path / 'agents.parquet'}")
        agents = pl.read_parquet(tmp_path / "agents.parquet")
        assert agents.height == len(rows_of(app, "agents-table"))
        await pilot.press("s")
        await pilot.pause()
        svg = list(tmp_path.glob("tractatus-watch-agents-*.svg"))
        assert len(svg) == 1 and "<svg" in svg[0].read_text()[:200]


async def test_theme_key(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        first = app.theme
        await pilot.press("t")
        assert app.theme != first


async def test_quit_key(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_rules_enter_drills_into_events_and_arm_key(make_app) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert "arm: governed" in screen_text(app)
        rule = rows_of(app, "rules-table")[0][1]
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_view.TITLE == "Events"
        events = app.query_one("#view-events", Events)
        assert events.filters == {"arm": "governed", "verdict": None, "rule_id": rule}
        assert f"filter: arm=governed rule={rule}" in screen_text(app)
        # Every decision listed has a check of that rule: open one and look.
        assert rows_of(app, "events-table")
        detail = str(app.query_one("#event-detail", Static).render())
        assert f" {rule} " in detail


async def test_runs_keys_choose_and_baseline(make_app) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("down", "b")
        await settle(pilot)
        assert app.scope.baseline_run == "beta"
        assert rows_of(app, "runs-table")[1][0] == "B"
        await pilot.press("enter")
        await settle(pilot)
        assert app.scope.run_id == "beta" and "run beta vs beta" in screen_text(app)
        assert rows_of(app, "runs-table")[1][0] == "●B"


async def test_agents_page_keys(make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Agents, "PAGE", 5)
    app = make_app(view="agents")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        first = rows_of(app, "agents-table")
        assert len(first) == 5 and "page 1/3" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        second = rows_of(app, "agents-table")
        assert second != first and "page 2/3" in screen_text(app)
        await pilot.press("n", "n")
        await settle(pilot)
        assert len(rows_of(app, "agents-table")) == 2 and "page 3/3" in screen_text(app)
        await pilot.press("p", "p")
        await settle(pilot)
        assert rows_of(app, "agents-table") == first


async def test_events_page_keys(make_app) -> None:
    app = make_app(view="events")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.query_one("#events-table", Table)
        first = [table.key_at(i) for i in range(50)]
        await pilot.press("n", "n")
        await settle(pilot)
        assert "page 3" in screen_text(app)
        await pilot.press("p")
        await settle(pilot)
        assert "page 2" in screen_text(app)
        await pilot.press("g")
        await settle(pilot)
        now = [table.key_at(i) for i in range(50)]
        assert now == first and "page 1 (following new data)" in screen_text(app)


async def test_silence_on_a_read_only_database_says_why(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("x")
        assert isinstance(app.screen, SilenceScreen)
        await pilot.press("enter", "enter")
        await settle(pilot)
        assert "silences cannot be saved here" in screen_text(app)


async def test_silence_key_writes_through_the_alert_store(tui_db: Path, tmp_path: Path) -> None:
    from tractatus_watch.storage.alert_store import DuckDBAlertStore

    copy = tmp_path / "writable.duckdb"
    shutil.copy(tui_db, copy)
    store = Store.open(copy)
    alert_store = DuckDBAlertStore(store)
    app = Dashboard(store, silence_writer=alert_store.add_silence, clock=lambda: FIXED_NOW,
                    export_dir=tmp_path, view="alerts")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("x")
        assert isinstance(app.screen, SilenceScreen)
        app.screen.query_one("#silence-duration", Input).value = "2h"
        await pilot.press("enter")
        app.screen.query_one("#silence-comment", Input).value = "known: coverage fix deploying"
        await pilot.press("enter")
        await settle(pilot)
        assert "silenced CoverageBelowTarget" in screen_text(app)
        silences = rows_of(app, "silences-table")
        assert len(silences) == 1 and "known: coverage fix deploying" in silences[0][2]
        assert rows_of(app, "alerts-table")[0][0] == "firing (silenced)"
        # The same through the command line, by alert name.
        await type_prompt(pilot, "colon", "silence BlockRateDrift 30m drift under review")
        assert len(rows_of(app, "silences-table")) == 2
    rows = store.cursor().execute("SELECT matchers, comment, epoch(ends_at - starts_at) "
                                  "FROM silences ORDER BY comment").fetchall()
    store.close()
    assert rows[0][1] == "drift under review" and rows[0][2] == 1800
    assert json.loads(rows[1][0]) == ['alertname="CoverageBelowTarget"', 'arm="governed"']
    assert rows[1][2] == 7200
