"""A batch of records as Arrow tables, the unit the writer commits.

Arrow columns match the DDL in schema.py by name. Collectors build batches from records
(`Batch.from_records`); bulk producers (benchmarks, migrations) may hand Arrow tables directly.

Turning records into rows checks every record on its own, so one bad value costs its record, not
the batch: a record that fails becomes a `Rejected` entry (reason and raw JSON), which the writer
stores in `quarantine` with the source its cursor names. A decision and its checks are one unit:
a bad check rejects its decision. The limits, per column (also in README.md, "Storage"):

- integers by column width: `round` INTEGER, `n_checks`/`idx` SMALLINT; at most `MAX_CHECKS`
  (1,000) checks per decision; `latency_us` 0..`MAX_LATENCY_US` (10**12 us, about 11.6 days), so
  the rollups' BIGINT sums cannot overflow;
- timestamps 1970-01-01 .. 9999-12-31 (`MIN_TS_US`..`MAX_TS_US`): what Python's datetime (every
  reader's conversion) holds; DuckDB TIMESTAMP and Arrow timestamp[us] hold more;
- floats (reward `value`, `duration_s`) finite, at most `MAX_ABS_FLOAT` (1e15) in magnitude, so
  the rollups' sums of squares stay finite; booleans are booleans;
- strings valid Unicode (an unpaired surrogate cannot be stored as UTF-8; inside JSON columns it
  is refused too, since DuckDB's JSON functions reject it): ids and names at most
  `MAX_NAME_CHARS` (1,024), free text (action summary, check reason) `MAX_TEXT_CHARS` (65,536),
  JSON columns (`extra`, rollout `metadata`) `MAX_JSON_CHARS` (1 MiB of text); JSON nested too
  deeply to serialise is refused;
- event payloads over `MAX_EVENT_PAYLOAD_BYTES` keep a head only (`trim_payload`), as before;
- quarantine rows are never refused: text is escaped (`\\ud800`) and cut to
  `MAX_QUARANTINE_RAW` / `MAX_QUARANTINE_REASON` characters, a bad `ts` becomes the current time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..records.events import (
    MODES, RUN_EVENTS, Decision, Event, Quarantined, Reward, RolloutTransition, RunEvent,
)
from ..records.verdicts import VERDICTS
from ..records.witness import WitnessedAction
from .tables import BATCH_TABLES, EVENT_TABLES, SIDE_TABLES, arrow_schema, not_null, required

MAX_EVENT_PAYLOAD_BYTES: Final = 16_384  # model_request bodies run ~100 KB; keep a head only
MAX_NAME_CHARS: Final = 1_024
MAX_TEXT_CHARS: Final = 65_536
MAX_JSON_CHARS: Final = 1_048_576
MAX_CHECKS: Final = 1_000
MAX_LATENCY_US: Final = 10**12
MAX_ABS_FLOAT: Final = 1e15
MIN_TS_US: Final = 0                              # 1970-01-01T00:00:00
MAX_TS_US: Final = 253_402_300_799_999_999        # 9999-12-31T23:59:59.999999
MAX_QUARANTINE_RAW: Final = 1_048_576
MAX_QUARANTINE_REASON: Final = 4_096
MAX_QUARANTINE_SOURCE: Final = 1_024

# Derived from the table spec (storage/tables.py), the one description of the columns.
ARROW_SCHEMAS: Final[dict[str, pa.Schema]] = {t: arrow_schema(t) for t in BATCH_TABLES}
# Columns that must be non-empty for a row to be stored, and the NOT NULL ones, per table.
REQUIRED: Final[dict[str, tuple[str, ...]]] = {t: required(t)
                                               for t in (*EVENT_TABLES, *SIDE_TABLES)}
NOT_NULL: Final[dict[str, tuple[str, ...]]] = {t: not_null(t)
                                               for t in (*EVENT_TABLES, *SIDE_TABLES)}
VOCAB: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("decisions", "verdict"): VERDICTS, ("decisions", "mode"): MODES,
    ("checks", "verdict"): VERDICTS, ("run_events", "event"): RUN_EVENTS,
}
TEXT_COLUMNS: Final = frozenset({("decisions", "action_summary"), ("checks", "reason"),
                                 ("run_events", "detail")})
JSON_COLUMNS: Final = frozenset({("decisions", "extra"), ("checks", "extra"),
                                 ("rollouts", "metadata"), ("events", "payload")})
# Integer columns whose range is tighter than their width: (low, high).
INT_CAPS: Final[dict[tuple[str, str], tuple[int, int]]] = {
    ("decisions", "n_checks"): (0, MAX_CHECKS), ("checks", "idx"): (0, MAX_CHECKS - 1),
    ("decisions", "latency_us"): (0, MAX_LATENCY_US),
    ("checks", "latency_us"): (0, MAX_LATENCY_US),
}
SQL_INT: Final = {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}


class RowError(ValueError):
    """A value that cannot be stored; the message is `table.column: why`."""


@dataclass(slots=True)
class Rejected:
    """A record that failed validation: stored in quarantine, under its item's source."""

    reason: str
    raw: str


@dataclass
class Batch:
    tables: dict[str, pa.Table] = field(default_factory=dict)
    # Records refused while the batch was built (quarantined by the writer).
    rejected: list[Rejected] = field(default_factory=list)
    # Further copies of decision ids `tables` already holds, in order (copy 2, copy 3, ...):
    # the writer stores each after the one before, so the first copy wins and a later one is a
    # duplicate or a conflict, exactly as if it came in a later commit.
    later: list[Batch] = field(default_factory=list)
    # Built by `from_records`: every row already passed the column checks, the writer does not
    # check them again.
    checked: bool = False

    @property
    def rows(self) -> int:
        return (sum(t.num_rows for t in self.tables.values()) + len(self.rejected)
                + sum(b.rows for b in self.later))

    @classmethod
    def from_records(
        cls, *, run_id: str = "default",
        decisions: Iterable[Decision] = (), rewards: Iterable[Reward] = (),
        rollouts: Iterable[RolloutTransition] = (), events: Iterable[Event] = (),
        run_events: Iterable[RunEvent] = (), quarantined: Iterable[Quarantined] = (),
        witnessed: Iterable[WitnessedAction] = (),
    ) -> Batch:
        """Arrow tables from records; a record with an empty run_id takes `run_id`. Records that
        cannot be stored become `rejected` entries; the rest always builds."""
        rejected: list[Rejected] = []
        announced: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        first, copies = _decision_part(decisions, run_id, rejected, announced)
        tables: dict[str, pa.Table] = {k: t for k, t in first.items() if t.num_rows}
        if announced:
            rows = list(announced.values())
            sets, wrong = _vet("rulesets", rows)
            if sets is None:  # e.g. a rule id too long to store: that set stays unknown
                names = ARROW_SCHEMAS["rulesets"].names
                rejected.extend(Rejected(f"{why} (rule set {show_id(rows[i][2])})",
                                         _raw_text(dict(zip(names, rows[i]))))
                                for i, why in wrong.items())
                rows = [r for i, r in enumerate(rows) if i not in wrong]
                sets = rows_table("rulesets", rows) if rows else None
            if sets is not None and sets.num_rows:
                tables["rulesets"] = sets
        row_builders: tuple[tuple[str, Callable[[Any, str], Any], Iterable[Any], str, str], ...] = (
                ("rewards", _reward_row, rewards, "reward", "reward_id"),
                ("rollouts", _rollout_row, rollouts, "rollout", "rollout_id"),
                ("events", _event_row, events, "event", "event_id"),
                ("witnessed", _witnessed_row, witnessed, "witnessed action", "witness_id"),
                ("run_events", _run_record_row, run_events, "run event", "run_id"))
        for name, build, records, what, ident in row_builders:
            recs, rows = [], []
            for rec in records:
                try:
                    rows.append(build(rec, run_id))
                    recs.append(rec)
                except Exception as exc:
                    rejected.append(_reject(exc, what, getattr(rec, ident, None),
                                            _raw_text(_fields(rec))))
            table, wrong = _vet(name, rows)
            if table is not None:
                if table.num_rows:
                    tables[name] = table
                continue
            for i, reason in wrong.items():
                rejected.append(Rejected(f"{reason} ({what} {show_id(getattr(recs[i], ident))})",
                                         _raw_text(_fields(recs[i]))))
            rows = [r for i, r in enumerate(rows) if i not in wrong]
            if rows:
                tables[name] = _safe_table(name, _transpose(name, rows), rejected, what, ident)
        qrows = [quarantine_row(q.source, q.reason, q.raw, q.ts) for q in quarantined]
        if qrows:
            tables["quarantine"] = rows_table("quarantine", qrows)
        later = [cls(_decision_tables(*c, rejected), checked=True) for c in copies]
        return cls(tables, rejected, later, checked=True)


def run_event_batch(run_ids: Iterable[str], event: str, *, source: str,
                    detail: str | None = None, ts: float | None = None) -> Batch:
    """A batch recording that runs started or ended (the `run_events` table)."""
    if event not in RUN_EVENTS:
        raise ValueError(f"run event: expected started or ended, got {event!r}")
    at = _us(time.time() if ts is None else ts)
    rows = [_run_event_row(run, event, at, source, detail)
            for run in dict.fromkeys(r for r in run_ids if r)]
    return Batch({"run_events": rows_table("run_events", rows)} if rows else {}, checked=True)


def _run_event_row(run_id: str, event: str, ts_us: int, source: str | None,
                   detail: str | None) -> tuple[Any, ...]:
    """A `run_events` row; its free text cleaned so that it can always be stored."""
    return (run_id, event, ts_us, None if not source else clean_text(source, MAX_NAME_CHARS),
            None if detail is None else clean_text(detail, MAX_TEXT_CHARS))


def _decision_part(decisions: Iterable[Decision], run_id: str, rejected: list[Rejected],
                   announced: dict[tuple[Any, ...], tuple[Any, ...]]
                   ) -> tuple[dict[str, pa.Table], list[tuple[list[Any], list[Any]]]]:
    """The decisions' and checks' tables (first copy of each id), and the rows of the later
    copies; records that cannot be stored go to `rejected`, with their checks (a unit). The rule
    sets the decisions announce go to `announced` (one row per run, set and rule, first seen)."""
    kept: list[Decision] = []
    drows: list[tuple[Any, ...]] = []
    crows: list[tuple[Any, ...]] = []
    owner: list[int] = []  # the decision row of each check row
    for dec in decisions:
        if getattr(dec, "rulesets", None):
            _announced_rows(dec, run_id, announced)
        try:
            drow, mine = _decision_rows(dec, run_id)
        except Exception as exc:  # whatever a record holds, it costs only that record
            rejected.append(_reject(exc, "decision", getattr(dec, "decision_id", None),
                                    _decision_raw(dec)))
            continue
        owner.extend([len(drows)] * len(mine))
        drows.append(drow)
        kept.append(dec)
        crows.extend(mine)
    dtable, bad = _vet("decisions", drows)
    ctable, cbad = _vet("checks", crows)
    for j, reason in cbad.items():
        bad.setdefault(owner[j], f"{reason} (check {crows[j][2]})")  # a unit
    # copies[k]: (decision rows, check rows) of the (k+1)-th copy of each decision id.
    copies: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
    if dtable is not None and ctable is not None and not bad and _unique_ids(dtable):
        return {"decisions": dtable, "checks": ctable}, []  # the common case
    seen: dict[tuple[str, str], int] = {}
    j = 0
    for i, drow in enumerate(drows):
        start, j = j, j + drow[15]  # n_checks: this decision's check rows
        if i in bad:
            rejected.append(Rejected(f"{bad[i]} (decision {show_id(drow[1])})",
                                     _decision_raw(kept[i])))
            continue
        key = (drow[0], drow[1])
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(copies):
            copies.append(([], []))
        copies[k][0].append(drow)
        copies[k][1].extend(crows[start:j])
    first = _decision_tables(*copies[0], rejected) if copies else {}
    return first, copies[1:]


# --- validation -----------------------------------------------------------------------------

def _us(ts: float) -> int:
    return int(round(ts * 1_000_000))


def _show_int(v: int) -> str:
    return str(v) if v.bit_length() <= 256 else f"an integer of {v.bit_length()} bits"


def _checker(table: str, f: pa.Field) -> Callable[[Any], str | None]:
    """A function returning why a value cannot go into column `f` of `table`, or None."""
    col = f.name
    nullable = col not in NOT_NULL.get(table, ())
    required = col in REQUIRED.get(table, ())
    allowed = VOCAB.get((table, col))
    t = f.type

    def missing(v: Any) -> str | None:
        if v is None:
            return None if nullable else "missing"
        return None

    if pa.types.is_integer(t):
        width = t.bit_width
        lo, hi = INT_CAPS.get((table, col), (-(1 << (width - 1)), (1 << (width - 1)) - 1))
        what = (f"for {SQL_INT[width]}" if (table, col) not in INT_CAPS
                else f"({lo}..{hi})")

        def check_int(v: Any) -> str | None:
            if v is None:
                return missing(v)
            if isinstance(v, bool) or not isinstance(v, int):
                return f"expected an integer, got {type(v).__name__}"
            if v < lo or v > hi:
                return f"{_show_int(v)} out of range {what}"
            return None
        return check_int
    if pa.types.is_boolean(t):
        def check_bool(v: Any) -> str | None:
            if v is None:
                return missing(v)
            return None if isinstance(v, bool) \
                else f"expected true or false, got {type(v).__name__}"
        return check_bool
    if pa.types.is_floating(t):
        def check_float(v: Any) -> str | None:
            if v is None:
                return missing(v)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"expected a number, got {type(v).__name__}"
            try:
                fine = math.isfinite(v) and abs(v) <= MAX_ABS_FLOAT
            except OverflowError:  # an int too large for a float
                fine = False
            return None if fine else f"{v if isinstance(v, float) else _show_int(v)} out of " \
                                     f"range (finite, at most {MAX_ABS_FLOAT:g} in magnitude)"
        return check_float
    if pa.types.is_timestamp(t):
        def check_ts(v: Any) -> str | None:
            if v is None:
                return missing(v)
            if isinstance(v, bool) or not isinstance(v, int):
                return f"expected a timestamp, got {type(v).__name__}"
            if v < MIN_TS_US or v > MAX_TS_US:
                return f"{_show_int(v // 1_000_000)} s since the epoch is outside " \
                       "1970-01-01 .. 9999-12-31"
            return None
        return check_ts
    cap = (MAX_TEXT_CHARS if (table, col) in TEXT_COLUMNS
           else MAX_JSON_CHARS if (table, col) in JSON_COLUMNS else MAX_NAME_CHARS)

    def check_str(v: Any) -> str | None:
        if v is None:
            return missing(v)
        if not isinstance(v, str):
            return f"expected a string, got {type(v).__name__}"
        if required and not v:
            return "missing"
        if len(v) > cap:
            return f"{len(v)} characters, more than {cap}"
        if not v.isascii():
            bad = _surrogate_at(v)
            if bad is not None:
                return f"not valid Unicode text (unpaired surrogate at character {bad})"
        if allowed is not None and v not in allowed:
            return f"not one of {', '.join(allowed)}"
        return None
    return check_str


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _fast_checker(table: str, f: pa.Field) -> Callable[[tuple[Any, ...]], bool]:
    """A whole-column version of `_checker`: True when every value is fine, at C speed (sets,
    min/max, one join); when it says False, `_checker` finds the rows and says why."""
    col = f.name
    nullable = col not in NOT_NULL.get(table, ())
    required = col in REQUIRED.get(table, ())
    allowed = frozenset(VOCAB.get((table, col), ()))
    t = f.type
    none = {type(None)} if nullable else set()

    def present(values: tuple[Any, ...], types: set[type]) -> Any:
        return values if type(None) not in types else [v for v in values if v is not None]

    if pa.types.is_integer(t) or pa.types.is_timestamp(t):
        if pa.types.is_timestamp(t):
            lo, hi = MIN_TS_US, MAX_TS_US
        else:
            width = t.bit_width
            lo, hi = INT_CAPS.get((table, col), (-(1 << (width - 1)), (1 << (width - 1)) - 1))
        ok_types = {int} | none

        def fast_int(values: tuple[Any, ...]) -> bool:
            types = set(map(type, values))
            if not types <= ok_types:
                return False
            vals = present(values, types)
            return not vals or (min(vals) >= lo and max(vals) <= hi)
        return fast_int
    if pa.types.is_boolean(t):
        ok_bool = {bool} | none
        return lambda values: set(map(type, values)) <= ok_bool
    if pa.types.is_floating(t):
        ok_num = {float, int} | none

        def fast_float(values: tuple[Any, ...]) -> bool:
            types = set(map(type, values))
            if not types <= ok_num:
                return False
            vals = present(values, types)
            try:
                return not vals or (all(map(math.isfinite, vals))
                                    and max(map(abs, vals)) <= MAX_ABS_FLOAT)
            except OverflowError:
                return False
        return fast_float
    cap = (MAX_TEXT_CHARS if (table, col) in TEXT_COLUMNS
           else MAX_JSON_CHARS if (table, col) in JSON_COLUMNS else MAX_NAME_CHARS)
    ok_str = {str} | none

    def fast_str(values: tuple[Any, ...]) -> bool:
        types = set(map(type, values))
        if not types <= ok_str:
            return False
        vals = present(values, types)
        if not vals:
            return True
        if required and "" in vals:
            return False
        if max(map(len, vals)) > cap or (allowed and not set(vals) <= allowed):
            return False
        return "".join(vals).isascii() or all(
            v.isascii() or _surrogate_at(v) is None for v in vals)
    return fast_str


CHECKERS: Final[dict[str, list[tuple[str, Callable[[Any], str | None]]]]] = {
    name: [(f.name, _checker(name, f)) for f in schema]
    for name, schema in ARROW_SCHEMAS.items() if name != "quarantine"}
FAST_CHECKERS: Final[dict[str, list[Callable[[tuple[Any, ...]], bool]]]] = {
    name: [_fast_checker(name, f) for f in schema]
    for name, schema in ARROW_SCHEMAS.items() if name != "quarantine"}


def _transpose(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(zip(*rows)) if rows else [() for _ in ARROW_SCHEMAS[table]]


def column_problems(table: str, columns: list[tuple[Any, ...]]) -> dict[int, str]:
    """Why each row that cannot be stored cannot (`table.column: why`, the first failing column
    in schema order), by row index. Checked a column at a time: cheap when all rows are fine."""
    bad: dict[int, str] = {}
    if not columns or not columns[0]:
        return bad
    for (col, check), fast, values in zip(CHECKERS[table], FAST_CHECKERS[table], columns):
        if fast(values):
            continue
        for i, value in enumerate(values):
            if i not in bad:
                problem = check(value)
                if problem is not None:
                    bad[i] = f"{table}.{col}: {problem}"
    return bad


def _vet(name: str, rows: list[tuple[Any, ...]]) -> tuple[pa.Table | None, dict[int, str]]:
    """The table of `rows` when every row can be stored (else None), and why the others cannot,
    by row index. Arrow's conversion refuses wrong types, widths and unpaired surrogates, and
    vectorised checks find the rest; only then are rows looked at one by one, to say why."""
    if not rows:
        return ARROW_SCHEMAS[name].empty_table(), {}
    columns = _transpose(name, rows)
    try:
        table = columns_table(name, columns)
    except Exception:
        return None, column_problems(name, columns)
    reasons = arrow_invalid(name, table)
    if reasons is None:
        return table, {}
    return None, {i: explain(name, rows[i]) or reason
                  for i, reason in enumerate(reasons) if reason is not None}


def _unique_ids(decisions: pa.Table) -> bool:
    if pc.count_distinct(decisions.column("decision_id")).as_py() == decisions.num_rows:
        return True
    pairs = zip(decisions.column("run_id").to_pylist(), decisions.column("decision_id").to_pylist())
    return len(set(pairs)) == decisions.num_rows


def explain(table: str, row: tuple[Any, ...]) -> str | None:
    """`table.column: why` for the first column of `row` that cannot be stored, or None."""
    for (col, check), value in zip(CHECKERS[table], row):
        problem = check(value)
        if problem is not None:
            return f"{table}.{col}: {problem}"
    return None


# --- the same checks on Arrow columns (vectorised) -----------------------------------

def _outside(values: Any, lo: float, hi: float) -> Any | None:
    """Mask of values outside [lo, hi], or None when there are none (one min/max pass)."""
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (low >= lo and high <= hi):
        return None
    return pc.fill_null(pc.or_(pc.less(values, lo), pc.greater(values, hi)), False)


def arrow_problems(name: str, table: pa.Table) -> list[tuple[str, Any]]:
    """(reason, row mask) for every check that some row fails; cheap when all rows are fine."""
    found = []
    for col in NOT_NULL[name]:
        column = table.column(col)
        missing = pc.is_null(column) if column.null_count else None
        if (col in REQUIRED[name] and pa.types.is_string(column.type)
                and pc.any(pc.equal(column, "")).as_py()):
            empty = pc.fill_null(pc.equal(column, ""), False)
            missing = empty if missing is None else pc.or_(missing, empty)
        if missing is not None:
            found.append((f"{name}.{col}: missing", missing))
    for (tbl, col), allowed in VOCAB.items():
        if tbl == name:
            outside = pc.fill_null(pc.invert(pc.is_in(table.column(col),
                                                      value_set=pa.array(allowed))), False)
            if pc.any(outside).as_py():
                found.append((f"{name}.{col}: not one of {', '.join(allowed)}", outside))
    for f in ARROW_SCHEMAS[name]:
        column = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            mask = _outside(pc.cast(column, pa.int64()), MIN_TS_US, MAX_TS_US)
            what = "outside 1970-01-01 .. 9999-12-31"
        elif (name, f.name) in INT_CAPS:
            lo, hi = INT_CAPS[(name, f.name)]
            mask, what = _outside(column, lo, hi), f"out of range ({lo}..{hi})"
        elif pa.types.is_floating(f.type):
            bad = pc.or_(pc.invert(pc.is_finite(column)),
                         pc.greater(pc.abs(column), MAX_ABS_FLOAT))
            mask = pc.fill_null(bad, False) if pc.any(bad).as_py() else None
            what = f"out of range (finite, at most {MAX_ABS_FLOAT:g} in magnitude)"
        elif pa.types.is_string(f.type):
            cap = (MAX_TEXT_CHARS if (name, f.name) in TEXT_COLUMNS
                   else MAX_JSON_CHARS if (name, f.name) in JSON_COLUMNS else MAX_NAME_CHARS)
            longest = pc.max(pc.binary_length(column)).as_py()  # bytes >= characters
            mask = (pc.fill_null(pc.greater(pc.utf8_length(column), cap), False)
                    if longest is not None and longest > cap else None)
            if mask is not None and not pc.any(mask).as_py():
                mask = None
            what = f"more than {cap} characters"
        else:
            continue
        if mask is not None:
            found.append((f"{name}.{f.name}: {what}", mask))
    return found


def arrow_invalid(name: str, table: pa.Table) -> list[str | None] | None:
    """The first failed check's reason per row (None: fine), or None when every row is fine."""
    problems = arrow_problems(name, table)
    if not problems:
        return None
    reasons: list[str | None] = [None] * table.num_rows
    for reason, mask in problems:
        for i in np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)):
            if reasons[i] is None:
                reasons[i] = reason
    return reasons


def _ts_us(table: str, ts: Any) -> int:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise RowError(f"{table}.ts: expected seconds since the epoch, got {type(ts).__name__}")
    try:
        return _us(ts)
    except (OverflowError, ValueError):
        raise RowError(f"{table}.ts: {ts} is not a finite time") from None


def _json_text(table: str, col: str, value: Any, compact: bool = True) -> str:
    """The column's JSON text (the stored format: ASCII, escaped; event payloads keep json's
    default separators, as they always had), or RowError."""
    try:
        text = json.dumps(value, separators=(",", ":") if compact else None, default=str)
    except RecursionError:
        raise RowError(f"{table}.{col}: nested too deeply to serialise") from None
    except (TypeError, ValueError) as exc:
        raise RowError(f"{table}.{col}: cannot be serialised as JSON: {exc}") from None
    if "\\ud" in text:  # a surrogate escape: a non-BMP character, or an unpaired surrogate
        try:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            raise RowError(f"{table}.{col}: not valid Unicode text (unpaired surrogate)") \
                from None
    return text


def _json_or_none(table: str, col: str, value: dict[str, Any]) -> str | None:
    return _json_text(table, col, value) if value else None


def trim_payload(payload: Any) -> str | None:
    if payload is None:
        return None
    text = payload if isinstance(payload, str) else _json_text("events", "payload", payload,
                                                               compact=False)
    if len(text) <= MAX_EVENT_PAYLOAD_BYTES:
        return text
    return json.dumps({"_trimmed": True, "bytes": len(text), "head": text[:1024]})


def _decision_rows(dec: Decision, run_id: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    run = dec.run_id or run_id
    checks = dec.checks
    if not isinstance(checks, list):
        raise RowError(f"decisions.checks: expected a list, got {type(checks).__name__}")
    if len(checks) > MAX_CHECKS:
        raise RowError(f"decisions.n_checks: {len(checks)} checks, more than {MAX_CHECKS}")
    ts = _ts_us("decisions", dec.ts)
    action = dec.action
    extra = {**dec.extra, **({"action": action.extra} if action.extra else {})}
    row = (run, dec.decision_id, dec.rollout_id, dec.agent_id, dec.round, dec.arm, dec.mode,
           action.kind, action.summary, action.digest, dec.verdict, dec.executed, dec.covered,
           dec.attempted, dec.evasion, len(checks), dec.latency_us, ts,
           _json_or_none("decisions", "extra", extra))
    crows = []
    for idx, chk in enumerate(checks):
        try:
            crows.append((run, dec.decision_id, idx, dec.round, dec.arm, dec.agent_id,
                          chk.service, chk.rule_id, chk.verdict, chk.raw_verdict, chk.boundary,
                          chk.severity, chk.enforced, chk.latency_us, chk.reason, ts,
                          _json_or_none("checks", "extra", chk.extra),
                          getattr(chk, "ruleset", "") or None))
        except RowError as exc:
            raise RowError(f"{exc} (check {idx})") from None
    return row, crows


def _announced_rows(dec: Decision, run_id: str,
                    announced: dict[tuple[Any, ...], tuple[Any, ...]]) -> None:
    """The `rulesets` rows of a decision's announced sets (a set without rules: one row with
    rule_id ""); a decision that cannot be stored still tells which rules its services hold."""
    try:
        ts = _ts_us("decisions", dec.ts)
    except RowError:
        return
    run = dec.run_id or run_id
    for info in dec.rulesets:
        for rule_id in info.rules or ("",):
            announced.setdefault((run, info.service, info.version, rule_id),
                                 (run, info.service, info.version, rule_id, ts))


def _reward_row(r: Reward, run_id: str) -> tuple[Any, ...]:
    row = (r.run_id or run_id, r.reward_id, r.rollout_id, r.agent_id, r.round, r.arm, r.value,
           _ts_us("rewards", r.ts))
    return row


def _rollout_row(r: RolloutTransition, run_id: str) -> tuple[Any, ...]:
    row = (r.run_id or run_id, r.rollout_id, r.status, _ts_us("rollouts", r.ts), r.agent_id,
           r.round, r.arm, r.duration_s, _json_or_none("rollouts", "metadata", r.metadata))
    return row


def _event_row(e: Event, run_id: str) -> tuple[Any, ...]:
    row = (e.run_id or run_id, e.event_id, e.rollout_id, e.event_type, _ts_us("events", e.ts),
           trim_payload(e.payload))
    return row


def _witnessed_row(w: WitnessedAction, run_id: str) -> tuple[Any, ...]:
    return (w.run_id or run_id, w.witness_id, w.rollout_id, w.position, w.idx, w.tool, w.digest,
            w.agent_id, w.arm, w.round, _ts_us("witnessed", w.ts))


def _run_record_row(e: RunEvent, run_id: str) -> tuple[Any, ...]:
    return _run_event_row(e.run_id or run_id, e.event, _ts_us("run_events", e.ts), e.source,
                          e.detail)


def columns_table(name: str, columns: list[tuple[Any, ...]]) -> pa.Table:
    schema = ARROW_SCHEMAS[name]
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)],
                                schema=schema)


def rows_table(name: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    return columns_table(name, _transpose(name, rows))


def _safe_table(name: str, columns: list[tuple[Any, ...]], rejected: list[Rejected],
                what: str, ident: str) -> pa.Table:
    """The table of validated rows; should Arrow still refuse one, only that row is rejected."""
    try:
        return columns_table(name, columns)
    except Exception:
        pass
    rows = list(zip(*columns))
    kept = []
    for row in rows:
        try:
            rows_table(name, [row])
        except Exception as exc:
            names = ARROW_SCHEMAS[name].names
            rejected.append(_reject(exc, what, row[names.index(ident)],
                                    _raw_text(dict(zip(names, row)))))
        else:
            kept.append(row)
    return rows_table(name, kept) if kept else ARROW_SCHEMAS[name].empty_table()


def _decision_tables(drows: list[tuple[Any, ...]], crows: list[tuple[Any, ...]],
                     rejected: list[Rejected]) -> dict[str, pa.Table]:
    try:
        out = {"decisions": rows_table("decisions", drows)}
        if crows:
            out["checks"] = rows_table("checks", crows)
        return out
    except Exception:  # validation should make this unreachable; if not, isolate the unit
        pass
    by_unit: dict[tuple[Any, Any], list[tuple[Any, ...]]] = {}
    for c in crows:
        by_unit.setdefault((c[0], c[1]), []).append(c)
    kept_d: list[tuple[Any, ...]] = []
    kept_c: list[tuple[Any, ...]] = []
    for d in drows:
        mine = by_unit.get((d[0], d[1]), [])
        try:
            rows_table("decisions", [d])
            if mine:
                rows_table("checks", mine)
        except Exception as exc:
            raw = {"decision": dict(zip(ARROW_SCHEMAS["decisions"].names, d)),
                   "checks": [dict(zip(ARROW_SCHEMAS["checks"].names, c)) for c in mine]}
            rejected.append(_reject(exc, "decision", d[1], _raw_text(raw)))
        else:
            kept_d.append(d)
            kept_c.extend(mine)
    out = {"decisions": rows_table("decisions", kept_d) if kept_d
           else ARROW_SCHEMAS["decisions"].empty_table()}
    if kept_c:
        out["checks"] = rows_table("checks", kept_c)
    return out


# --- quarantine text --------------------------------------------------------------------------

def clean_text(text: Any, cap: int) -> str:
    """Text that can always be stored: a string, unpaired surrogates escaped, at most `cap`."""
    if not isinstance(text, str):
        text = _raw_text(text)
    text = text[:cap]
    if not text.isascii() and _surrogate_at(text) is not None:
        # Cut again: each escape is six characters where there was one.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:cap]
    return text


def quarantine_row(source: Any, reason: Any, raw: Any, ts: Any) -> tuple[Any, ...]:
    """A quarantine row that the database always accepts."""
    try:
        ts_us = _us(ts)
        if not MIN_TS_US <= ts_us <= MAX_TS_US:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        ts_us = _us(time.time())
    return (clean_text(source or "writer", MAX_QUARANTINE_SOURCE),
            ts_us, clean_text(reason or "quarantined", MAX_QUARANTINE_REASON),
            None if raw is None else clean_text(raw, MAX_QUARANTINE_RAW))


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = (
    12, 1000, 1000, 65_536, 4_096)


def _raw_text(obj: Any) -> str:
    """JSON of a record for quarantine (ASCII, so always storable); what cannot be serialised
    (nested too deeply, circular) comes as a bounded repr, the rest still as JSON."""
    return _to_json(obj)[:MAX_QUARANTINE_RAW]


def _to_json(obj: Any, level: int = 0) -> str:
    try:
        return json.dumps(obj, default=_jsonable)
    except (RecursionError, TypeError, ValueError) as exc:
        if isinstance(obj, dict) and level < 3:  # keep the fields that serialise (the ids)
            return json.dumps({str(k): json.loads(_to_json(_fields(v), level + 1))
                               for k, v in obj.items()})
        try:
            shown = _REPR.repr(obj)
        except Exception:
            shown = f"<{type(obj).__name__}>"
        return json.dumps({"unserialisable": type(exc).__name__, "repr": shown})


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _fields(obj)
    return str(obj)


def _fields(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
    return obj


def _decision_raw(dec: Any) -> str:
    try:
        return _raw_text(dec.to_payload())
    except Exception:
        return _raw_text(_fields(dec))


def show_id(value: Any) -> str:
    """An id as it can appear in a one-line reason: printable, at most 200 characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text[:200]
    return text if text.isprintable() else ascii(text)


def _reject(exc: BaseException, what: str, ident: Any, raw: str) -> Rejected:
    if isinstance(exc, RowError):
        why = str(exc)
    elif isinstance(exc, RecursionError):
        why = f"{what}: nested too deeply to read"
    else:
        why = f"{what}: cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return Rejected(reason=f"{why} ({what} {show_id(ident)})", raw=raw)
