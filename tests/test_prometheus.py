"""The Prometheus exposition over a synthetic store (parsed with prometheus_client's own parser:
the same figures as storage/queries + analysis/metrics, an exact latency histogram, detector
gauges that agree with the alert engine), the rules generator, and the CLI's one-line errors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.synthetic import decisions_batch
from tractatus_watch.analysis import metrics as M
from tractatus_watch.analysis.alerts.alert_rules import (NoData, load_default_alert_rules,
                                                         parse_alert_rules)
from tractatus_watch.analysis.alerts.prometheus_rules import (PrometheusRulesError,
                                                              rules_document, to_yaml)
from tractatus_watch.monitor.bridges import BridgeContext
from tractatus_watch.monitor.health import SourceHealth
from tractatus_watch.monitor.prometheus_bridge import EDGES_US, PrometheusBridge
from tractatus_watch.monitor.report import build_report
from tractatus_watch.monitor.store_evaluator import StoreEvaluator
from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from .test_cli_storage import tw

RUN = "prom-run"
Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("prom") / "watch.duckdb"
    with Store.open(path) as s:
        writer = Writer(s)
        # Attempted violations jump from 2% to 30% at round 20: the drift detector alarms.
        writer.submit(decisions_batch(0, 2_000, run_id=RUN, rounds=40, total=4_000,
                                      block_rate=0.02, rulesets=True))
        writer.submit(decisions_batch(2_000, 2_000, run_id=RUN, rounds=40, total=4_000,
                                      block_rate=0.3, rulesets=True, seed=1))
        writer.submit(decisions_batch(0, 50, run_id="other-session", rounds=2))
        writer.close()
        yield s


@pytest.fixture(scope="module")
def scraped(store: Store) -> Samples:
    health = [SourceHealth("gateway", state="connected", lag_s=0.25),
              SourceHealth("spool:/x", state="failed")]
    bridge = PrometheusBridge("127.0.0.1", 0)
    bridge.start(BridgeContext(store, lambda: frozenset({RUN}), lambda: health))
    bridge.close()  # its last poll, then the server stops
    assert bridge.error is None
    # What a scrape of that snapshot shows (the server itself: test_the_server_answers_...).
    text = generate_latest(bridge.registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def by(samples: Samples, name: str, *keys: str, **match: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` summed by the values of `keys` (sum by (keys) in PromQL)."""
    out: dict[tuple[str, ...], float] = {}
    for lab, v in samples.get(name, []):
        if all(lab.get(k) == want for k, want in match.items()):
            key = tuple(lab[k] for k in keys)
            out[key] = out.get(key, 0.0) + v
    return out


def test_counters_and_coverage_are_the_stored_figures(store: Store, scraped: Samples) -> None:
    con = store.cursor()
    arms = {row["arm"]: M.arm_figures(row) for row in Q.totals(con, RUN).iter_rows(named=True)}
    assert set(arms) == {"governed", "ungoverned"}
    for arm, f in arms.items():
        assert by(scraped, "tractatus_actions_total", "arm")[(arm,)] == f.actions > 0
        assert by(scraped, "tractatus_covered_actions_total", "arm")[(arm,)] == f.covered
        assert by(scraped, "tractatus_blocked_actions_total", "arm")[(arm,)] == f.blocked
        assert by(scraped, "tractatus_escaped_violations_total", "arm")[(arm,)] == f.escaped
        assert (by(scraped, "tractatus_would_have_blocked_actions_total", "arm")[(arm,)]
                == f.would_have_blocked)
        assert by(scraped, "tractatus_coverage_ratio", "arm")[(arm,)] == f.coverage
    assert arms["governed"].blocked > 0 and arms["ungoverned"].escaped > 0
    # Only this session's runs.
    assert {lab["run_id"] for lab, _ in scraped["tractatus_actions_total"]} == {RUN}
    rules = [M.rule_figures(r) for r in Q.rule_counts(con, RUN).iter_rows(named=True)]
    blocks = by(scraped, "tractatus_rule_blocks_total", "arm", "service", "rule")
    evals = by(scraped, "tractatus_rule_evaluations_total", "arm", "service", "rule")
    assert sum(r.blocks for r in rules) > 0
    for r in rules:
        assert blocks[(r.arm, r.service, r.rule_id)] == r.blocks
        assert evals[(r.arm, r.service, r.rule_id)] == r.evaluations
    checks = by(scraped, "tractatus_checks_total", "arm", "verdict")
    total = con.execute("SELECT count(*) FROM checks WHERE run_id = ?", [RUN]).fetchall()[0][0]
    assert sum(checks.values()) == total
    blocked_checks = con.execute("SELECT count(*) FROM checks WHERE run_id = ? AND "
                                 "verdict = 'block'", [RUN]).fetchall()[0][0]
    assert sum(v for (_, verdict), v in checks.items() if verdict == "block") == blocked_checks
    gap = build_report(con, RUN).gap
    assert gap is not None
    assert by(scraped, "tractatus_performance_gap", "run_id")[(RUN,)] == gap.absolute
    con.close()


def test_the_latency_histogram_is_exact(store: Store, scraped: Samples) -> None:
    con = store.cursor()
    rows = con.execute("SELECT arm, service, latency_us FROM checks WHERE run_id = ?",
                       [RUN]).fetchall()
    con.close()
    buckets = scraped["tractatus_check_latency_seconds_bucket"]
    for arm in ("governed", "ungoverned"):
        for service in ("BoundaryEnforcer", "CrossReferenceValidator"):
            values = [v for a, s, v in rows if a == arm and s == service]
            assert values
            got = {lab["le"]: n for lab, n in buckets
                   if lab["arm"] == arm and lab["service"] == service}
            assert len(got) == len(EDGES_US) + 1
            for edge in EDGES_US:
                le = next(k for k in got if k != "+Inf" and round(float(k) * 1e6) == edge)
                assert got[le] == sum(1 for v in values if v <= edge), edge
            assert got["+Inf"] == len(values)
            assert by(scraped, "tractatus_check_latency_seconds_count", "arm", "service")[
                (arm, service)] == len(values)
            assert by(scraped, "tractatus_check_latency_seconds_sum", "arm", "service")[
                (arm, service)] == pytest.approx(sum(values) / 1e6, rel=1e-12)


def test_detector_gauges_agree_with_the_alert_engine(store: Store, scraped: Samples) -> None:
    con = store.cursor()
    evaluator = StoreEvaluator(con, [RUN])
    alarms = by(scraped, "tractatus_detector_alarm", "alert", "arm")
    stat = by(scraped, "tractatus_detector_statistic", "alert", "arm")
    limit = by(scraped, "tractatus_detector_threshold", "alert", "arm")
    judged = 0
    for rule in load_default_alert_rules().rules:
        if rule.detector is None:
            continue
        try:
            firing = {s.labels["arm"] for s in evaluator.evaluate(rule)}
        except NoData:  # then no gauge either
            firing = set()
        for (alert, arm), value in alarms.items():
            if alert == rule.name:
                judged += 1
                assert (value == 1.0) == (arm in firing), (alert, arm)
    con.close()
    assert judged >= 3
    # The drift in the governed arm alarms, and PromQL's comparison says the same.
    key = ("AdherenceDrift", "governed")
    assert alarms[key] == 1.0 and stat[key] > limit[key]
    value = by(scraped, "tractatus_detector_value", "alert", "arm")[key]
    assert 0.1 < value < 0.5
    assert "change_round" in {lab["detail"] for lab, _ in scraped["tractatus_detector_detail"]}


def test_source_health(scraped: Samples) -> None:
    assert by(scraped, "tractatus_source_up", "source") == {("gateway",): 1.0,
                                                             ("spool:/x",): 0.0}
    assert by(scraped, "tractatus_source_lag_seconds", "source") == {("gateway",): 0.25}


def test_the_server_answers_a_scrape(store: Store) -> None:
    bridge = PrometheusBridge("127.0.0.1", 0)
    bridge.start(BridgeContext(store, lambda: frozenset({RUN}), lambda: []))
    try:
        bridge._poll_once()
        text = httpx.get(bridge.url, timeout=10).text
        assert f'tractatus_actions_total{{arm="governed",run_id="{RUN}"}}' in text
    finally:
        bridge.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(bridge.url, timeout=2)


# --- the rules generator -------------------------------------------------------------------------

def test_every_default_rule_has_its_promql() -> None:
    rules = load_default_alert_rules()
    doc = rules_document(rules, round_seconds=30)
    generated = [r for g in doc["groups"] for r in g["rules"]]
    assert [r["alert"] for r in generated] == [r.name for r in rules.rules]
    assert [g["name"] for g in doc["groups"]] == [g.name for g in rules.groups]
    for rule, out in zip(rules.rules, generated):
        assert rule.promql is not None, rule.name
        assert out["labels"] == rule.labels
        assert set(out["annotations"]) == set(rule.annotations)
        assert "{" + "alert}" not in out["expr"] and "$info" not in json.dumps(out)
    by_name = {r["alert"]: r for r in generated}
    assert by_name["PerformanceGapWidening"]["for"] == "60s"  # 2 rounds at 30 s
    assert by_name["GovernanceLatencyGrowth"]["for"] == "150s"
    assert by_name["GovernanceEscapedViolations"]["keep_firing_for"] == "60s"
    assert "for" not in by_name["GovernanceCoverageBelow100"]
    assert 'alert="AdherenceDrift"' in by_name["AdherenceDrift"]["expr"]
    # The YAML (no YAML library writes it) reads back as the same document.
    assert yaml.safe_load(to_yaml(rules, 30)) == doc


RULE = """
[[groups]]
name = "g"
[[groups.rules]]
alert = "A"
detector = "coverage_drop"
params = {{ threshold = 0.9 }}
{promql}
"""


def test_a_rule_without_promql_or_with_an_unknown_name_is_an_error() -> None:
    with pytest.raises(PrometheusRulesError, match=r"rules\[0\] \(A\): no `promql`"):
        rules_document(parse_alert_rules(RULE.format(promql="")))
    with pytest.raises(PrometheusRulesError, match=r"promql names \{ratio\}"):
        rules_document(parse_alert_rules(RULE.format(
            promql='promql = "tractatus_detector_statistic < {ratio}"')))
    ok = rules_document(parse_alert_rules(RULE.format(
        promql='promql = "tractatus_detector_statistic{alert=\\"{alert}\\"} < {threshold}"')))
    assert ok["groups"][0]["rules"][0]["expr"] == \
        'tractatus_detector_statistic{alert="A"} < 0.9'


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules_the_command_writes(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    proc = tw("rules", "--format", "prometheus", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    check = subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(RULE.format(promql=""))
    bad = tw("rules", "--rules", str(missing))
    assert bad.returncode == 2 and "no `promql`" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spool = tmp_path / "spool"
        spool.mkdir()
        cases: dict[str, list[str]] = {
            "cannot listen": ["collect", "--spool", str(spool), "--metrics", str(port),
                              "--db", str(tmp_path / "w.duckdb")],
            "expected one of": ["rules", "--format", "yaml"],
        }
        for needle, args in cases.items():
            proc = tw(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "w.duckdb").exists()  # refused before the store was opened

