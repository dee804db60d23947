"""Audit tap: crafted files in every format, with every quirk, into a real store; exact counts."""

from __future__ import annotations

import json
from pathlib import Path

from tractatus_watch.collectors.audit import AuditDefaults, decision_from_audit, ingest_audit
from tractatus_watch.collectors.sink import ListSink, writer_sink

OID_A = "65f1a0000000000000000001"

# mongoexport --jsonArray, pretty printed: one record spans several lines.
ARRAY_DOCS = [
    # 1 BoundaryEnforcer blocks; violation as a rule-id string.
    {"_id": {"$oid": OID_A}, "sessionId": "agent-1", "action": "boundary_enforcement",
     "allowed": False, "rulesChecked": ["inst_016", "inst_017"], "violations": ["inst_016"],
     "metadata": {"boundary": "VALUES", "tractatus_section": "12.1",
                  "enforcement_decision": "BLOCKED"},
     "domain": "content", "service": "BoundaryEnforcer", "durationMs": None,
     "timestamp": {"$date": "2025-10-01T10:00:00.000Z"}},
    # 2 CrossReferenceValidator WARNING logged as allowed:false and wrongly as BoundaryEnforcer.
    {"_id": {"$oid": "65f1a0000000000000000002"}, "sessionId": "agent-1",
     "action": "cross_reference_validation", "allowed": False, "rulesChecked": [],
     "violations": [], "metadata": {"status": "WARNING", "conflicts": 1},
     "service": "BoundaryEnforcer", "timestamp": {"$date": "2025-10-01T10:00:01.000Z"}},
    # 3 ContextPressureMonitor ELEVATED with allowed:true -> warn.
    {"_id": {"$oid": "65f1a0000000000000000003"}, "sessionId": "agent-2",
     "action": "context_pressure_analysis", "allowed": True,
     "metadata": {"pressure_level": "ELEVATED", "overall_pressure": 0.41},
     "timestamp": {"$date": {"$numberLong": "1759312802000"}}},
    # 4 MetacognitiveVerifier REQUIRE_REVIEW -> escalate, not executed; round from metadata.
    {"_id": {"$oid": "65f1a0000000000000000004"}, "sessionId": "agent-2",
     "action": "metacognitive_verification", "allowed": True,
     "metadata": {"decision": "REQUIRE_REVIEW", "confidence": 0.4, "round": 3},
     "durationMs": {"$numberInt": "12"}, "timestamp": {"$date": "2025-10-01T10:00:03Z"}},
    # 5 InstructionPersistenceClassifier: classifies only -> allow.
    {"_id": {"$oid": "65f1a0000000000000000005"}, "sessionId": "agent-3",
     "action": "instruction_classification", "allowed": False,
     "metadata": {"quadrant": "STRATEGIC"}, "timestamp": {"$date": "2025-10-01T10:00:04Z"}},
    # 6 violations as objects -> two block checks.
    {"_id": {"$oid": "65f1a0000000000000000006"}, "sessionId": "agent-3",
     "action": "boundary_enforcement", "allowed": False,
     "violations": [{"ruleId": "inst_017", "ruleText": "no absolute assurances",
                     "severity": "HIGH", "details": "guarantee"},
                    {"ruleId": "inst_018", "ruleText": "no unverified claims",
                     "severity": "MEDIUM", "details": {"phrase": "battle-tested"}}],
     "metadata": {"boundary": "VALUES"}, "timestamp": {"$date": "2025-10-01T10:00:05Z"}},
    # 7 bad: no timestamp.
    {"_id": {"$oid": "65f1a0000000000000000007"}, "sessionId": "agent-3",
     "action": "boundary_enforcement", "allowed": True},
    # 8 the same $oid as record 1: a duplicate.
    {"_id": {"$oid": OID_A}, "sessionId": "agent-1", "action": "boundary_enforcement",
     "allowed": False, "timestamp": {"$date": "2025-10-01T10:00:00.000Z"}},
]

JSONL_LINES = [
    json.dumps({"_id": {"$oid": "65f1b0000000000000000001"}, "sessionId": "agent-4",
                "action": "boundary_enforcement", "allowed": True, "rulesChecked": ["inst_016"],
                "violations": [], "timestamp": {"$date": "2025-10-02T09:00:00Z"}}),
    "",  # blank lines are not records
    '{"_id": {"$oid": "65f1b0000000000000000002"}, "sessionId": ',  # truncated: bad JSON
    "[1, 2]",  # not an object
    json.dumps({"_id": {"$oid": "65f1b0000000000000000003"}, "sessionId": "agent-4",
                "action": "context_pressure_analysis", "allowed": False,
                "metadata": {"pressure_level": "DANGEROUS"},
                "timestamp": {"$date": "2025-10-02T09:00:02Z"}}),
    json.dumps({"_id": {"$oid": "65f1b0000000000000000004"}, "sessionId": "agent-4",
                "action": "cross_reference_validation", "allowed": False,
                "metadata": {"status": "REJECTED"}, "violations": ["port 27017 != 27027"],
                "timestamp": "2025-10-02T09:00:03Z"}),
]

LEGACY_LINES = [
    json.dumps({"timestamp": "2025-10-03T08:00:00Z", "sessionId": "s-9",
                "action": "boundary_enforcement", "allowed": False,
                "violations": ["Values decision requires human approval"]}),
    json.dumps({"timestamp": "2025-10-03T08:00:01Z", "sessionId": "s-9",
                "action": "boundary_enforcement", "allowed": True, "violations": []}),
    json.dumps({"timestamp": "2025-10-03T08:00:02Z", "sessionId": "s-9",
                "action": "boundary_enforcement", "violations": []}),  # no verdict at all
    json.dumps({"timestamp": "2025-10-03T08:00:01Z", "sessionId": "s-9",
                "action": "boundary_enforcement", "allowed": True, "violations": []}),  # repeat
]

GENERIC_LINES = [
    json.dumps({"audit_id": "g-1", "timestamp": "2025-10-04T07:00:00Z", "service": "BashGuard",
                "decision": "ALLOW", "rule_id": "BASH-001", "context": {"sessionId": "ops-1"},
                "reason": "", "metadata": {}}),
    json.dumps({"audit_id": "g-2", "timestamp": "2025-10-04T07:00:01Z", "service": "BashGuard",
                "decision": "BLOCK", "rule_id": "BASH-002", "context": {"sessionId": "ops-1"},
                "reason": "rm -rf /", "metadata": {"severity": "CRITICAL"}}),
    json.dumps({"audit_id": "g-3", "timestamp": "2025-10-04T07:00:02Z", "service": "BashGuard",
                "decision": "BLOCKED", "rule_id": "BASH-002", "context": {"sessionId": "ops-2"},
                "reason": "curl | sh", "metadata": {}}),
    json.dumps({"audit_id": "g-4", "timestamp": "2025-10-04T07:00:03Z", "service": "BashGuard",
                "decision": "WARN", "rule_id": "BASH-003", "context": {"agent_id": "ops-2"},
                "reason": "sudo", "metadata": {}}),
    json.dumps({"audit_id": "g-5", "timestamp": "2025-10-04T07:00:04Z", "service": "BashGuard",
                "decision": "MAYBE", "rule_id": "BASH-004"}),  # unknown verdict
]


def write_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "array": folder / "auditLogs.json",
        "jsonl": folder / "auditLogs.jsonl",
        "legacy": folder / "decisions-2025-10-03.jsonl",
        "generic": folder / "generic-audit.jsonl",
    }
    files["array"].write_text(json.dumps(ARRAY_DOCS, indent=2))
    files["jsonl"].write_text("\n".join(JSONL_LINES) + "\n")
    files["legacy"].write_text("\n".join(LEGACY_LINES) + "\n")
    files["generic"].write_text("\n".join(GENERIC_LINES) + "\n")
    return files


def test_every_format_and_quirk_with_exact_counts(tmp_path: Path, store, writer, q) -> None:
    files = write_files(tmp_path / "logs")
    summary = ingest_audit([tmp_path / "logs"], writer_sink(writer, "audit-run"),
                           get_cursor=store.get_cursor)
    writer.flush()
    by_name = {Path(f.path).name: f for f in summary.files}
    arr, jl, leg, gen = (by_name[files[k].name] for k in ("array", "jsonl", "legacy", "generic"))
    assert (arr.format, arr.records, arr.decisions, arr.checks, arr.duplicates,
            arr.quarantined) == ("mongoexport-array", 8, 6, 7, 1, 1)
    assert (jl.format, jl.records, jl.decisions, jl.checks, jl.quarantined) == \
        ("jsonl", 5, 3, 3, 2)
    assert (leg.format, leg.records, leg.decisions, leg.duplicates, leg.quarantined) == \
        ("decisions-jsonl", 4, 2, 1, 1)
    assert (gen.records, gen.decisions, gen.quarantined) == (5, 4, 1)
    assert (summary.decisions, summary.quarantined) == (15, 5)
    assert summary.lines()[-1].startswith("total: 4 files, 22 records, 15 decisions")

    assert q("SELECT count(*) FROM decisions WHERE run_id = 'audit-run'")[0][0] == 15
    assert q("SELECT count(*) FROM checks")[0][0] == 7 + 3 + 2 + 4
    assert q("SELECT count(DISTINCT arm), min(arm), min(mode), max(mode) FROM decisions")[0] == \
        (1, "governed", "enforce", "enforce")

    def verdict(decision_id: str) -> tuple[object, ...]:
        return q("SELECT d.verdict, d.executed, d.agent_id, d.round, "
                 "string_agg(c.service || '/' || c.rule_id || '/' || c.raw_verdict, ',' "
                 "ORDER BY c.idx) FROM decisions d JOIN checks c USING (run_id, decision_id) "
                 "WHERE decision_id = ? GROUP BY ALL", decision_id)[0]

    assert verdict(f"audit-{OID_A}") == ("block", False, "agent-1", 0,
                                         "BoundaryEnforcer/inst_016/BLOCKED")
    # The service's own verdict decides, and the service comes from `action`.
    assert verdict("audit-65f1a0000000000000000002") == (
        "warn", True, "agent-1", 0, "CrossReferenceValidator//WARNING")
    assert verdict("audit-65f1a0000000000000000003")[:2] == ("warn", True)
    assert verdict("audit-65f1a0000000000000000004") == (
        "escalate", False, "agent-2", 3, "MetacognitiveVerifier//REQUIRE_REVIEW")
    assert verdict("audit-65f1a0000000000000000005")[0] == "allow"
    assert verdict("audit-65f1a0000000000000000006")[4] == (
        "BoundaryEnforcer/inst_017/BLOCKED,BoundaryEnforcer/inst_018/BLOCKED")
    assert verdict("audit-65f1b0000000000000000001")[4] == "BoundaryEnforcer/inst_016/ALLOWED"
    assert verdict("audit-65f1b0000000000000000003")[0] == "block"
    assert verdict("audit-65f1b0000000000000000004")[0] == "block"
    assert verdict("audit-g-3") == ("block", False, "ops-2", 0, "BashGuard/BASH-002/BLOCKED")
    assert verdict("audit-g-4")[:3] == ("warn", True, "ops-2")
    assert q("SELECT latency_us FROM decisions WHERE decision_id = "
             "'audit-65f1a0000000000000000004'")[0][0] == 12_000
    assert q("SELECT verdict, count(*) FROM decisions GROUP BY 1 ORDER BY 1") == [
        ("allow", 4), ("block", 7), ("escalate", 1), ("warn", 3)]

    reasons = sorted(r[0] for r in q("SELECT reason FROM quarantine"))
    assert len(reasons) == 5
    assert any(r.startswith(f"{files['jsonl']}:3: invalid JSON") for r in reasons)
    assert any(r.startswith(f"{files['jsonl']}:4: expected an object") for r in reasons)
    assert any(r.startswith(f"{files['legacy']}:3: allowed: missing") for r in reasons)
    assert any(r.startswith(f"{files['generic']}:5: decision: unknown verdict") for r in reasons)
    array_reason = next(r for r in reasons if r.startswith(str(files["array"])))
    assert array_reason.endswith("timestamp: missing")
    line = int(array_reason.split(":")[1])
    assert files["array"].read_text().splitlines()[line - 1].strip() == "{"

    # Re-ingesting stores nothing new: every file is recognised as unchanged.
    again = ingest_audit([tmp_path / "logs"], writer_sink(writer, "audit-run"),
                         get_cursor=store.get_cursor)
    writer.flush()
    assert [f.skipped for f in again.files] == ["unchanged since last ingest"] * 4
    assert q("SELECT count(*) FROM decisions")[0][0] == 15
    assert q("SELECT count(*) FROM quarantine")[0][0] == 5

    # An appended JSONL file: only the new line is read, with its real line number.
    with files["legacy"].open("a") as fh:
        fh.write(json.dumps({"timestamp": "2025-10-03T08:00:09Z", "sessionId": "s-9",
                             "action": "boundary_enforcement", "allowed": True}) + "\n")
        fh.write("oops\n")
    grown = ingest_audit([files["legacy"]], writer_sink(writer, "audit-run"),
                         get_cursor=store.get_cursor)
    writer.flush()
    assert (grown.records, grown.decisions, grown.quarantined) == (2, 1, 1)
    assert q("SELECT count(*) FROM decisions")[0][0] == 16
    assert q("SELECT count(*) FROM quarantine WHERE reason LIKE ?",
             f"{files['legacy']}:6: %")[0][0] == 1

    # Without a cursor (a different database, say) the decision ids still dedupe.
    ingest_audit([files["array"]], writer_sink(writer, "audit-run"))
    writer.flush()
    assert q("SELECT count(*) FROM decisions")[0][0] == 16


def test_defaults_and_deterministic_ids() -> None:
    doc = json.loads(LEGACY_LINES[0])
    a = decision_from_audit(doc, AuditDefaults(arm="ungoverned", mode="shadow", run_id="r"))
    b = decision_from_audit(dict(reversed(list(doc.items()))))
    assert a.decision_id == b.decision_id and a.decision_id.startswith("audit-")
    assert (a.arm, a.mode, a.executed, a.run_id) == ("ungoverned", "shadow", True, "r")
    assert a.checks[0].reason == "Values decision requires human approval"
    assert a.checks[0].rule_id == ""


def test_list_sink_sees_cursor_last(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    sink = ListSink()
    ingest_audit([files["generic"]], sink)
    assert sink.calls[-1].cursor is not None
    assert sink.calls[-1].cursor[0] == f"audit:{files['generic'].resolve()}"


def test_jsonl_lines_end_at_newline_only_and_bad_bytes_cost_one_line(tmp_path: Path) -> None:
    text = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg é"
    path = tmp_path / "generic.jsonl"
    good = [{"audit_id": f"u-{i}", "timestamp": "2025-10-04T07:00:00Z", "service": "S",
             "decision": "BLOCK", "rule_id": "R-1", "reason": text} for i in range(3)]
    path.write_bytes(b"".join([
        json.dumps(good[0], ensure_ascii=False).encode() + b"\r\n",
        b'{"audit_id": "bad-\xff", "decision": "ALLOW"}\n',
        json.dumps(good[1], ensure_ascii=False).encode() + b"\n",
        b"\n",
        json.dumps(good[2], ensure_ascii=False).encode(),  # no final newline
    ]))
    sink = ListSink()
    summary = ingest_audit([path], sink)
    assert (summary.records, summary.decisions, summary.quarantined) == (4, 3, 1)
    assert [d.checks[0].reason for d in sink.all.decisions] == [text] * 3
    (q,) = sink.all.quarantined
    assert q.reason == f"{path}:2: invalid UTF-8 at byte 18"
    assert q.raw == '{"audit_id": "bad-\\xff", "decision": "ALLOW"}'


TRICKY_DOCS = [
    {"audit_id": "t-1", "timestamp": "2025-10-04T07:00:00Z", "decision": "BLOCK",
     "reason": 'brackets ] } [ { and , commas and "quotes" and \\ backslashes \u2028 é'},
    {"audit_id": "t-2", "timestamp": "2025-10-04T07:00:01Z", "decision": "ALLOW",
     "metadata": {"nested": [[1, 2], {"a": [3, {"b": "]"}]}]}},
    {"audit_id": "t-3", "timestamp": "2025-10-04T07:00:02Z", "decision": "WARN"},
]


def array_text(docs: list[object], bad_middle: bool = False) -> str:
    parts = [json.dumps(d, indent=2, ensure_ascii=False) for d in docs]
    if bad_middle:  # balanced, but not JSON
        parts.insert(2, '{"audit_id": "broken", "decision": tru}')
    return "[\n" + ",\n".join(parts) + "\n]\n"


def test_a_json_array_is_read_element_by_element(tmp_path: Path, monkeypatch) -> None:
    from tractatus_watch.collectors import audit

    path = tmp_path / "auditLogs.json"
    path.write_text(array_text(TRICKY_DOCS, bad_middle=True))
    whole = ListSink()
    ingest_audit([path], whole)
    # Tiny chunks put a chunk boundary everywhere: in strings, escapes and between elements.
    monkeypatch.setattr(audit, "READ_CHUNK", 3)
    chunked = ListSink()
    summary = ingest_audit([path], chunked)
    lines = path.read_text().split("\n")
    broken = 1 + next(i for i, x in enumerate(lines) if '"broken"' in x)
    column = 1 + lines[broken - 1].index("tru}")
    for sink in (whole, chunked):
        assert [d.decision_id for d in sink.all.decisions] == ["audit-t-1", "audit-t-2",
                                                               "audit-t-3"]
        assert sink.all.decisions[0].checks[0].reason == TRICKY_DOCS[0]["reason"]
        assert [q.reason for q in sink.all.quarantined] == [
            f"{path}:{broken}: invalid JSON: Expecting value (column {column})"]
    assert (summary.records, summary.decisions, summary.quarantined) == (4, 3, 1)
    assert whole.calls[-1].cursor == chunked.calls[-1].cursor  # same size and digest


def test_a_too_big_array_element_or_an_open_array_is_quarantined(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from tractatus_watch.collectors import audit

    monkeypatch.setattr(audit, "MAX_RECORD_BYTES", 200)
    monkeypatch.setattr(audit, "READ_CHUNK", 64)
    big = {"audit_id": "big", "timestamp": "2025-10-04T07:00:00Z", "decision": "BLOCK",
           "reason": "x" * 5000}
    path = tmp_path / "auditLogs.json"
    path.write_text(array_text([TRICKY_DOCS[0], big, TRICKY_DOCS[2]]))
    sink = ListSink()
    ingest_audit([path], sink)
    assert [d.decision_id for d in sink.all.decisions] == ["audit-t-1", "audit-t-3"]
    (q,) = sink.all.quarantined
    assert q.reason.startswith(f"{path}:") and "record too long: " in q.reason
    assert q.raw.startswith('{\n  "audit_id": "big"') and len(q.raw) <= 201
    scanner = audit._ArrayScanner()
    data = path.read_bytes()
    for i in range(0, len(data), 64):
        list(scanner.feed(data[i:i + 64]))
    assert scanner.max_buffered <= 201  # never the big element, never the file
    monkeypatch.undo()  # the usual limit: an array cut short loses only its last element
    cut = tmp_path / "cut.json"
    cut.write_text(array_text(TRICKY_DOCS)[:-40])
    sink = ListSink()
    ingest_audit([cut], sink)
    assert len(sink.all.decisions) == 2
    assert [q.reason.split(": ", 1)[1] for q in sink.all.quarantined] == [
        "JSON array not closed"]


def test_a_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "auditLogs.jsonl"
    os.mkfifo(fifo)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(ingest_audit([fifo], ListSink())),
                         daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "ingest blocked on a FIFO"
    (summary,) = result
    assert [f.skipped for f in summary.files] == ["not a regular file"]  # type: ignore[attr-defined]
