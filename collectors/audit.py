"""The audit tap: Tractatus audit logs become decisions in the same tables as every other source.

Formats (see shared/reference/TRACTATUS.md, "Audit logs"):
- mongoexport of `auditLogs`: a JSON array, or one document a line; extended JSON (`$oid`,
  `$date` as ISO or `$numberLong` ms, `$numberInt`/`$numberLong`/`$numberDouble` numbers);
- legacy `decisions-YYYY-MM-DD.jsonl`: `timestamp, sessionId, action, allowed, violations[]`;
- the generic audit pattern: `audit_id, timestamp, service, decision, rule_id, context, reason,
  metadata`.

Choices where the logs are ambiguous (documented because the original is not):
- The service is attributed from `action`; the `service` field is often missing or wrongly
  defaulted to BoundaryEnforcer, so it is used only when `action` names no service.
- The service's own verdict decides: `metadata.status` (CrossReferenceValidator),
  `metadata.decision` (MetacognitiveVerifier), `metadata.pressure_level`
  (ContextPressureMonitor), then `metadata.enforcement_decision`, and only then `allowed`.
  A value that is not a verdict (e.g. status "completed") is skipped, not trusted.
- InstructionPersistenceClassifier only classifies: its records are `allow` checks.
- One check per violation (each carrying the record's verdict); a record without violations gets
  one check, named after the rule when exactly one rule was checked.
- executed: in enforce mode only allow and warn let the action run (escalate waits for a human).
- decision_id: `audit-<$oid>` or `audit-<audit_id>`, else a hash of the normalised record, so
  re-ingesting a file (or the same record in another export) stores nothing new; identical
  lines within a file are one decision (counted as duplicates).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Iterator, Mapping

from ..governance.events import (
    MODES, Action, Check, Decision, Mode, Quarantined, parse_ts,
)
from ..governance.verdicts import UnknownVerdict, Verdict, normalise
from .sink import Records, Sink

SERVICE_BY_ACTION: Final[dict[str, str]] = {
    "boundary_enforcement": "BoundaryEnforcer",
    "cross_reference_validation": "CrossReferenceValidator",
    "context_pressure_analysis": "ContextPressureMonitor",
    "metacognitive_verification": "MetacognitiveVerifier",
    "instruction_classification": "InstructionPersistenceClassifier",
}
CLASSIFIER: Final = "InstructionPersistenceClassifier"
# Which metadata field carries each service's own verdict, tried before the generic order.
OWN_VERDICT_FIELD: Final[dict[str, str]] = {
    "CrossReferenceValidator": "status",
    "MetacognitiveVerifier": "decision",
    "ContextPressureMonitor": "pressure_level",
    "BoundaryEnforcer": "enforcement_decision",
}
VERDICT_FIELDS: Final = ("status", "decision", "pressure_level", "enforcement_decision")
RULE_ID: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*[-_][A-Za-z0-9_-]*\d$")
DECISIONS_FILE: Final = re.compile(r"^decisions-\d{4}-\d{2}-\d{2}\.jsonl?$")
MAX_RAW: Final = 65_536
BATCH_RECORDS: Final = 5_000


class AuditRecordError(ValueError):
    pass


# --- extended JSON ------------------------------------------------------------------------------

def _unwrap(value: Any) -> Any:
    """Plain values from Mongo extended JSON (`$oid`, `$numberInt`, ...); `$date` stays for
    parse_ts, which reads both of its forms."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$oid":
                return str(inner)
            if key in ("$numberInt", "$numberLong"):
                return int(inner)
            if key in ("$numberDouble", "$numberDecimal"):
                return float(inner)
            if key == "$date":
                return value
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


# --- one record -> one decision -----------------------------------------------------------------

@dataclass(frozen=True)
class AuditDefaults:
    run_id: str = ""
    arm: str = "governed"
    mode: Mode = "enforce"


def _verdict_of(raw: Any) -> Verdict | None:
    if not isinstance(raw, str):
        return None
    try:
        return normalise(raw)
    except UnknownVerdict:
        return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def _round_of(*sources: Mapping[str, Any]) -> int:
    for src in sources:
        for key in ("round", "training_round", "step"):
            value = src.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return 0


def _choose(defaults: AuditDefaults, *sources: Mapping[str, Any]) -> tuple[str, Mode]:
    arm, mode = defaults.arm, defaults.mode
    for src in reversed(sources):  # the record itself wins over its metadata
        if isinstance(src.get("arm"), str) and src["arm"]:
            arm = src["arm"]
        if src.get("mode") in MODES:
            mode = src["mode"]
    return arm, mode


def _executed(mode: Mode, verdict: Verdict) -> bool:
    return True if mode != "enforce" else verdict in ("allow", "warn")


def _violation_check(v: Any, service: str, verdict: Verdict, raw: str, rules: list[str],
                     boundary: str | None) -> Check:
    if isinstance(v, Mapping):
        rule = v.get("ruleId") or v.get("rule_id") or v.get("id") or ""
        details = v.get("details")
        reason = details if isinstance(details, str) else _text(v.get("ruleText") or details)
        extra = {k: v[k] for k in ("ruleText", "details") if k in v and v[k] is not None}
        return Check(service=service, verdict=verdict, raw_verdict=raw, rule_id=str(rule),
                     boundary=boundary, severity=_text(v.get("severity")) or None,
                     reason=reason, extra=extra)
    text = _text(v)
    is_rule = text in rules or bool(RULE_ID.match(text))
    return Check(service=service, verdict=verdict, raw_verdict=raw,
                 rule_id=text if is_rule else "", boundary=boundary,
                 reason="" if is_rule else text)


def _audit_log_decision(doc: Mapping[str, Any], defaults: AuditDefaults) -> Decision:
    """An `auditLogs` document or a legacy decisions-*.jsonl line."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    action_name = doc.get("action") if isinstance(doc.get("action"), str) else ""
    given_service = doc.get("service") if isinstance(doc.get("service"), str) else ""
    service = SERVICE_BY_ACTION.get(action_name) or given_service or "unknown"
    if "timestamp" not in doc:
        raise AuditRecordError("timestamp: missing")
    ts = parse_ts(doc["timestamp"], "timestamp")

    verdict: Verdict | None = None
    raw = ""
    if service == CLASSIFIER:
        verdict, raw = "allow", "CLASSIFIED"
    else:
        fields = [OWN_VERDICT_FIELD[service]] if service in OWN_VERDICT_FIELD else []
        for name in fields + [f for f in VERDICT_FIELDS if f not in fields]:
            candidate = _verdict_of(meta.get(name))
            if candidate is not None:
                verdict, raw = candidate, str(meta[name]).strip().upper()
                break
        if verdict is None:
            allowed = doc.get("allowed")
            if not isinstance(allowed, bool):
                raise AuditRecordError("allowed: missing, and no verdict in metadata")
            verdict, raw = ("allow", "ALLOWED") if allowed else ("block", "BLOCKED")

    rules = [str(r) for r in doc.get("rulesChecked") or [] if isinstance(r, (str, int))]
    violations = doc.get("violations") or []
    if not isinstance(violations, list):
        violations = [violations]
    boundary = meta.get("boundary") if isinstance(meta.get("boundary"), str) else None
    checks = [_violation_check(v, service, verdict, raw, rules, boundary) for v in violations]
    if not checks:
        extra: dict[str, Any] = {"rules_checked": rules} if rules else {}
        checks = [Check(service=service, verdict=verdict, raw_verdict=raw,
                        rule_id=rules[0] if len(rules) == 1 else "", boundary=boundary,
                        extra=extra)]
    duration = doc.get("durationMs")
    latency_us = int(duration * 1000) if isinstance(duration, (int, float)) and not isinstance(
        duration, bool) and duration >= 0 else 0
    for c in checks:
        c.latency_us = latency_us // len(checks)
    arm, mode = _choose(defaults, meta, doc)
    oid = doc.get("_id")
    decision_id = f"audit-{oid}" if isinstance(oid, str) and oid else \
        f"audit-{hashlib.sha256(_canonical(doc).encode()).hexdigest()[:32]}"
    extra_d: dict[str, Any] = {"source": "tractatus-audit"}
    if given_service and given_service != service:
        extra_d["logged_service"] = given_service
    for key in ("domain", "allowed"):
        if key in doc:
            extra_d[key] = doc[key]
    if meta:
        extra_d["audit_metadata"] = meta
    summary = meta.get("description") or meta.get("action_description") or ""
    return Decision(
        decision_id=decision_id,
        agent_id=str(doc.get("sessionId") or meta.get("sessionId") or "unknown"),
        round=_round_of(doc, meta), arm=arm, mode=mode,
        action=Action(kind=action_name or "audit", summary=_text(summary)),
        checks=checks, verdict=verdict, executed=_executed(mode, verdict),
        latency_us=latency_us, ts=ts, run_id=defaults.run_id, extra=extra_d)


def _generic_decision(doc: Mapping[str, Any], defaults: AuditDefaults) -> Decision:
    """The generic audit pattern (`audit_id`, `decision` ALLOW|WARN|BLOCK|BLOCKED, ...)."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    ctx = doc.get("context") if isinstance(doc.get("context"), Mapping) else {}
    raw_value = doc.get("decision")
    verdict = _verdict_of(raw_value)
    if verdict is None:
        raise AuditRecordError(f"decision: unknown verdict {raw_value!r}")
    if "timestamp" not in doc:
        raise AuditRecordError("timestamp: missing")
    ts = parse_ts(doc["timestamp"], "timestamp")
    service = doc.get("service") if isinstance(doc.get("service"), str) and doc["service"] else \
        "unknown"
    raw = str(raw_value).strip().upper()
    check = Check(service=service, verdict=verdict, raw_verdict=raw,
                  rule_id=_text(doc.get("rule_id")), reason=_text(doc.get("reason")),
                  boundary=meta.get("boundary") if isinstance(meta.get("boundary"), str) else None,
                  severity=meta.get("severity") if isinstance(meta.get("severity"), str) else None)
    audit_id = doc.get("audit_id")
    decision_id = f"audit-{audit_id}" if isinstance(audit_id, str) and audit_id else \
        f"audit-{hashlib.sha256(_canonical(doc).encode()).hexdigest()[:32]}"
    arm, mode = _choose(defaults, meta, ctx, doc)
    agent = (ctx.get("sessionId") or ctx.get("session_id") or ctx.get("agent_id")
             or doc.get("sessionId") or meta.get("sessionId") or "unknown")
    kind = ctx.get("action") or ctx.get("action_type") or "audit"
    extra: dict[str, Any] = {"source": "tractatus-audit"}
    if ctx:
        extra["context"] = ctx
    if meta:
        extra["audit_metadata"] = meta
    return Decision(
        decision_id=decision_id, agent_id=str(agent), round=_round_of(doc, ctx, meta), arm=arm,
        mode=mode, action=Action(kind=_text(kind) or "audit"), checks=[check],
        verdict=verdict, executed=_executed(mode, verdict), latency_us=0, ts=ts,
        run_id=defaults.run_id, extra=extra)


def decision_from_audit(doc: Any, defaults: AuditDefaults = AuditDefaults()) -> Decision:
    """One audit record (any of the formats) as a Decision; raises AuditRecordError or
    ValidationError with a one-line reason."""
    if not isinstance(doc, Mapping):
        raise AuditRecordError(f"expected an object, got {type(doc).__name__}")
    plain = _unwrap(doc)
    if "decision" in plain and "allowed" not in plain and "action" not in plain:
        return _generic_decision(plain, defaults)
    if "action" in plain or "allowed" in plain:
        return _audit_log_decision(plain, defaults)
    raise AuditRecordError("not an audit record (no action, allowed or decision field)")


# --- files -------------------------------------------------------------------------------------

@dataclass
class FileSummary:
    path: str
    format: str = ""
    records: int = 0          # non-blank lines or array elements read
    decisions: int = 0        # distinct decisions produced
    checks: int = 0
    duplicates: int = 0       # records whose decision_id repeats one earlier in the file
    quarantined: int = 0
    skipped: str = ""         # why the file was not read ("unchanged", "missing", ...)

    def line(self) -> str:
        if self.skipped:
            return f"{self.path}: skipped ({self.skipped})"
        return (f"{self.path}: {self.format}, {self.records} records -> {self.decisions} decisions"
                f" ({self.checks} checks), {self.duplicates} duplicates, "
                f"{self.quarantined} quarantined")


@dataclass
class AuditSummary:
    files: list[FileSummary] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def decisions(self) -> int:
        return sum(f.decisions for f in self.files)

    @property
    def checks(self) -> int:
        return sum(f.checks for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    def lines(self) -> list[str]:
        out = [f.line() for f in self.files]
        out.append(f"total: {len(self.files)} files, {self.records} records, {self.decisions} "
                   f"decisions ({self.checks} checks) submitted, {self.duplicates} duplicates, "
                   f"{self.quarantined} quarantined")
        return out


def _items(text: str, start_line: int = 1) -> Iterator[tuple[int, str | None, Any, str]]:
    """(line number, error or None, value, raw text) for each record of a file's text: the
    elements of a JSON array, or one document a line."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _array_items(text)
        return
    for offset, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        lineno = start_line + offset
        try:
            yield lineno, None, json.loads(line), line
        except json.JSONDecodeError as exc:
            yield lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", None, line
        except RecursionError:
            yield lineno, "invalid JSON: nested too deeply", None, line


def _array_items(text: str) -> Iterator[tuple[int, str | None, Any, str]]:
    decoder = json.JSONDecoder()
    n = len(text)
    counted, line = 0, 1

    def line_at(pos: int) -> int:
        nonlocal counted, line
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(text.index("[") + 1)
    if pos < n and text[pos] == "]":
        return
    while True:
        if pos >= n:
            yield line_at(n), "JSON array not closed", None, ""
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            # An array cannot be resynchronised after a syntax error: the rest is one bad item.
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            yield line_at(pos), f"invalid JSON: {why}", None, text[pos:pos + MAX_RAW]
            return
        yield line_at(pos), None, value, text[pos:end]
        pos = skip(end)
        if pos < n and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            return
        yield line_at(pos), "JSON array: expected ',' or ']'", None, text[pos:pos + 200]
        return


def file_format(path: Path, text: str) -> str:
    if text.lstrip().startswith("["):
        return "mongoexport-array"
    if DECISIONS_FILE.match(path.name):
        return "decisions-jsonl"
    return "jsonl"


@dataclass
class FileCursor:
    """How far a file was read: its size and the digest of those bytes. A file that only grew
    resumes after them; a rewritten file is read again (its records dedupe by decision_id)."""

    size: int
    sha256: str

    def value(self) -> str:
        return json.dumps({"size": self.size, "sha256": self.sha256})

    @classmethod
    def parse(cls, value: str | None) -> FileCursor | None:
        if not value:
            return None
        try:
            d = json.loads(value)
            return cls(size=int(d["size"]), sha256=str(d["sha256"]))
        except (ValueError, KeyError, TypeError):
            return None


def source_name(path: Path) -> str:
    return f"audit:{path.resolve()}"


def read_audit_file(path: str | os.PathLike[str], sink: Sink,
                    defaults: AuditDefaults = AuditDefaults(),
                    committed: str | None = None) -> FileSummary:
    """Ingest one file into `sink`; `committed` is the file's stored cursor (None: read all).
    The cursor goes with the last records of the file, so a crash re-reads it whole and the
    decision ids make that a no-op."""
    p = Path(path)
    summary = FileSummary(path=str(p))
    source = source_name(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        summary.skipped = f"cannot read: {exc.strerror or exc}"
        return summary
    digest = hashlib.sha256(data).hexdigest()
    previous = FileCursor.parse(committed)
    start = 0
    if previous is not None:
        if previous.size == len(data) and previous.sha256 == digest:
            summary.skipped = "unchanged since last ingest"
            return summary
        if (previous.size < len(data) and data[previous.size - 1:previous.size] == b"\n"
                and hashlib.sha256(data[:previous.size]).hexdigest() == previous.sha256
                and not data.lstrip().startswith(b"[")):
            start = previous.size  # an appended JSONL file: read only the new lines
    text = data[start:].decode("utf-8", errors="replace")
    start_line = 1 + data[:start].count(b"\n")
    summary.format = file_format(p, data[:64].decode("utf-8", errors="replace"))
    seen: set[str] = set()
    out = Records()
    for lineno, error, value, raw in _items(text, start_line):
        summary.records += 1
        if error is None:
            try:
                decision = decision_from_audit(value, defaults)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                error = str(exc)  # AuditRecordError, ValidationError, or odd input
            except RecursionError:
                error = "nested too deeply to read"
            else:
                if decision.decision_id in seen:
                    summary.duplicates += 1
                    continue
                seen.add(decision.decision_id)
                out.decisions.append(decision)
                summary.decisions += 1
                summary.checks += len(decision.checks)
        if error is not None:
            summary.quarantined += 1
            out.quarantined.append(Quarantined(
                source=source, reason=f"{p}:{lineno}: {error}", raw=raw[:MAX_RAW],
                ts=time.time()))
        if len(out) >= BATCH_RECORDS:
            sink(out)
            out = Records()
    out.cursor = (source, FileCursor(size=len(data), sha256=digest).value())
    sink(out)
    return summary


def expand_paths(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Files named directly, and the *.json / *.jsonl files of named folders, in name order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file()
                              and q.suffix in (".json", ".jsonl", ".ndjson")))
        else:
            out.append(p)
    return out


def ingest_audit(paths: list[str | os.PathLike[str]], sink: Sink, *,
                 defaults: AuditDefaults = AuditDefaults(),
                 get_cursor: Any = None) -> AuditSummary:
    """Ingest audit files; `get_cursor(source) -> str | None` (e.g. `store.get_cursor`) lets a
    re-run skip what is already stored."""
    summary = AuditSummary()
    for p in expand_paths(paths):
        if not p.exists():
            summary.files.append(FileSummary(path=str(p), skipped="no such file"))
            continue
        committed = get_cursor(source_name(p)) if get_cursor is not None else None
        summary.files.append(read_audit_file(p, sink, defaults, committed))
    return summary
