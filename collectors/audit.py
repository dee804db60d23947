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

Files are streamed, never held whole: JSONL is read line by line, lines ending at b"\n" only
(U+2028, U+2029, U+0085 and friends are text, not line breaks); a JSON array is read element by
element (`_ArrayScanner`), so a big mongoexport --jsonArray costs one element of memory. A line
or element over MAX_RECORD_BYTES (8 MiB) is quarantined with its length and a head, a line that
is not valid UTF-8 is quarantined with its position (bad bytes shown as \\xNN), and reading
goes on. A path that is not a regular file (a FIFO, a device) is skipped, never opened blocking.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Final, Iterator, Mapping

from ..records.events import (
    MODES, Action, Check, Decision, Mode, Quarantined, parse_ts,
)
from ..records.verdicts import UnknownVerdict, Verdict, normalise
from .lines import HEAD_BYTES, MAX_LINE_BYTES, LineReader, decode
from ..records.delivery import Records, Sink

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
MAX_RECORD_BYTES: Final = MAX_LINE_BYTES  # one JSONL line or one array element
READ_CHUNK: Final = 1024 * 1024


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


def _mapping(value: Any) -> Mapping[str, Any]:
    """The value when it is an object, else an empty one (a field of the wrong type is absent)."""
    return value if isinstance(value, Mapping) else {}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


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
    meta = _mapping(doc.get("metadata"))
    action_name = _string(doc.get("action"))
    given_service = _string(doc.get("service"))
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
    meta = _mapping(doc.get("metadata"))
    ctx = _mapping(doc.get("context"))
    raw_value = doc.get("decision")
    verdict = _verdict_of(raw_value)
    if verdict is None:
        raise AuditRecordError(f"decision: unknown verdict {raw_value!r}")
    if "timestamp" not in doc:
        raise AuditRecordError("timestamp: missing")
    ts = parse_ts(doc["timestamp"], "timestamp")
    service = _string(doc.get("service")) or "unknown"
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


Item = tuple[int, str | None, Any, str]  # (line, error or None, value, raw text)


class _Chunks:
    """The first `size` bytes of a file from `start`, in chunks, each seen by `on_bytes`."""

    def __init__(self, fh: BinaryIO, start: int, size: int,
                 on_bytes: Callable[[bytes], object]) -> None:
        self.fh, self.pos, self.size, self.on_bytes = fh, start, size, on_bytes
        fh.seek(start)

    def __iter__(self) -> Iterator[bytes]:
        while self.pos < self.size:
            chunk = self.fh.read(min(READ_CHUNK, self.size - self.pos))
            if not chunk:
                return  # the file shrank meanwhile
            self.pos += len(chunk)
            self.on_bytes(chunk)
            yield chunk

    def drain(self) -> None:
        for _ in self:
            pass


def _parse(data: bytes, length: int, too_long: bool) -> tuple[str | None, Any, str]:
    """(error or None, value, raw text) of one record's bytes."""
    text, error = decode(data)
    if too_long:
        return f"record too long: {length} bytes (limit {MAX_RECORD_BYTES})", None, text
    if error is not None:
        return error, None, text
    try:
        return None, json.loads(text), text
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})", None, text
    except RecursionError:
        return "invalid JSON: nested too deeply", None, text
    except ValueError as exc:  # too many digits
        return f"invalid JSON: {exc}", None, text


def _line_items(fh: BinaryIO, start: int, start_line: int, size: int,
                on_bytes: Callable[[bytes], object]) -> Iterator[Item]:
    """One document a line (lines end at b"\\n" only; blank lines are not records)."""
    for line in LineReader(fh, max_line=MAX_RECORD_BYTES, offset=start, number=start_line,
                           limit=size, on_bytes=on_bytes):
        if line.too_long or line.data.strip():
            yield (line.number, *_parse(line.data, line.length, line.too_long))


_OUTSIDE: Final = re.compile(rb'[\[\]{}",]')
_INSIDE: Final = re.compile(rb'["\\]')
_WS: Final = frozenset(b" \t\r\n")


class _ArrayScanner:
    """The elements of one JSON array, found incrementally: an element ends at a `,` or `]`
    outside strings and brackets; it is then parsed on its own, so memory holds one element
    (at most MAX_RECORD_BYTES: a bigger one is reported with its head and skipped, unbuffered).
    Because elements are delimited before they are parsed, a malformed element costs only
    itself, as long as its brackets and quotes balance."""

    def __init__(self) -> None:
        self.state = "start"  # start -> between <-> item -> done
        self.line = 1
        self.depth = 0
        self.in_string = self.escape = False
        self.pieces: list[bytes] = []
        self.size = 0
        self.item_line = 0
        self.max_buffered = 0

    def feed(self, chunk: bytes) -> Iterator[Item]:
        i, n, counted = 0, len(chunk), 0
        while i < n and self.state != "done":
            if self.state in ("start", "between"):
                while i < n and chunk[i] in _WS:
                    i += 1
                if i == n:
                    break
                if self.state == "start":
                    if chunk[i] != ord("["):
                        yield self.line, "not a JSON array", None, ""
                        self.state = "done"
                        break
                    self.state, i = "between", i + 1
                    continue
                if chunk[i] == ord("]"):
                    self.state = "done"
                    break
                self.line += chunk.count(b"\n", counted, i)
                counted = i
                self.item_line, self.pieces, self.size, self.depth = self.line, [], 0, 0
                self.state = "item"
            end = self._scan(chunk, i)
            self._keep(chunk[i:n if end is None else end])
            if end is None:
                break
            yield self._item()
            self.state = "between" if chunk[end] == ord(",") else "done"
            i = end + 1
        self.line += chunk.count(b"\n", counted, n)

    def _scan(self, chunk: bytes, j: int) -> int | None:
        """Where the current element ends in `chunk` (its `,` or `]`), or None."""
        n = len(chunk)
        while j < n:
            if self.escape:
                self.escape, j = False, j + 1
                continue
            if self.in_string:
                m = _INSIDE.search(chunk, j)
                if m is None:
                    return None
                j = m.start() + 1
                if chunk[m.start()] == ord("\\"):
                    self.escape = True
                else:
                    self.in_string = False
                continue
            m = _OUTSIDE.search(chunk, j)
            if m is None:
                return None
            j, c = m.start(), chunk[m.start()]
            if c == ord('"'):
                self.in_string = True
            elif c in b"[{":
                self.depth += 1
            elif self.depth == 0 and c in b",]":
                return j
            elif c in b"]}":
                self.depth = max(0, self.depth - 1)
            j += 1
        return None

    def _keep(self, piece: bytes) -> None:
        if self.size <= MAX_RECORD_BYTES:  # past the limit only the head is kept
            room = MAX_RECORD_BYTES + 1 - sum(len(p) for p in self.pieces)
            self.pieces.append(piece[:max(0, room)])
            self.max_buffered = max(self.max_buffered, sum(len(p) for p in self.pieces))
        self.size += len(piece)

    def _item(self) -> Item:
        data = b"".join(self.pieces).strip()
        self.pieces = []
        too_long = self.size > MAX_RECORD_BYTES
        return (self.item_line, *_parse(data[:HEAD_BYTES] if too_long else data, self.size,
                                        too_long))

    def close(self) -> Iterator[Item]:
        """What is left at the end of the file."""
        if self.state == "item":
            raw = decode(b"".join(self.pieces)[:HEAD_BYTES])[0]
            yield self.item_line, "JSON array not closed", None, raw
        elif self.state in ("start", "between"):
            yield self.line, "JSON array not closed", None, ""


def _array_items(chunks: _Chunks) -> Iterator[Item]:
    scanner = _ArrayScanner()
    for chunk in chunks:
        yield from scanner.feed(chunk)
        if scanner.state == "done":
            return
    yield from scanner.close()


def _open_regular(path: Path) -> tuple[BinaryIO | None, str]:
    """The file opened for reading (never blocking on a FIFO), or None and why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, "not a regular file"
    return os.fdopen(fd, "rb", buffering=READ_CHUNK), ""


def _head(fh: BinaryIO) -> bytes:
    """Up to 64 bytes from the first non-whitespace byte (format detection)."""
    pos = 0
    while True:
        chunk = os.pread(fh.fileno(), READ_CHUNK, pos)
        if not chunk:
            return b""
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:64] if len(stripped) >= 64 else \
                stripped + os.pread(fh.fileno(), 64, pos + len(chunk))[:64 - len(stripped)]
        pos += len(chunk)


def _hash_prefix(fh: BinaryIO, size: int, digest: Any) -> tuple[int, bool]:
    """Hash the first `size` bytes into `digest`; (newlines in them, whether they end in one)."""
    newlines, last = 0, b""
    for chunk in _Chunks(fh, 0, size, digest.update):
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    return newlines, last == b"\n"


def read_audit_file(path: str | os.PathLike[str], sink: Sink,
                    defaults: AuditDefaults = AuditDefaults(),
                    committed: str | None = None) -> FileSummary:
    """Ingest one file into `sink`; `committed` is the file's stored cursor (None: read all).
    The file is streamed (see the module docstring); what is read is the size it had when it
    was opened. The cursor goes with the last records of the file, so a crash re-reads it whole
    and the decision ids make that a no-op."""
    p = Path(path)
    summary = FileSummary(path=str(p))
    fh, why = _open_regular(p)
    if fh is None:
        summary.skipped = why
        return summary
    with fh:
        return _read_open_file(p, fh, sink, defaults, committed, summary)


def _read_open_file(p: Path, fh: BinaryIO, sink: Sink, defaults: AuditDefaults,
                    committed: str | None, summary: FileSummary) -> FileSummary:
    source = source_name(p)
    size = os.fstat(fh.fileno()).st_size
    head = _head(fh)
    is_array = head.startswith(b"[")
    digest = hashlib.sha256()
    previous = FileCursor.parse(committed)
    start, start_line = 0, 1
    if previous is not None and previous.size == size:
        _hash_prefix(fh, size, digest)
        if digest.hexdigest() == previous.sha256:
            summary.skipped = "unchanged since last ingest"
            return summary
        digest = hashlib.sha256()
    elif previous is not None and 0 < previous.size < size and not is_array:
        newlines, ends_line = _hash_prefix(fh, previous.size, digest)
        if ends_line and digest.copy().hexdigest() == previous.sha256:
            start, start_line = previous.size, 1 + newlines  # appended: only the new lines
        else:
            digest = hashlib.sha256()
    summary.format = file_format(p, head.decode("utf-8", errors="replace"))
    chunks = _Chunks(fh, start, size, digest.update)
    items = _array_items(chunks) if is_array else \
        _line_items(fh, start, start_line, size, digest.update)  # fh is at `start`
    seen: set[str] = set()
    out = Records()
    for lineno, error, value, raw in items:
        summary.records += 1
        if error is None:
            try:
                decision = decision_from_audit(value, defaults)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                error = str(exc) or type(exc).__name__  # AuditRecordError, ValidationError, ...
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
    if is_array:
        chunks.drain()  # whatever follows the array still belongs to the digest
    out.cursor = (source, FileCursor(size=size, sha256=digest.hexdigest()).value())
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
