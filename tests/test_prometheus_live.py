"""A real Prometheus (Debian's package, scripts/test.sh) scrapes `collect --gateway --metrics`
while a demo trains against that gateway: PromQL through Prometheus's HTTP API gives the same
totals as `report` on the collector's store, the generated rules load and evaluate, and every
panel query of the Grafana dashboard is accepted by the query API."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .collectors.conftest import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed "
                                "(scripts/test.sh installs Debian's package)")


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TRACTATUS_WATCH", "AGL_KEY"))}
    return {**base, **extra}


def tw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float,
             alive: Callable[[], str | None] = lambda: None) -> Any:
    """Poll `probe` until it returns something truthy (bounded); `alive` names a dead part."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        dead = alive()
        if dead:
            raise AssertionError(f"waiting for {what}: {dead}")
        try:
            last = probe()
        except httpx.TransportError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout_s} s (last: {last!r})")


@dataclass
class Setup:
    prom: str          # Prometheus's base URL
    run_id: str
    report: dict[str, Any]  # `report --format json` of the collector's store
    promql: dict[str, Any]  # the figures read through PromQL before the collector stopped
    rules_file: Path
    workdir: Path


def query(prom: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    doc: dict[str, Any] = r.json()
    return doc


def vector(prom: str, expr: str) -> dict[tuple[str, ...], float]:
    """An instant vector of one run by its label values (sorted label names; run_id, job and
    instance left out)."""
    doc = query(prom, expr)
    assert doc["status"] == "success", doc
    out = {}
    for item in doc["data"]["result"]:
        labels = {k: v for k, v in item["metric"].items()
                  if k not in ("job", "instance", "__name__", "run_id")}
        out[tuple(labels[k] for k in sorted(labels))] = float(item["value"][1])
    return out


PROM_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: tractatus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("prom")
    rules_file = work / "rules.yml"
    made = tw("rules", "--format", "prometheus", "--round-seconds", "5", "--out",
              str(rules_file))
    assert made.returncode == 0, made.stderr
    metrics_port, gateway_port, prom_port = free_port(), free_port(), free_port()
    (work / "prometheus.yml").write_text(PROM_CONFIG.format(rules=rules_file,
                                                            port=metrics_port))
    prom_log = open(work / "prometheus.log", "wb")
    prom = subprocess.Popen([str(PROMETHEUS), f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=prom_log, stderr=subprocess.STDOUT)
    key = secrets.token_hex(12)
    key_file = work / "agl.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    store_a = work / "collector.duckdb"
    collect_log = open(work / "collect.log", "wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", "tractatus_watch", "collect", "--gateway", "--port",
         str(gateway_port), "--metrics", str(metrics_port), "--store", str(store_a)],
        env=_env(AGL_KEY=key), stdout=collect_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{prom_port}"

    def dead() -> str | None:
        for name, p, log in (("prometheus", prom, "prometheus.log"),
                             ("collect", collector, "collect.log")):
            if p.poll() is not None:
                return f"{name} exited {p.returncode}: {(work / log).read_text()[-2000:]}"
        return None

    try:
        wait_for("Prometheus ready", lambda: httpx.get(f"{base}/-/ready", timeout=2)
                 .status_code == 200, 30, dead)
        wait_for("the gateway", lambda: httpx.get(
            f"http://127.0.0.1:{gateway_port}/healthz", timeout=2).status_code == 200, 60, dead)
        wait_for("a scrape of --metrics", lambda: vector(base, 'up{job="tractatus"} == 1'),
                 30, dead)
        demo = tw("demo", "--agl", f"http://127.0.0.1:{gateway_port}", "--key-file",
                  str(key_file), "--headless", "--format", "json", "--rounds", "3",
                  "--db", str(work / "demo.duckdb"), timeout=240)
        assert demo.returncode == 0, demo.stderr[-3000:]
        demo_doc = json.loads(demo.stdout)
        run_id = demo_doc["run_id"]
        want = {arm: m["actions"] for arm, m in demo_doc["arms"].items()}
        sel = f'run_id="{run_id}"'

        def settled() -> bool:
            # Everything the demo stored has been collected, committed and scraped.
            got = vector(base, f"tractatus_actions_total{{{sel}}}")
            return {k[0]: v for k, v in got.items()} == want

        wait_for("the demo's actions in Prometheus", settled, 60, dead)
        figures = {name: vector(base, f"{name}{{{sel}}}") for name in (
            "tractatus_actions_total", "tractatus_covered_actions_total",
            "tractatus_blocked_actions_total", "tractatus_escaped_violations_total",
            "tractatus_would_have_blocked_actions_total", "tractatus_evasions_total",
            "tractatus_coverage_ratio", "tractatus_witnessed_coverage_ratio",
            "tractatus_performance_gap")}
        figures["rule_blocks"] = vector(
            base, f"sum by (arm, rule) (tractatus_rule_blocks_total{{{sel}}})")
        figures["checks"] = vector(base, f"sum(tractatus_checks_total{{{sel}}})")
        figures["latency_count"] = vector(
            base, f"sum(tractatus_check_latency_seconds_count{{{sel}}})")
        figures["latency_inf"] = vector(
            base, f'sum(tractatus_check_latency_seconds_bucket{{{sel},le="+Inf"}})')
        collector.send_signal(signal.SIGINT)
        collector.wait(90)
        assert collector.returncode == 0, (work / "collect.log").read_text()[-3000:]
        assert key not in (work / "collect.log").read_text()
        rep = tw("report", "--run", run_id, "--store", str(store_a), "--format", "json")
        assert rep.returncode == 0, rep.stderr
        yield Setup(base, run_id, json.loads(rep.stdout), figures, rules_file, work)
    finally:
        for p in (collector, prom):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        prom_log.close()
        collect_log.close()


def test_promql_totals_are_the_reports(setup: Setup) -> None:
    arms = setup.report["arms"]
    f = setup.promql
    assert set(arms) == {k[0] for k in f["tractatus_actions_total"]}
    for arm, m in arms.items():
        assert f["tractatus_actions_total"][(arm,)] == m["actions"] > 0
        assert f["tractatus_blocked_actions_total"][(arm,)] == m["blocked"]
        assert f["tractatus_escaped_violations_total"][(arm,)] == m["escaped_violations"]
        assert f["tractatus_would_have_blocked_actions_total"][(arm,)] == m["would_have_blocked"]
        assert f["tractatus_evasions_total"][(arm,)] == m["evasions"]
        assert f["tractatus_coverage_ratio"][(arm,)] == pytest.approx(m["coverage"], abs=1e-12)
        if m["witnessed_coverage"] is not None:
            assert f["tractatus_witnessed_coverage_ratio"][(arm,)] == pytest.approx(
                m["witnessed_coverage"], abs=1e-12)
        for rule in m["rules"]:
            assert f["rule_blocks"].get((arm, rule["rule_id"]), 0.0) == rule["blocks"]
    # The demo blocks in its governed arm and lets violations run in the ungoverned one.
    assert arms["governed"]["blocked"] > 0 and arms["ungoverned"]["escaped_violations"] > 0
    assert sum(r["blocks"] for r in arms["governed"]["rules"]) > 0
    assert arms["governed"]["witnessed_coverage"] == 1.0  # the gateway saw the tool calls
    gap = setup.report["difference"]["performance"]
    assert f["tractatus_performance_gap"][()] == pytest.approx(gap, abs=1e-9)
    # The histogram holds every check, exactly.
    assert f["latency_count"][()] == f["latency_inf"][()] == f["checks"][()] > 0


def test_the_generated_rules_pass_promtool_and_evaluate(setup: Setup) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "rules", str(setup.rules_file)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    doc = httpx.get(f"{setup.prom}/api/v1/rules", timeout=10).json()
    rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
    assert len(rules) == 8
    # Evaluated at least once against the real metrics, without an error.
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                       for r in rules]


def test_every_grafana_panel_query_is_accepted(setup: Setup) -> None:
    proc = tw("rules", "--format", "grafana")
    assert proc.returncode == 0, proc.stderr
    board = json.loads(proc.stdout)
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 9
    for expr in exprs:
        concrete = expr.replace("$run", setup.run_id).replace("$job", "tractatus")
        doc = query(setup.prom, concrete)
        assert doc["status"] == "success", (expr, doc)
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for word in ("coverage", "blocks by rule", "block rate", "gap", "latency", "lag"):
        assert word in titles
