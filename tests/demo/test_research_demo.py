"""Experiments over seeds, end to end: `demo --seeds` as a user runs it (one real demo per seed,
through its in-process Agent Lightning gateway, into one DuckDB file), then `research` over
that experiment, and its HTML report opened in a real headless browser (Chromium).

The issue's sizes (10 seeds of demo2, 5 x 1000 rounds of persistence) are benchmarks; here 3
seeds of demo2 check the same properties.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.demo_runs import DEMO2, DemoRun, demo_env, demo_run, shared_root

SEEDS = ("--seeds", "1-3")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return demo_run(shared_root(tmp_path_factory), *DEMO2, *SEEDS)


def _research(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tractatus_watch", "research", "--db", str(db),
                           *args], env=demo_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def research(experiment: DemoRun) -> dict[str, Any]:
    done = _research(experiment.db, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_seeds_are_one_experiment_with_a_run_each(experiment: DemoRun) -> None:
    doc = experiment.doc
    assert doc["seeds"] == [1, 2, 3] and doc["scenario"] == "demo2"
    assert doc["store"] == str(experiment.db)
    assert [r["seed"] for r in doc["runs"]] == [1, 2, 3]
    assert len({r["run_id"] for r in doc["runs"]}) == 3
    for run in doc["runs"]:
        gov = run["arms"]["governed"]
        assert gov["coverage"] == 1.0 and gov["escaped_violations"] == 0
    listed = subprocess.run([sys.executable, "-m", "tractatus_watch", "runs", "--db",
                             str(experiment.db), "--format", "json"], env=demo_env(),
                            capture_output=True, text=True, timeout=120)
    assert {(r["run_id"], r["experiment"]) for r in json.loads(listed.stdout)} == {
        (r["run_id"], doc["experiment"]) for r in doc["runs"]}


def test_research_compares_the_seeds(experiment: DemoRun, research: dict[str, Any]) -> None:
    doc = experiment.doc
    assert research["experiment"] == doc["experiment"]  # the latest experiment by default
    assert research["seeds"] == [1, 2, 3]
    assert [r["run_id"] for r in research["runs"]] == [r["run_id"] for r in doc["runs"]]
    gov, ung = research["arms"]["governed"], research["arms"]["ungoverned"]
    # Governed performance is below ungoverned, with a bootstrap interval over the seeds.
    assert gov["performance_iqm"]["hi"] < ung["performance_iqm"]["lo"], (gov, ung)
    diff = research["q4"]["figures"]["by_arm"]["governed"]["iqm_difference"]
    assert diff["hi"] < 0 and diff["n"] == 3
    assert gov["coverage_min"] == 1.0 and gov["escaped"] == 0
    assert ung["escaped"] == sum(r["arms"]["ungoverned"]["escaped_violations"]
                                 for r in doc["runs"])
    # One truth: the per-seed performances research compares are the demo's report's.
    per_seed = {row[0]: row[2:4] for row in research["q4"]["evidence"]["rows"]}
    for run in doc["runs"]:
        got = per_seed[run["seed"]]
        assert got == pytest.approx([run["arms"]["governed"]["performance"],
                                     run["arms"]["ungoverned"]["performance"]], abs=1e-6)
    for key in ("q1", "q2", "q3", "q4", "q5"):
        assert research[key]["verdict"] and research[key]["chart"]["series"]
    # Three seeds of one agent, five rounds: every answer says its evidence is thin.
    assert all(research[k]["thin"] for k in ("q1", "q2", "q3", "q4", "q5"))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/test.sh "
                                              "installs Debian's chromium)")
def test_html_report_in_a_real_browser(experiment: DemoRun, research: dict[str, Any],
                                       tmp_path: Path) -> None:
    page = tmp_path / "research.html"
    done = _research(experiment.db, "--out", str(page))
    assert done.returncode == 0, done.stderr
    browser = [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "research.png"
    taken = subprocess.run([*browser, "--window-size=1000,2400", f"--screenshot={shot}",
                            page.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.exists(), taken.stderr[-2000:]
    assert _png_size(shot) == (1000, 2400)
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=180).stdout
    # The browser's own parse of the page: one section per question, each with a chart that
    # has data, and the verdicts of the json.
    sections = re.findall(r'<section class="answer" id="(q\d)">(.*?)</section>', dom, re.S)
    assert [key for key, _ in sections] == ["q1", "q2", "q3", "q4", "q5"]
    for key, body in sections:
        charts = re.findall(r'<svg[^>]*data-points="(\d+)"', body)
        assert len(charts) == 1 and int(charts[0]) > 0, (key, charts)
        assert "<polyline" in body or "<circle" in body, key
        assert research[key]["chart"]["title"] in body
    assert "no data in this experiment" not in dom


def test_multiagent_coordination_measures(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = demo_run(shared_root(tmp_path_factory), "--scenario", "multiagent", "--rounds", "4")
    done = _research(run.db, "--format", "json")
    assert done.returncode == 0, done.stderr
    q5 = json.loads(done.stdout)["q5"]
    assert q5["thin"] is False and "with 8 agents per arm" in q5["verdict"]
    for arm in ("governed", "ungoverned"):
        figures = q5["figures"][arm]
        assert 0.125 <= figures["audience_concentration"]["point"] <= 1.0
        assert 0.0 <= figures["style_diversity"]["point"] <= 1.0
        assert figures["crowding_loss"]["point"] >= 0.0
        # The demo's per-agent shares (its report) are research's, and cover the arm's audience.
        shares = {a["agent_id"]: a["audience_share"] for a in run.doc["per_agent"]
                  if a["arm"] == arm}
        assert len(shares) == 8 and sum(shares.values()) == pytest.approx(1.0)
        rows = {row[1]: row[3] for row in q5["evidence"]["rows"] if row[0] == arm}
        assert rows == pytest.approx(shares, abs=1e-6)
    # Governance keeps agents off the crowded clickbait styles: fewer styles in use.
    assert (q5["figures"]["governed"]["style_diversity"]["point"]
            < q5["figures"]["ungoverned"]["style_diversity"]["point"])
