"""The spool format, shared by the SDK's writer (governance/spool_writer.py) and the collectors'
reader (collectors/spool_reader.py): a folder of append-only NDJSON segment files.

A segment is written under a hidden temporary name (`.seg-….ndjson.tmp`), fsynced, and renamed
to `seg-<time_ns, 20 digits>-<pid>-<seq, 6 digits>.ndjson` when it is complete, so a reader that
lists `seg-*.ndjson` never sees half a file.

Each line is one record:

    {"type": "decision", "data": <tractatus.decision/1 payload>}
    {"type": "reward",   "data": {"reward_id", "rollout_id", "agent_id", "round", "arm",
                                  "value", "ts", "run_id"}}
    {"type": "rollout",  "data": {"rollout_id", "status", "ts", ...}}
    {"type": "event",    "data": {"event_id", "event_type", "ts", "rollout_id", "payload",
                                  "run_id"}}
    {"type": "run",      "data": {"run_id", "event": "started" | "ended", "ts", "source",
                                  "detail"}}
    {"type": "witnessed", "data": {"witness_id", "rollout_id", "position", "idx", "tool",
                                   "digest", "ts", "run_id", "agent_id", "arm", "round"}}

A `witnessed` record is one tool call of a model response (records/witness.py). A `run` record
is a run's lifecycle (the `run_events` table): the hooks file writes one `ended`
when the trainer process exits. Its `run_id` must be present; "" stands for the collector's
run, as an empty run_id does in the other records.

Lines end with b"\n" and contain no other line break: besides the control characters JSON
always escapes, U+0085, U+2028 and U+2029 are written as `\\u` escapes (they are valid in a JSON
string, but `str.splitlines()` and some JavaScript-era tools split on them). A string holding a
lone surrogate (which UTF-8 cannot encode) is written with every non-ASCII character escaped,
so the record still reaches the collector, which decides whether to store or quarantine it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Final

from .delivery import Records
from .witness import WitnessedAction
from .events import (
    Decision, Event, Quarantined, Reward, RolloutTransition, RunEvent, ValidationError, parse_ts,
)

RECORD_TYPES: Final = ("decision", "reward", "rollout", "event", "run", "witnessed")
SEGMENT_GLOB: Final = "seg-*.ndjson"
# Line breaks that json.dumps(ensure_ascii=False) leaves raw (it escapes U+0000-U+001F itself).
_RAW_BREAKS: Final = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def segment_name(time_ns: int, pid: int, seq: int) -> str:
    return f"seg-{time_ns:020d}-{pid}-{seq:06d}.ndjson"


def encode_line(record_type: str, data: Any) -> bytes:
    """One spool line: compact JSON, UTF-8, no line break but the final b"\n"."""
    record = {"type": record_type, "data": data}
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
    for raw, escaped in _RAW_BREAKS.items():
        if raw in text:  # only possible inside a string, where the escape means the same
            text = text.replace(raw, escaped)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: ASCII JSON carries it as an escape
        return json.dumps(record, separators=(",", ":"), default=str).encode("ascii") + b"\n"


# A record a producer already judged bad travels as an event of this type (the spool has no
# quarantine record type) and is stored in quarantine, not in events.
QUARANTINE_EVENT: Final = "tractatus_watch.quarantine"
SEGMENT: Final = re.compile(r"^seg-(?P<ns>\d{20})-(?P<pid>\d+)-(?P<seq>\d{6})\.ndjson$")
MAX_RAW: Final = 65_536


def segment_time(name: str) -> float | None:
    m = SEGMENT.match(name)
    return int(m["ns"]) / 1e9 if m else None


def _event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise ValidationError("event", "expected an object")
    for key in ("event_id", "event_type"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValidationError(key, "missing")
    return Event(event_id=data["event_id"], event_type=data["event_type"],
                 ts=parse_ts(data.get("ts")), rollout_id=str(data.get("rollout_id") or ""),
                 payload=data.get("payload"), run_id=str(data.get("run_id") or ""))


def parse_line(obj: Any, out: Records, where: str, source: str, raw: str) -> None:
    """Append the records of one spool line to `out`; bad lines (or bad items of a packed
    `decisions` line) go to quarantine with `where` (segment:line)."""

    def bad(reason: str, text: str = raw) -> None:
        out.quarantined.append(Quarantined(source=source, reason=f"{where}: {reason}",
                                           raw=text[:MAX_RAW], ts=time.time()))

    if not isinstance(obj, dict):
        bad("expected an object")
        return
    kind, data = obj.get("type"), obj.get("data")
    try:
        if kind == "decision":
            out.decisions.append(Decision.from_payload(data))
        elif kind == "decisions":
            if not isinstance(data, list):
                raise ValidationError("data", "expected a list of decisions")
            for i, item in enumerate(data):
                try:
                    out.decisions.append(Decision.from_payload(item))
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                    bad(f"data[{i}].{exc}", json.dumps(item, default=str))
        elif kind == "reward":
            out.rewards.append(Reward.from_payload(data))
        elif kind == "rollout":
            out.rollouts.append(RolloutTransition.from_payload(data))
        elif kind == "run":
            out.run_events.append(RunEvent.from_payload(data))
        elif kind == "witnessed":
            out.witnessed.append(WitnessedAction.from_payload(data))
        elif kind == "event" and isinstance(data, dict) and \
                data.get("event_type") == QUARANTINE_EVENT:
            payload = data.get("payload")
            p = payload if isinstance(payload, dict) else {}
            out.quarantined.append(Quarantined(
                source=str(p.get("source") or source), reason=str(p.get("reason") or where),
                raw=str(p.get("raw") or "")[:MAX_RAW], ts=time.time()))
        elif kind == "event":
            out.events.append(_event(data))
        else:
            bad(f"type: unknown record type {kind!r}")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # Odd input never stops the reader: whatever fails to parse is quarantined.
        bad(str(exc) or type(exc).__name__)
