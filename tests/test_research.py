"""Experiments and the research answers over stored runs with known answers.

Runs are written as the rollups the writer keeps (rollup_round, rollup_agent, rollup_latency)
into a real DuckDB store, with per-round counts drawn from known rates, so each answer can be
checked against what the data was made to show; the command's output formats are checked
against each other. The answers over real demo runs are in tests/demo/test_research_demo.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.synthetic import decisions_batch
from tractatus_watch.analysis import seed_stats as S
from tractatus_watch.monitor.research import _drift_params, build_research
from tractatus_watch.storage.experiments import (experiment_runs, experiments,
                                                 latest_experiment, run_meta_json)
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

ROLLUP = ("actions", "covered", "enforce_mode", "attempted", "blocked", "escaped", "evasions",
          "executed", "latency_us_sum", "reward_n", "reward_sum", "reward_sq_sum")


def put_run(con: Any, run_id: str, meta: dict[str, Any], arms: dict[str, dict[str, np.ndarray]],
            *, latency_us: int = 100, agents: int = 1) -> None:
    """One run: per arm, per-round arrays of `checked`, `attempted`, `evasions` and `reward`
    (the mean reward of the round's `reward_n` rollouts), split evenly over `agents`."""
    con.execute("INSERT INTO runs VALUES (?, ?, now()::TIMESTAMP, NULL, ?)",
                [run_id, run_id, run_meta_json(meta)])
    for arm, cols in arms.items():
        governed = arm != "ungoverned"
        for rnd, (n, x, ev, reward) in enumerate(zip(cols["checked"], cols["attempted"],
                                                     cols["evasions"], cols["reward"])):
            for a in range(agents):
                n_a, x_a, ev_a = int(n) // agents, int(x) // agents, int(ev) // agents
                # Agent k's share of the arm's reward grows with k; the arm's mean stays `reward`.
                weight = 2.0 * (a + 1) / (agents + 1)
                row = {"actions": n_a, "covered": n_a if governed else 0,
                       "enforce_mode": n_a if governed else 0, "attempted": x_a,
                       "blocked": x_a if governed else 0, "escaped": 0 if governed else x_a,
                       "evasions": ev_a, "executed": n_a - (x_a if governed else 0),
                       "latency_us_sum": n_a * latency_us, "reward_n": 4,
                       "reward_sum": reward * 4 * weight, "reward_sq_sum": reward ** 2 * 4}
                values = [run_id, arm, rnd, f"agent-{a}", *(row[c] for c in ROLLUP)]
                con.execute(f"INSERT INTO rollup_agent (run_id, arm, round, agent_id, "
                            f"{', '.join(ROLLUP)}, ts_min, ts_max) VALUES "
                            f"({', '.join('?' * len(values))}, now()::TIMESTAMP, "
                            "now()::TIMESTAMP)", values)
        sums = ", ".join(f"sum({c})" for c in ROLLUP)
        con.execute(f"""INSERT INTO rollup_round (run_id, arm, round, {', '.join(ROLLUP)},
                                                  ts_min, ts_max, would_have_blocked)
                        SELECT run_id, arm, round, {sums}, min(ts_min), max(ts_max), 0
                        FROM rollup_agent WHERE run_id = ? AND arm = ?
                        GROUP BY run_id, arm, round""", [run_id, arm])
        total = int(np.sum(cols["checked"]))
        con.execute("INSERT INTO rollup_latency VALUES (?, ?, 'publish', ?, ?, ?)",
                    [run_id, arm, latency_us, total, total])


def arm_series(rng: np.random.Generator, rounds: int, *, checked: int = 40, p: float = 0.05,
               evasion: float = 0.0, step: tuple[int, float] | None = None,
               reward: float = 0.8, noise: float = 0.01) -> dict[str, np.ndarray]:
    ev_p = np.full(rounds, evasion)
    if step is not None:
        ev_p[step[0]:] = step[1]
    n = np.full(rounds, checked)
    return {"checked": n, "attempted": rng.binomial(n, p), "evasions": rng.binomial(n, ev_p),
            "reward": reward + rng.normal(0.0, noise, rounds)}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.open(tmp_path / "r.duckdb") as s:
        yield s


def test_a_writer_tags_the_runs_it_registers_with_its_experiment(store: Any) -> None:
    writer = Writer(store, run_meta={"experiment": "exp-a", "seed": 3})
    writer.submit(decisions_batch(0, 40, run_id="r1", total=40))
    writer.close()
    untagged = Writer(store)
    untagged.submit(decisions_batch(40, 40, run_id="r2", total=80))
    untagged.close()
    # A collector restarted with --experiment adopts the stored run that had none; a run that
    # belongs to an experiment keeps it.
    later = Writer(store, run_meta={"experiment": "exp-b"})
    later.submit(decisions_batch(80, 40, run_id="r2", total=120))
    later.submit(decisions_batch(120, 40, run_id="r1", total=160))
    later.close()
    con = store.cursor()
    assert [(r["run_id"], r.get("seed")) for r in experiment_runs(con, "exp-a")] == [("r1", 3)]
    assert [r["run_id"] for r in experiment_runs(con, "exp-b")] == ["r2"]
    listed = experiments(con)
    assert set(listed["experiment"].to_list()) == {"exp-a", "exp-b"}
    assert latest_experiment(con) == listed["experiment"][0]
    assert experiment_runs(con, "nope") == []


def test_run_meta_needs_a_plain_experiment_name() -> None:
    with pytest.raises(ValueError, match="experiment name"):
        run_meta_json({"experiment": "two words"})
    with pytest.raises(ValueError, match="needs an experiment"):
        run_meta_json({"seed": 1})


def _experiment(con: Any, name: str, seeds: int, **kw: Any) -> None:
    for seed in range(1, seeds + 1):
        rng = np.random.default_rng(seed)
        gov = arm_series(rng, kw.get("rounds", 30), reward=kw.get("gov_reward", 0.8),
                         step=kw.get("step"), evasion=kw.get("evasion", 0.0))
        ung = arm_series(rng, kw.get("rounds", 30), reward=kw.get("ung_reward", 0.9), p=0.3)
        put_run(con, f"{name}-s{seed}", {"experiment": name, "scenario": "synthetic",
                                         "seed": seed, "agents": kw.get("agents", 1),
                                         "adversarial_round": kw.get("adversarial_round")},
                {"governed": gov, "ungoverned": ung}, agents=kw.get("agents", 1),
                latency_us=100)


def test_q4_a_known_gap_is_measured_and_not_called_closed(store: Any) -> None:
    con = store.cursor()
    _experiment(con, "gap", 6, gov_reward=0.80, ung_reward=0.90)
    r = build_research(con, "gap")
    q4 = r.to_json()["q4"]
    diff = q4["figures"]["by_arm"]["governed"]["iqm_difference"]
    assert diff["lo"] < -0.1 < diff["hi"] < 0, diff  # the true gap: -0.1
    assert q4["figures"]["by_arm"]["governed"]["equivalence"]["equivalent"] is False
    assert q4["verdict"].startswith("the gap did not close") and not q4["thin"]
    assert q4["figures"]["by_arm"]["governed"]["probability_of_improvement"]["point"] == 0.0
    # The per-seed performances are the report's, and the arms' IQM is theirs.
    perf = [row[2] for row in q4["evidence"]["rows"]]
    assert r.arms["governed"]["performance_iqm"]["point"] == pytest.approx(S.iqm(perf))
    assert r.arms["governed"]["coverage_min"] == 1.0 and r.arms["governed"]["escaped"] == 0
    assert len(q4["chart"]["series"][0]["y"]) == 30


def test_q4_equal_arms_are_equivalent_within_the_margin(store: Any) -> None:
    con = store.cursor()
    _experiment(con, "closed", 6, gov_reward=0.85, ung_reward=0.85)
    q4 = build_research(con, "closed", margin=0.02).to_json()["q4"]
    assert q4["figures"]["by_arm"]["governed"]["equivalence"]["equivalent"] is True, q4
    assert q4["verdict"].startswith("the gap closed")
    # A tighter margin than the noise allows: no longer shown.
    strict = build_research(con, "closed", margin=0.0001).to_json()["q4"]
    assert strict["figures"]["by_arm"]["governed"]["equivalence"]["equivalent"] is False


def test_q4_compares_both_governance_designs_with_the_baseline(store: Any) -> None:
    con = store.cursor()
    for seed in range(1, 6):
        rng = np.random.default_rng(seed)
        put_run(con, f"three-s{seed}", {"experiment": "three", "seed": seed},
                {"governed": arm_series(rng, 20, reward=0.80),
                 "penalized": arm_series(rng, 20, reward=0.85),
                 "ungoverned": arm_series(rng, 20, reward=0.90, p=0.3)})
    r = build_research(con, "three").to_json()
    q4 = r["q4"]
    assert list(r["arms"]) == ["governed", "penalized", "ungoverned"]
    assert q4["evidence"]["columns"] == ["seed", "run", "governed", "penalized", "ungoverned",
                                         "governed gap", "penalized gap"]
    by_arm = q4["figures"]["by_arm"]
    assert by_arm["governed"]["iqm_difference"]["point"] == pytest.approx(-0.1, abs=0.01)
    assert by_arm["penalized"]["iqm_difference"]["point"] == pytest.approx(-0.05, abs=0.01)
    assert [s["name"] for s in q4["chart"]["series"]] == ["governed - ungoverned",
                                                          "penalized - ungoverned"]
    assert "governed - ungoverned IQM" in q4["verdict"]
    assert "penalized - ungoverned IQM" in q4["verdict"]


def test_q2_false_alarms_are_the_rule_detectors_replayed(store: Any) -> None:
    con = store.cursor()
    _experiment(con, "persist", 3, rounds=400)
    q2 = build_research(con, "persist").to_json()["q2"]
    params = _drift_params()["adherence_drift"]
    assert params == {"ratio": 2.0, "arl0": 2000.0, "warmup": 10.0}  # the default rules'
    expected = 0
    for seed in range(1, 4):
        frame = con.execute("""SELECT attempted, covered FROM rollup_round WHERE run_id = ?
                               AND arm = 'governed' ORDER BY round""",
                            [f"persist-s{seed}"]).fetchnumpy()
        expected += len(S.cusum_alarms(frame["attempted"], frame["covered"], ratio=2.0,
                                       arl0=2000.0, warmup=10))
    rate = q2["figures"]["rates"]["governed/adherence_drift"]
    assert rate["alarms"] == expected and rate["rounds"] == 3 * (400 - 10)
    assert rate["stated_per_1000"] == pytest.approx(0.5)
    assert rate["per_1000"] == pytest.approx(expected / rate["rounds"] * 1000)
    assert q2["thin"] is False  # 1,170 scored rounds
    row = next(r for r in q2["evidence"]["rows"] if r[:2] == ["governed", "adherence_drift"])
    assert row[2:4] == [rate["rounds"], expected]


def test_q3_a_step_in_evasions_is_detected_soon_after_it_starts(store: Any) -> None:
    con = store.cursor()
    _experiment(con, "adv", 5, rounds=60, evasion=0.01, step=(30, 0.15), adversarial_round=30)
    doc = build_research(con, "adv").to_json()
    q3 = doc["q3"]
    gov = q3["figures"]["delays"]["governed"]
    assert gov["detected"] == 5 and gov["missed"] == 0
    # The alert rule's CUSUM caps each round's increment (cap_factor 2), so even a fifteenfold
    # rise takes a few rounds: 4 to 7 here, replayed by hand with seed_stats.cusum_alarms.
    assert 3 <= gov["quantiles"]["p50"] <= 8 and gov["quantiles"]["max"] <= 10
    assert "in 5 of 5 seeds" in q3["verdict"] and q3["thin"] is False
    assert q3["chart"]["vlines"] == [["disguised clickbait appears", 30.0]]
    # The q2 false-alarm count only reads the rounds before the adversary.
    q2 = doc["q2"]
    assert q2["figures"]["rates"]["governed/evasion_drift"]["rounds"] == 5 * (30 - 10)


def test_q1_slope_of_overhead_over_agent_counts(store: Any) -> None:
    con = store.cursor()
    for agents in (1, 10, 100):
        for seed in (1, 2):
            rng = np.random.default_rng(seed)
            put_run(con, f"scale-{agents}-s{seed}", {"experiment": "scale", "seed": seed,
                                                     "agents": agents, "scenario": "scale"},
                    {"governed": arm_series(rng, 3), "ungoverned": arm_series(rng, 3)},
                    latency_us=100 + 2 * agents + seed)
    q1 = build_research(con, "scale").to_json()["q1"]
    slope = q1["figures"]["slope"]
    assert slope["point"] == pytest.approx(2.0, abs=0.02) and slope["lo"] > 0
    assert q1["verdict"].startswith("overhead per action growing from 1 to 100 agents")
    assert [row[0] for row in q1["evidence"]["rows"]] == [1, 10, 100]


def test_q5_audience_concentration_per_arm(store: Any) -> None:
    con = store.cursor()
    _experiment(con, "multi", 3, agents=4)
    r = build_research(con, "multi").to_json()
    q5 = r["q5"]
    assert q5["thin"] is False and "with 4 agents per arm" in q5["verdict"]
    conc = q5["figures"]["governed"]["audience_concentration"]["point"]
    # Agent k takes a share proportional to k + 1 of the arm's reward: sum((k+1)/10)^2 = 0.3.
    assert conc == pytest.approx(0.3, abs=1e-9)
    assert q5["figures"]["governed"]["even_concentration"] == 0.25
    assert {row[1] for row in q5["evidence"]["rows"]} == {f"agent-{k}" for k in range(4)}
    # The shares research averages are the report's, per agent.
    shares = {row[1]: row[3] for row in q5["evidence"]["rows"] if row[0] == "governed"}
    assert shares == pytest.approx({f"agent-{k}": (k + 1) / 10 for k in range(4)})


def test_report_breaks_each_arm_down_per_agent(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with Store.open(db) as s:
        _experiment(s.cursor(), "multi", 1, agents=4)
    doc = json.loads(_cli("report", "--db", str(db), "--format", "json").stdout)
    gov = [a for a in doc["agents"] if a["arm"] == "governed"]
    assert [a["agent_id"] for a in gov] == [f"agent-{k}" for k in range(4)]
    assert [a["audience_share"] for a in gov] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert sum(a["actions"] for a in gov) == doc["arms"]["governed"]["actions"]
    assert sum(a["escaped"] for a in doc["agents"] if a["arm"] == "ungoverned") == \
        doc["arms"]["ungoverned"]["escaped_violations"]
    table = _cli("report", "--db", str(db))
    md = _cli("report", "--db", str(db), "--format", "markdown")
    for out in (" ".join(table.stdout.split()), md.stdout):
        assert "governed/agent-3" in out and "Share" in out and "40.0%" in out, out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args],
                          capture_output=True, text=True, timeout=120)


def test_research_formats_agree_and_bad_input_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with Store.open(db) as s:
        _experiment(s.cursor(), "old", 2, rounds=12)
        _experiment(s.cursor(), "new", 5, gov_reward=0.7, rounds=12)
    doc = json.loads(_cli("research", "--db", str(db), "--format", "json").stdout)
    assert doc["experiment"] == "new" and doc["seeds"] == [1, 2, 3, 4, 5]  # the latest
    assert set(doc) >= {"q1", "q2", "q3", "q4", "q5", "arms", "runs"}
    table = _cli("research", "--db", str(db), "--experiment", "new")
    md = _cli("research", "--db", str(db), "--experiment", "new", "--format", "markdown")
    html = tmp_path / "r.html"
    done = _cli("research", "--db", str(db), "--experiment", "new", "--out", str(html))
    assert table.returncode == md.returncode == done.returncode == 0, table.stderr + md.stderr
    page = html.read_text()
    assert oct(html.stat().st_mode & 0o777) == "0o600"
    for key in ("q1", "q2", "q3", "q4", "q5"):
        verdict = doc[key]["verdict"]
        assert verdict in md.stdout and verdict in page
        assert verdict[:40] in " ".join(table.stdout.split())
    assert page.count("<svg") == 5 and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    old = json.loads(_cli("research", "--db", str(db), "--experiment", "old",
                          "--format", "json").stdout)
    assert old["seeds"] == [1, 2] and old["q4"]["thin"] is True

    for args, message in (
            (("--experiment", "nope"), "no experiment 'nope'"),
            (("--format", "pdf"), "--format: unknown format"),
            (("--out", str(html)), "exists"),
    ):
        bad = _cli("research", "--db", str(db), *args)
        assert bad.returncode == 2, (args, bad.stderr)
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    Store.open(tmp_path / "empty.duckdb").close()
    empty = _cli("research", "--db", str(tmp_path / "empty.duckdb"))
    assert empty.returncode == 2 and empty.stderr.startswith(
        "error: no experiment stored yet"), empty.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("demo", "--seeds", "3-1", "--headless"), "--seeds: '3-1' is not an increasing range"),
    (("demo", "--seeds", "one", "--headless"), "--seeds: expected seeds such as 1-10"),
    (("demo", "--seed", "1", "--seeds", "1-2", "--headless"), "give --seed N or --seeds"),
    (("demo", "--seeds", "1-2"), "add --headless"),
    (("demo", "--seeds", "0-5000", "--headless"), "at most 1000 seeds"),
    (("demo", "--experiment", "a b", "--headless"), "--experiment: experiment name 'a b'"),
    (("collect", "--spool", "/nonexistent", "--experiment", "../x"),
     "--experiment: experiment name '../x'"),
])
def test_bad_experiment_arguments_exit_2_in_one_line(args: tuple[str, ...], message: str,
                                                     tmp_path: Path) -> None:
    done = _cli(*args, "--db", str(tmp_path / "x.duckdb"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
