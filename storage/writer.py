"""The single writer: one thread owns the write connection and commits batches exactly once.

Each commit is one transaction holding the new rows, their rollup partial aggregates, any
quarantined rows and the source cursors, so a crash either keeps all of it or none of it, and a
restarted collector resumes from the stored cursor. Small submits are coalesced up to one DuckDB
row group (122,880 rows) or `flush_interval_s`: commits are at least `flush_interval_s` apart, and
one that is due commits as soon as nothing more is queued (after a quiet spell, at once: a live
dashboard shows a lone decision without waiting out the interval).

Nothing stops capture but a fatal error:
- Records are validated one by one when a batch is built (batch.py) and again, column-wise, here
  (for Arrow tables handed in directly); a row that fails goes to `quarantine` with its reason
  and the source its cursor names, and the rest lands. A decision and its checks are one unit.
- If an insert still fails, the commit is bisected (items, then rows within an item) until the
  rows the database refuses are isolated; those are quarantined with the database's one-line
  reason, the rest is stored, and the cursor still commits.
- A fatal error (disk full, a lock or connection lost, a lake commit conflict that persists) is
  logged once in one line; `submit`, `flush` and `close` then raise `WriterError` with that line.

De-duplication. A decision is stored at most once per (run_id, decision_id), whatever its ts: the
batch's `id_key`s are probed against the stored column (schema.py), hits are verified on the ids,
and a copy with the same `content_key` is a duplicate (counted) while one with other content is
quarantined as a conflict; the first stays. Checks and the rule rollup are inserted only for the
decisions a commit actually inserts, so stored checks always number the decisions' `n_checks`.
Within one commit the same rules hold: copies are stored in rounds, each against what the rounds
before stored. Rewards, rollouts and events are dropped on their natural key: events only within
the batch's timestamp window (a record's `ts` is part of its payload), rewards and rollouts per run.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, Final, Iterator

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .batch import (
    ARROW_SCHEMAS, EVENT_TABLES, REQUIRED, VOCAB, Batch, Rejected, arrow_invalid, clean_text,
    quarantine_row, rows_table, show_id,
)
from .coordination import is_conflict, retry_conflicts
from .errors import StoreError
from .experiments import run_meta_json
from .latency_buckets import bucket_sql
from .schema import (
    KEY_COLUMNS, NATURAL_KEYS, check_hash_sql, checks_agg_sql, decision_content_sql, ensure_keys,
    id_key_sql, record_key_hash,
)
from .store import Store
from .transaction import transaction

__all__ = ["Cursor", "REQUIRED", "ROW_GROUP", "VOCAB", "Writer", "WriterError", "WriterStats"]

log = logging.getLogger(__name__)

ROW_GROUP: Final = 122_880
# Tables whose collision check reads only the batch's ts window: an event's ts comes with the
# record, so every copy carries the same one. A rollout transition's ts is the gateway's
# updated_at and a reward's the gateway's event time, which differ when the same run reaches two
# gateways: those small tables (about one row per rollout) are checked whole, per run.
# Decisions are checked by key (no window), checks follow their decisions.
WINDOWED: Final = frozenset({"events", "witnessed"})
OTHER_TABLES: Final = ("rollouts", "rewards", "events", "witnessed")
# Rule sets are announced again and again (each rollout), so their copies are not counted as
# duplicates; run lifecycle events are appended as they come, each once: a start or end of a
# run at the same microsecond is the same event (a spool segment read twice, its inode changed,
# stores its `run` records once).
SIDE_TABLES: Final = ("rulesets", "run_events")
RUN_EVENT_KEY: Final = ("run_id", "event", "ts")
UNIT: Final = ["_item", "run_id", "decision_id"]  # a decision and its checks, within one part

# Rollup partial aggregates of the rows a commit adds (registered as `_b`). blocked/escaped
# follow the definitions in records/events.py (Decision.blocked / Decision.escaped): a penalized
# action ran, so its violation is escaped, never blocked; `penalized` is Decision.penalized.
# would_have_blocked counts the verdicts that governed nothing (shadow, off): a penalize-mode
# verdict governed its action (it cost the penalty), so it is `penalized`, not "would have".
def _from_decisions(table: str, keys: str) -> str:
    return f"""
INSERT INTO {table} BY NAME
SELECT {keys}, count(*) AS actions, count_if(covered) AS covered,
       count_if(mode = 'enforce') AS enforce_mode, count_if(attempted) AS attempted,
       count_if(attempted AND NOT executed) AS blocked, count_if(attempted AND executed) AS escaped,
       count_if(evasion) AS evasions, count_if(executed) AS executed,
       sum(latency_us)::BIGINT AS latency_us_sum, 0 AS reward_n, 0.0 AS reward_sum,
       0.0 AS reward_sq_sum, min(ts) AS ts_min, max(ts) AS ts_max,
       count_if(attempted AND mode NOT IN ('enforce', 'penalize')) AS would_have_blocked,
       count_if(mode = 'penalize') AS penalize_mode,
       count_if(mode = 'penalize' AND verdict IN ('block', 'escalate')) AS penalized
FROM _b GROUP BY ALL"""


def _from_rewards(table: str, keys: str) -> str:
    return f"""
INSERT INTO {table} BY NAME
SELECT {keys}, 0 AS actions, 0 AS covered,
       0 AS enforce_mode, 0 AS attempted, 0 AS blocked, 0 AS escaped, 0 AS evasions,
       0 AS executed, 0 AS latency_us_sum, count(*) AS reward_n, sum(value) AS reward_sum,
       sum(value * value) AS reward_sq_sum, min(ts) AS ts_min, max(ts) AS ts_max,
       0 AS would_have_blocked, 0 AS penalize_mode, 0 AS penalized
FROM _b GROUP BY ALL"""


def _from_checks(table: str, keys: str) -> str:
    return f"""
INSERT INTO {table} BY NAME
SELECT {keys}, count(*) AS checks, count_if(enforced) AS enforced,
       count_if(verdict = 'warn') AS warns, count_if(verdict = 'escalate') AS escalates,
       count_if(verdict = 'block') AS blocks, sum(latency_us)::BIGINT AS latency_us_sum,
       max(latency_us) AS latency_us_max,
       count_if(verdict = 'block' AND enforced) AS enforced_blocks
FROM _b GROUP BY ALL"""


# Per agent (the Agents view, per-agent alerts) and per round alone (v6: charts and KPIs).
ROLLUP_AGENT_FROM_DECISIONS: Final = _from_decisions("rollup_agent",
                                                     "run_id, arm, round, agent_id")
ROLLUP_ROUND_FROM_DECISIONS: Final = _from_decisions("rollup_round", "run_id, arm, round")
ROLLUP_AGENT_FROM_REWARDS: Final = _from_rewards(
    "rollup_agent", "run_id, arm, round, coalesce(agent_id, '') AS agent_id")
ROLLUP_ROUND_FROM_REWARDS: Final = _from_rewards("rollup_round", "run_id, arm, round")
# Per minute (time windows: alerts, `query --since`) and per round alone (v6).
ROLLUP_RULE_FROM_CHECKS: Final = _from_checks(
    "rollup_rule", "run_id, arm, round, service, rule_id, ruleset, "
                   "date_trunc('minute', ts) AS minute")
ROLLUP_RULE_ROUND_FROM_CHECKS: Final = _from_checks(
    "rollup_rule_round", "run_id, arm, round, service, rule_id, ruleset")
ROLLUP_CHECK_LATENCY_FROM_CHECKS: Final = f"""
INSERT INTO rollup_check_latency BY NAME
SELECT run_id, arm, service, round, {bucket_sql('latency_us')} AS bucket_us, count(*) AS checks
FROM _b GROUP BY ALL"""
# Per arm, action kind and latency value (v5): the strategy and the exact latency percentiles
# of the report, from a table whose size grows with distinct latencies, not with decisions.
ROLLUP_LATENCY_FROM_DECISIONS: Final = """
INSERT INTO rollup_latency BY NAME
SELECT run_id, arm, action_kind, latency_us, count(*) AS actions,
       count_if(executed) AS executed
FROM _b GROUP BY ALL"""
ROLLUP_WITNESS_FROM_WITNESSED: Final = """
INSERT INTO rollup_witness BY NAME
SELECT run_id, arm, round, agent_id, count(*) AS witnessed, min(ts) AS ts_min, max(ts) AS ts_max
FROM _b GROUP BY ALL"""
ROLLUPS: Final[dict[str, tuple[str, ...]]] = {
    "decisions": (ROLLUP_AGENT_FROM_DECISIONS, ROLLUP_ROUND_FROM_DECISIONS,
                  ROLLUP_LATENCY_FROM_DECISIONS),
    "rewards": (ROLLUP_AGENT_FROM_REWARDS, ROLLUP_ROUND_FROM_REWARDS),
    "checks": (ROLLUP_RULE_FROM_CHECKS, ROLLUP_RULE_ROUND_FROM_CHECKS,
               ROLLUP_CHECK_LATENCY_FROM_CHECKS),
    "witnessed": (ROLLUP_WITNESS_FROM_WITNESSED,),
}

# Keys of a commit's decisions (`_d`), with their checks (`_c`) found by `_unit`: the decision
# row each check belongs to, when the checks come in their decisions' order (as batches built
# from records and the synthetic ones do). An integer join, no grouping by VARCHAR ids.
KEYS_BY_UNIT_SQL: Final = f"""
WITH ck AS (SELECT _unit, count(*) AS n, sum({check_hash_sql('c')})::HUGEINT AS h
            FROM _c c GROUP BY _unit)
SELECT d._pos, {id_key_sql('d')} AS id_key,
       {decision_content_sql('d', 'coalesce(ck.n, 0)', 'ck.h')} AS content_key
FROM _d d LEFT JOIN ck ON ck._unit = d._pos"""
# Insert the decisions of `_b` with their keys, when none is stored (the common case: one query
# makes the keys and stores the rows).
INSERT_WITH_KEYS_SQL: Final = f"""
INSERT INTO decisions BY NAME
WITH ck AS (SELECT _unit, count(*) AS n, sum({check_hash_sql('c')})::HUGEINT AS h
            FROM _c c GROUP BY _unit)
SELECT d.* EXCLUDE (_item, _pos), {id_key_sql('d')} AS id_key,
       {decision_content_sql('d', 'coalesce(ck.n, 0)', 'ck.h')} AS content_key
FROM _b d LEFT JOIN ck ON ck._unit = d._pos"""
# The same for checks in any order: grouped by their decision (within one part, `_item`); the
# check units without a decision come last (no `_pos`).
KEYS_SQL: Final = f"""
WITH ck AS ({checks_agg_sql('_c', group=', '.join(UNIT))})
SELECT d._pos, {id_key_sql('d')} AS id_key,
       {decision_content_sql('d', 'coalesce(ck.n, 0)', 'ck.h')} AS content_key,
       coalesce(ck.n, 0) AS n, ck.lo, ck.hi,
       CASE WHEN d._pos IS NULL THEN ck._item END AS o_item,
       CASE WHEN d._pos IS NULL THEN ck.run_id END AS o_run,
       CASE WHEN d._pos IS NULL THEN ck.decision_id END AS o_did
FROM _d d FULL JOIN ck ON d._item = ck._item AND d.run_id = ck.run_id
                       AND d.decision_id = ck.decision_id"""

# Errors that a row can cause (bisected, then quarantined); anything else is fatal.
_DATA_ERRORS: Final = (
    duckdb.ConversionException, duckdb.ConstraintException, duckdb.InvalidInputException,
    duckdb.OutOfRangeException, duckdb.TypeMismatchException, duckdb.InvalidTypeException,
    duckdb.OutOfMemoryException, duckdb.SerializationException, pa.ArrowException,
    UnicodeError, OverflowError, RecursionError,
)
_DATA_MARKERS: Final = ("Invalid Input Error", "Conversion Error", "Constraint Error",
                        "Out of Range Error", "Invalid unicode", "out of range", "NOT NULL")


class _Refused(Exception):
    """A commit the database failed because of a row, not a race: bisect it, do not retry it."""


def is_data_error(exc: BaseException) -> bool:
    """Caused by what a row holds (so another row would commit), not by the store's state."""
    if isinstance(exc, _Refused):
        return True
    if isinstance(exc, duckdb.Error) and is_conflict(exc):
        # A commit can fail on a row (e.g. a lake writing its Parquet at commit): only then is a
        # "Failed to commit" a data error. A real conflict that persisted stays fatal.
        text = str(exc)
        return "conflict" not in text.lower() and any(m in text for m in _DATA_MARKERS)
    return isinstance(exc, _DATA_ERRORS)


def one_line(exc: BaseException) -> str:
    """The error on one line (a lake's commit error gives its cause on the lines after)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return clean_text(" ".join(lines) if lines else type(exc).__name__, 500)


@dataclass(frozen=True)
class Cursor:
    """Where a source has got to; committed with the rows it produced."""

    source: str
    value: str


class WriterError(StoreError):
    """The writer cannot store anything more; the message is one line."""


@dataclass
class WriterStats:
    committed_rows: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    quarantined: int = 0
    commits: int = 0
    last_commit_at: float | None = None
    last_commit_ms: float = 0.0


@dataclass
class _Item:
    batch: Batch
    cursor: Cursor | None
    stats: dict[str, Any] | None
    source: str | None = None  # a bisected half without the cursor still names its source

    @property
    def source_name(self) -> str:
        return self.cursor.source if self.cursor else self.source or "writer"


@dataclass
class _Control:
    stop: bool
    done: threading.Event = field(default_factory=threading.Event)


QRow = tuple[Any, ...]  # (source, ts_us, reason, raw), see batch.quarantine_row


# --- column-wise validation (Arrow tables handed in directly) ---------------------------------

def _conform(name: str, table: pa.Table) -> pa.Table:
    """The table with exactly the stored columns and types (missing nullable ones as nulls)."""
    schema = ARROW_SCHEMAS[name]
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _pylist(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts, even when a value cannot become a Python object (a timestamp beyond year
    9999, bytes that are not UTF-8): those come as integers and escaped text."""
    try:
        return table.to_pylist()
    except (ValueError, OverflowError, UnicodeError, pa.ArrowException):
        pass
    columns: dict[str, list[Any]] = {}
    for f, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(f.type):
            columns[f.name] = pc.cast(column, pa.int64()).to_pylist()
        elif pa.types.is_string(f.type):
            columns[f.name] = [None if v is None else v.decode("utf-8", "backslashreplace")
                               for v in pc.cast(column, pa.binary()).to_pylist()]
        else:
            columns[f.name] = column.to_pylist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as a producer gave it: without our bookkeeping columns."""
    return {k: v for k, v in row.items() if not k.startswith("_") and k not in KEY_COLUMNS}


def _raw(row: dict[str, Any]) -> str:
    return json.dumps(_plain(row), default=str)


def _unit_raws(dec: pa.Table, checks: pa.Table | None, unit: pa.Array | None = None
               ) -> list[str]:
    """Raw JSON per decision row: the row, with its checks under "checks" (those `unit` gives
    its `_pos`, or else those of its part with its id)."""
    if unit is not None and checks is not None:
        mine = checks.filter(pc.is_in(unit, value_set=dec.column("_pos").combine_chunks()))
        owners = unit.filter(pc.is_in(unit, value_set=dec.column("_pos").combine_chunks()))
        by_pos: dict[int, list[dict[str, Any]]] = {}
        for pos, row in zip(owners.to_pylist(), _pylist(mine)):
            by_pos.setdefault(pos, []).append(_plain(row))
        return [json.dumps({**_plain(row), "checks": by_pos.get(row["_pos"], [])}, default=str)
                for row in _pylist(dec)]
    by_unit: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    if checks is not None and checks.num_rows:
        wanted = pl.from_arrow(dec.select(UNIT)).unique()
        assert isinstance(wanted, pl.DataFrame)
        mine = pl.from_arrow(checks)
        assert isinstance(mine, pl.DataFrame)
        rows = mine.join(wanted, on=UNIT, how="semi").to_arrow()
        for row in _pylist(rows):
            by_unit.setdefault(tuple(row[k] for k in UNIT), []).append(_plain(row))
    return [json.dumps({**_plain(row), "checks": by_unit.get(tuple(row[k] for k in UNIT), [])},
                       default=str) for row in _pylist(dec)]


def _check_others(tables: dict[str, pa.Table], source: str, qrows: list[QRow],
                  now: float) -> None:
    for name in (*OTHER_TABLES, *SIDE_TABLES):
        table = tables.get(name)
        if table is None:
            continue
        reasons = arrow_invalid(name, table)
        if reasons is None:
            continue
        bad = pa.array([r is not None for r in reasons])
        for reason, row in zip([r for r in reasons if r is not None],
                               _pylist(table.filter(bad))):
            qrows.append(quarantine_row(source, reason, _raw(row), now))
        tables[name] = table.filter(pc.invert(bad))


def _keys_of(table: pa.Table) -> list[tuple[Any, Any]]:
    return list(zip(*(_column_pylist(table, c) for c in ("run_id", "decision_id"))))


def _column_pylist(table: pa.Table, name: str) -> list[Any]:
    try:
        return table.column(name).to_pylist()
    except UnicodeError:
        return [None if v is None else v.decode("utf-8", "backslashreplace")
                for v in pc.cast(table.column(name), pa.binary()).to_pylist()]


def _check_units(tables: dict[str, pa.Table], source: str, qrows: list[QRow],
                 now: float) -> None:
    """Quarantine decisions that fail a column check, or whose checks do (a unit)."""
    dec, chk = tables.get("decisions"), tables.get("checks")
    d_reasons = arrow_invalid("decisions", dec) if dec is not None else None
    c_reasons = arrow_invalid("checks", chk) if chk is not None else None
    if d_reasons is None and c_reasons is None:
        return
    dkeys = _keys_of(dec) if dec is not None else []
    ckeys = _keys_of(chk) if chk is not None else []
    why: dict[tuple[Any, Any], str] = {}
    for key, reason in zip(dkeys, d_reasons or []):
        if reason is not None:
            why.setdefault(key, reason)
    if c_reasons is not None and chk is not None:
        for key, reason, idx in zip(ckeys, c_reasons, _column_pylist(chk, "idx")):
            if reason is not None:
                why.setdefault(key, f"{reason} (check {idx})")
    d_bad = pa.array([k in why for k in dkeys], pa.bool_())
    c_bad = pa.array([k in why for k in ckeys], pa.bool_())
    c_rows = _pylist(chk.filter(c_bad)) if chk is not None else []
    by_key: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in c_rows:
        by_key.setdefault((row["run_id"], row["decision_id"]), []).append(row)
    if dec is not None:
        for row in _pylist(dec.filter(d_bad)):
            key = (row["run_id"], row["decision_id"])
            qrows.append(quarantine_row(source, why[key], json.dumps(
                {**row, "checks": by_key.pop(key, [])}, default=str), now))
        tables["decisions"] = dec.filter(pc.invert(d_bad))
    for key, rows in by_key.items():  # bad checks whose decision is not in this part
        qrows.append(quarantine_row(source, why[key], json.dumps({"checks": rows}, default=str),
                                    now))
    if chk is not None:
        tables["checks"] = chk.filter(pc.invert(c_bad))


def _flatten(batch: Batch) -> Iterator[Batch]:
    yield batch
    for later in batch.later:
        yield from _flatten(later)


# --- bisecting -------------------------------------------------------------------------------

def _pieces(batch: Batch) -> list[Batch]:
    """A batch as pieces that can commit apart, in order: rejected records, decisions with their
    checks, each other table, then the later copies."""
    out = []
    if batch.rejected:
        out.append(Batch(rejected=list(batch.rejected)))
    t = batch.tables
    if "decisions" in t or "checks" in t:
        out.append(Batch({k: t[k] for k in ("decisions", "checks") if k in t}))
    out.extend(Batch({name: table}) for name, table in t.items()
               if name not in ("decisions", "checks"))
    for later in batch.later:
        out.extend(_pieces(later))
    return [p for p in out if p.rows]


def _unit_key_array(table: pa.Table) -> Any:
    """run_id and decision_id as one string per row (length-prefixed: unambiguous)."""
    run = table.column("run_id")
    prefix = pc.cast(pc.binary_length(run), pa.string())
    return pc.binary_join_element_wise(prefix, run, table.column("decision_id"), ":")


def _halves(batch: Batch) -> tuple[Batch, Batch] | None:
    """The batch in two smaller batches (a decision never apart from its checks), or None when
    it is a single unit."""
    pieces = _pieces(batch)
    if len(pieces) > 1:
        mid = len(pieces) // 2
        return Batch(later=pieces[:mid]), Batch(later=pieces[mid:])
    if not pieces:
        return None
    piece = pieces[0]
    if piece.rejected:
        if len(piece.rejected) == 1:
            return None
        mid = len(piece.rejected) // 2
        return Batch(rejected=piece.rejected[:mid]), Batch(rejected=piece.rejected[mid:])
    (name, table), *rest = piece.tables.items()
    if name == "decisions" and table.num_rows:
        checks = piece.tables.get("checks")
        if table.num_rows == 1:
            return None
        mid = table.num_rows // 2
        first, second = table.slice(0, mid), table.slice(mid)
        if checks is None or not checks.num_rows:
            return Batch({"decisions": first}), Batch({"decisions": second})
        mine = pc.is_in(_unit_key_array(checks), value_set=_unit_key_array(first))
        return (Batch({"decisions": first, "checks": checks.filter(mine)}),
                Batch({"decisions": second, "checks": checks.filter(pc.invert(mine))}))
    if name == "decisions":  # no decisions: checks alone
        name, table = "checks", piece.tables["checks"]
    if table.num_rows <= 1:
        return None
    mid = table.num_rows // 2
    return Batch({name: table.slice(0, mid)}), Batch({name: table.slice(mid)})


def _refused(batch: Batch, line: str) -> Batch:
    """A single unit the database refused, as quarantine."""
    if batch.rejected:
        (rej,) = batch.rejected
        return Batch(rejected=[Rejected(f"{rej.reason}; refused by the database: {line}",
                                        rej.raw)])
    tables = {n: t for n, t in batch.tables.items() if t.num_rows}
    parts = {name: _pylist(table) for name, table in tables.items()}
    name = next(iter(tables), "batch")
    if "decisions" in tables:
        (row,) = parts["decisions"]
        raw = json.dumps({**row, "checks": parts.get("checks", [])}, default=str)
        name = "decisions"
    else:
        raw = json.dumps(parts, default=str)
    return Batch(rejected=[Rejected(f"{name}: refused by the database: {line}", raw)])


class Writer:
    """Owns the write connection. `submit` from any thread; batches commit in submit order."""

    def __init__(self, store: Store, *, max_queue: int = 32, flush_rows: int = ROW_GROUP,
                 flush_interval_s: float = 1.0,
                 on_commit: Callable[[WriterStats], None] | None = None,
                 run_meta: Mapping[str, Any] | None = None) -> None:
        if store.read_only:
            raise WriterError(f"{store.label} is open read-only")
        self._store = store
        self._queue: queue.Queue[_Item | _Control] = queue.Queue(maxsize=max_queue)
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        # Called on the writer thread after each commit (a listener must not block).
        self._listeners: list[Callable[[WriterStats], None]] = [on_commit] if on_commit else []
        self._error: str | None = None
        self._closed = False
        self.stats = WriterStats()
        self._known_runs: set[str] = set()  # runs already in `runs`: no lookup per commit
        # Every run this writer registers joins this experiment (storage/experiments.py).
        self._run_meta = run_meta_json(run_meta) if run_meta is not None else None
        # Rule-set rows this writer stored or found stored: announcements of them cost nothing.
        self._known_sets: set[tuple[Any, ...]] = set()
        self._con = store.cursor()
        self._coord = store.coordinator()
        try:
            with self._coord.locked(["schema"]):
                # True: the hash this DuckDB gives is recorded with the first decisions.
                self._record_hash = ensure_keys(self._con)
        except BaseException:
            self._con.close()
            self._coord.close()
            raise
        self._thread = threading.Thread(target=self._run, name="tw-writer", daemon=True)
        self._thread.start()

    # --- producer side -------------------------------------------------------------------------

    @property
    def runs_written(self) -> frozenset[str]:
        """The runs this writer committed event rows into (the runs a collector collected)."""
        return frozenset(self._known_runs)

    def submit(self, batch: Batch, cursor: Cursor | None = None,
               stats: dict[str, Any] | None = None) -> None:
        """Queue a batch (blocks while the queue is full: backpressure)."""
        self._check()
        if self._closed:
            raise WriterError("writer is closed")
        self._queue.put(_Item(batch, cursor, stats))

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything submitted before this call is committed."""
        self._check()
        control = _Control(stop=False)
        self._queue.put(control)
        if not control.done.wait(timeout):
            raise WriterError("flush timed out")
        self._check()

    def close(self, timeout: float | None = 60.0) -> None:
        if self._closed:
            return
        self._closed = True
        control = _Control(stop=True)
        self._queue.put(control)
        control.done.wait(timeout)
        self._thread.join(timeout)
        self._check()

    def listen(self, on_commit: Callable[[WriterStats], None]) -> None:
        """Also call `on_commit` after every commit, on the writer thread: it must return
        at once (post a message, set an event), never wait on another thread."""
        self._listeners.append(on_commit)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def error(self) -> str | None:
        """The one-line fatal error that stopped the writer, if any."""
        return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise WriterError(f"writer failed: {self._error}")

    # --- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Item] = []
        rows: dict[str, int] = {}
        started = 0.0  # when the oldest pending item came
        committed = -self._flush_interval_s  # when the last commit ended
        while True:
            timeout = None
            if pending:
                # Never later than an interval after the oldest item (as ever); sooner once a
                # commit is due again and the queue has run dry.
                due = min(started, committed) + self._flush_interval_s
                timeout = max(0.0, due - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if isinstance(item, _Item):
                    now = time.monotonic()
                    if not pending:
                        started = now
                    pending.append(item)
                    for batch in _flatten(item.batch):
                        for name, table in batch.tables.items():
                            rows[name] = rows.get(name, 0) + table.num_rows
                    # A table that reaches a row group is written straight to it, not the WAL.
                    if max(rows.values(), default=0) < self._flush_rows and not (
                            now >= committed + self._flush_interval_s and self._queue.empty()):
                        continue
                if pending and self._error is None:
                    self._commit_or_quarantine(pending)
                    committed = time.monotonic()
            except BaseException as exc:  # surfaced to producers through _check()
                self._fail(exc)
            pending, rows = [], {}
            if isinstance(item, _Control):
                item.done.set()
                if item.stop:
                    self._finish()
                    return

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = one_line(exc)
            log.error("writer: stopped, nothing more is stored: %s", self._error)

    def _finish(self) -> None:
        # On a lake, CHECKPOINT means maintenance (merge, expire): that is `lake maintain`'s job.
        if not self._store.is_lake and self._error is None:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:  # a checkpoint is an optimisation; data is committed
                log.warning("writer: checkpoint failed: %s", one_line(exc))
        for closing in (self._con.close, self._coord.close):
            try:
                closing()
            except Exception as exc:  # closing after a fatal error may fail again
                log.warning("writer: close failed: %s", one_line(exc))

    def _commit_or_quarantine(self, items: list[_Item]) -> None:
        """Commit; if a row makes that fail, bisect down to the rows and quarantine them, still
        committing every cursor. Fatal errors propagate."""
        try:
            self._commit(items)
            return
        except BaseException as exc:
            if not is_data_error(exc):
                raise
            line = one_line(exc)
        if len(items) > 1:
            mid = len(items) // 2
            self._commit_or_quarantine(items[:mid])
            self._commit_or_quarantine(items[mid:])
            return
        item = items[0]
        halves = _halves(item.batch)
        if halves is None:
            log.warning("writer: quarantined a record the database refused: %s", line)
            self._commit([_Item(_refused(item.batch, line), item.cursor, item.stats,
                                item.source_name)])
            return
        # The cursor goes with the second half: a crash in between re-delivers both halves,
        # and the first is then all duplicates.
        self._commit_or_quarantine([_Item(halves[0], None, None, item.source_name)])
        self._commit_or_quarantine([_Item(halves[1], item.cursor, item.stats, item.source_name)])

    def _commit(self, items: list[_Item]) -> None:
        t0 = time.perf_counter()
        now = time.time()
        qrows: list[QRow] = []
        parts: list[dict[str, pa.Table]] = []
        sources: list[str] = []
        for item in items:
            source = item.source_name
            for batch in _flatten(item.batch):
                qrows.extend(quarantine_row(source, r.reason, r.raw, now) for r in batch.rejected)
                parts.append({n: t for n, t in batch.tables.items() if t.num_rows}
                             if batch.checked else self._checked(batch.tables, source, qrows, now))
                sources.append(source)
        tables = _concat(parts)
        cursors: dict[str, tuple[str, dict[str, Any] | None]] = {
            i.cursor.source: (i.cursor.value, i.stats) for i in items if i.cursor}
        run_ids: set[str] = set()
        for name in EVENT_TABLES:
            if name in tables and tables[name].num_rows:
                run_ids.update(pc.unique(tables[name].column("run_id")).to_pylist())
        # Writers of the same run (other processes on a lake) take turns: each one's probe then
        # sees what the previous one committed.
        def attempt() -> tuple[dict[str, int], int]:
            try:
                return self._transaction(tables, run_ids, qrows, cursors, sources)
            except duckdb.Error as exc:
                if is_conflict(exc) and is_data_error(exc):
                    raise _Refused(one_line(exc)) from exc
                raise

        announced = tables.get("rulesets")
        if announced is not None and self._known_sets:
            keys = _set_keys(announced)
            tables["rulesets"] = announced.filter(pa.array([k not in self._known_sets
                                                            for k in keys]))
        with self._coord.locked(run_ids):
            added, duplicates = retry_conflicts(attempt)
        self._known_runs.update(run_ids)
        if announced is not None:
            self._known_sets.update(_set_keys(announced))
        if added.get("decisions"):
            self._record_hash = False
        st = self.stats
        for name, n in added.items():
            st.committed_rows[name] = st.committed_rows.get(name, 0) + n
        st.duplicates += duplicates
        st.quarantined += added.get("quarantine", 0)
        st.commits += 1
        st.last_commit_at = time.time()
        st.last_commit_ms = (time.perf_counter() - t0) * 1000
        for listener in list(self._listeners):
            try:
                listener(st)
            except Exception as exc:  # a listener must not break ingestion
                log.warning("writer: on_commit listener failed: %s", one_line(exc))

    @staticmethod
    def _checked(given: dict[str, pa.Table], source: str, qrows: list[QRow],
                 now: float) -> dict[str, pa.Table]:
        """The part's tables conformed to the stored types, invalid rows moved to `qrows`."""
        tables: dict[str, pa.Table] = {}
        for name, table in given.items():
            if name not in ARROW_SCHEMAS:
                qrows.append(quarantine_row(
                    source, f"batch: unknown table {show_id(name)} ({table.num_rows} rows)",
                    None, now))
            elif table.num_rows:
                tables[name] = _conform(name, table)
        _check_others(tables, source, qrows, now)
        if "decisions" in tables or "checks" in tables:
            _check_units(tables, source, qrows, now)
        return {n: t for n, t in tables.items() if t.num_rows}

    def _transaction(self, tables: dict[str, pa.Table], run_ids: set[str], qrows: list[QRow],
                     cursors: dict[str, tuple[str, dict[str, Any] | None]],
                     sources: list[str]) -> tuple[dict[str, int], int]:
        """One attempt at the commit: rows, rollups, quarantine and cursors, all or nothing."""
        con = self._con
        added: dict[str, int] = {}
        duplicates = 0
        qrows = list(qrows)  # a retried attempt starts again from the validated rows
        with transaction(con):
            if "decisions" in tables or "checks" in tables:
                n_dec, n_chk, dups = self._insert_decisions(
                    tables.get("decisions"), tables.get("checks"), sources, qrows)
                added.update({k: v for k, v in (("decisions", n_dec), ("checks", n_chk)) if v})
                duplicates += dups
                if n_dec and self._record_hash:
                    record_key_hash(con)
            for name in OTHER_TABLES:
                table = tables.get(name)
                if table is None or table.num_rows == 0:
                    continue
                n_new = self._insert_new(name, table)
                added[name] = n_new
                duplicates += table.num_rows - n_new
            if tables.get("rulesets") is not None and tables["rulesets"].num_rows:
                added["rulesets"] = self._insert_new("rulesets", tables["rulesets"])
            if tables.get("run_events") is not None and tables["run_events"].num_rows:
                added["run_events"] = self._insert_new("run_events", tables["run_events"],
                                                       RUN_EVENT_KEY)
            new_runs = sorted(run_ids - self._known_runs)
            if new_runs:
                self._register_runs(new_runs)
            quarantine = [tables["quarantine"]] if "quarantine" in tables else []
            if qrows:
                quarantine.append(rows_table("quarantine", qrows))
            if quarantine:
                q = pa.concat_tables(quarantine) if len(quarantine) > 1 else quarantine[0]
                con.register("_q", q)
                try:
                    con.execute("INSERT INTO quarantine BY NAME SELECT * FROM _q")
                finally:
                    con.unregister("_q")
                added["quarantine"] = q.num_rows
            # Appended, never updated: the newest row per source is its cursor. Updates would
            # make concurrent lake writers conflict; `lake maintain` trims the history.
            for source, (value, stats) in cursors.items():
                con.execute("INSERT INTO ingest_state VALUES (?, ?, now()::TIMESTAMP, ?)",
                            [source, value, json.dumps(stats) if stats is not None else None])
        return added, duplicates

    # --- decisions and their checks ----------------------------------------------------------

    def _insert_decisions(self, dec: pa.Table | None, chk: pa.Table | None, sources: list[str],
                          qrows: list[QRow]) -> tuple[int, int, int]:
        """Store the decisions not stored yet and the checks of exactly those; quarantine
        conflicts, inconsistent units and checks without a decision. Returns (decisions,
        checks, duplicates)."""
        now = time.time()
        if dec is None:
            dec = _with_item(ARROW_SCHEMAS["decisions"].empty_table(), 0)
        if chk is None:
            chk = _with_item(ARROW_SCHEMAS["checks"].empty_table(), 0)
        dec = dec.append_column("_pos", pa.array(np.arange(dec.num_rows, dtype=np.int64)))
        duplicates = 0
        n = dec.num_rows
        n_checks = pc.cast(dec.column("n_checks"), pa.int64())
        unit = _aligned(dec, chk)
        if unit is not None and pc.count_distinct(dec.column("decision_id")).as_py() == n:
            stored = self._insert_if_none_stored(dec, chk, unit)
            if stored is not None:
                return stored
        if unit is not None:  # checks in order: consistent by construction, no orphans
            keys = self._keys(KEYS_BY_UNIT_SQL, dec, chk.append_column("_unit", unit), n)
            orphans = 0
        else:
            keys, orphans, chk, duplicates = self._keys_any_order(dec, chk, n_checks, sources,
                                                                  qrows, now)
        dec = dec.append_column("id_key", pa.array(keys["id_key"])).append_column(
            "content_key", pa.array(keys["content_key"]))
        if unit is None:
            # As many checks as the decision says, numbered 0..n-1: what the checks table holds.
            found = pa.array(keys["n"])
            lo = pa.array(keys["lo"], mask=keys["lo_null"])
            hi = pa.array(keys["hi"], mask=keys["hi_null"])
            ok = pc.and_(pc.equal(found, n_checks), pc.or_(pc.equal(n_checks, 0), pc.and_(
                pc.equal(pc.fill_null(lo, -1), 0),
                pc.equal(pc.fill_null(hi, -1), pc.subtract(n_checks, 1)))))
            if not pc.all(ok).as_py():
                bad = pc.invert(ok)
                self._quarantine_units(
                    dec.filter(bad), chk, None, sources, qrows, now,
                    [f"decisions.n_checks: {m} but the batch holds {k} checks for it "
                     f"(idx {a}..{b}) (decision {show_id(did)})" for m, k, a, b, did in zip(
                         n_checks.filter(bad).to_pylist(), found.filter(bad).to_pylist(),
                         lo.filter(bad).to_pylist(), hi.filter(bad).to_pylist(),
                         _column_pylist(dec.filter(bad), "decision_id"))])
                dec = dec.filter(ok)
        inserted: list[pa.Table] = []
        for round_rows in _rounds(dec):
            new, dups = self._store_round(round_rows, chk, unit, sources, qrows, now)
            duplicates += dups
            if new.num_rows:
                inserted.append(new)
        n_dec = sum(t.num_rows for t in inserted)
        if n_dec == 0:
            return 0, 0, duplicates
        if n_dec == n and not orphans:
            mine = chk  # the common case: every decision is new, every check is theirs
        elif unit is not None:  # checks in order: each belongs to one decision row
            stored = pa.concat_tables([t.select(["_pos"]) for t in inserted]).column("_pos")
            mine = chk.filter(pc.is_in(unit, value_set=stored.combine_chunks()))
        else:
            units = pl.from_arrow(pa.concat_tables([t.select(UNIT) for t in inserted]))
            frame = pl.from_arrow(chk)
            assert isinstance(units, pl.DataFrame) and isinstance(frame, pl.DataFrame)
            mine = frame.join(units, on=UNIT, how="semi").to_arrow().cast(chk.schema)
        n_chk = self._insert_rows("checks", mine.drop_columns(["_item"])) if mine.num_rows else 0
        return n_dec, n_chk, duplicates

    def _insert_if_none_stored(self, dec: pa.Table, chk: pa.Table, unit: pa.Array
                               ) -> tuple[int, int, int] | None:
        """Store decisions (ids unique, checks in order) and their checks if none is stored
        yet, in as few statements as the old unkeyed insert; None (nothing done) otherwise."""
        con = self._con
        con.register("_b", dec)
        con.register("_c", chk.append_column("_unit", unit))
        try:
            # One UBIGINT column is all this reads, however large the table.
            if con.execute("SELECT count(*) FROM decisions WHERE id_key IN "
                           f"(SELECT {id_key_sql('d')} FROM _b d)").fetchall()[0][0]:
                return None
            con.execute(INSERT_WITH_KEYS_SQL)
            for rollup in ROLLUPS["decisions"]:
                con.execute(rollup)
        finally:
            con.unregister("_b")
            con.unregister("_c")
        n_chk = self._insert_rows("checks", chk.drop_columns(["_item"])) if chk.num_rows else 0
        return dec.num_rows, n_chk, 0

    def _keys(self, sql: str, dec: pa.Table, chk: pa.Table, n: int) -> dict[str, Any]:
        """The columns `sql` gives per decision row, as arrays in row order (the database
        returns them in any order: placed by `_pos`, cheaper than sorting), and under `_rest`
        the rows it could not place (a table, or None)."""
        con = self._con
        con.register("_d", dec)
        con.register("_c", chk)
        try:
            result = con.execute(sql).to_arrow_table()
        finally:
            con.unregister("_d")
            con.unregister("_c")
        pos = result.column("_pos")
        rows = result.filter(pc.is_valid(pos)) if pos.null_count else result
        where = rows.column("_pos").to_numpy()
        out: dict[str, Any] = {"_rest": result.filter(pc.is_null(pos)) if pos.null_count
                               else None}
        for name in rows.column_names:
            if name == "_pos" or name.startswith("o_"):
                continue
            column = rows.column(name)
            values = np.zeros(n, dtype=column.type.to_pandas_dtype())
            values[where] = column.fill_null(0).to_numpy()
            out[name] = values
            if column.null_count:
                nulls = np.zeros(n, dtype=bool)
                nulls[where] = column.is_null().to_numpy(zero_copy_only=False)
                out[f"{name}_null"] = nulls
            elif name in ("lo", "hi"):
                out[f"{name}_null"] = np.zeros(n, dtype=bool)
        return out

    def _keys_any_order(self, dec: pa.Table, chk: pa.Table, n_checks: Any, sources: list[str],
                        qrows: list[QRow], now: float
                        ) -> tuple[dict[str, np.ndarray], int, pa.Table, int]:
        """Keys when checks come in another order (Arrow tables handed in directly): grouped
        by decision id. Quarantines checks without a decision. Returns (keys, orphan units,
        checks, duplicate check rows dropped)."""
        n = dec.num_rows
        duplicates = 0
        keys = self._keys(KEYS_SQL, dec, chk, n)
        if np.any(keys["n"] > n_checks.to_numpy(zero_copy_only=False)):
            # More checks than the decision says: if (decision, idx) repeats within one part
            # (the same decision twice in one table), the first copy is the check.
            frame = pl.from_arrow(chk)
            assert isinstance(frame, pl.DataFrame)
            unique = frame.unique(subset=UNIT + ["idx"], keep="first", maintain_order=True)
            if unique.height < frame.height:
                duplicates += frame.height - unique.height
                chk = unique.to_arrow().cast(chk.schema)
                keys = self._keys(KEYS_SQL, dec, chk, n)
        rest = keys.pop("_rest")
        orphans = 0 if rest is None else rest.num_rows
        if orphans:
            self._quarantine_orphans(rest, chk, sources, qrows, now)
        return keys, orphans, chk, duplicates

    def _store_round(self, cand: pa.Table, chk: pa.Table, unit: pa.Array | None,
                     sources: list[str], qrows: list[QRow], now: float) -> tuple[pa.Table, int]:
        """Insert the candidates (one copy per id) that are not stored yet; the others are
        duplicates (with their checks) or conflicts. Returns (inserted rows, duplicates)."""
        stored = self._stored_matches(cand)
        if stored is None:
            self._insert_rows("decisions", cand.drop_columns(["_item", "_pos"]))
            return cand, 0
        same, conflicting = stored
        taken = pa.array(sorted(same | conflicting), pa.int64())
        is_taken = pc.is_in(cand.column("_pos"), value_set=taken)
        if conflicting:
            rows = cand.filter(pc.is_in(cand.column("_pos"),
                                        value_set=pa.array(sorted(conflicting), pa.int64())))
            self._quarantine_units(rows, chk, unit, sources, qrows, now, [
                f"decisions.decision_id: {show_id(did)} conflicts with the stored decision of "
                f"that id in run {show_id(run)} (other content); the stored one is kept"
                for run, did in _keys_of(rows)])
        duplicates = 0
        if same:
            dup_rows = cand.filter(pc.is_in(cand.column("_pos"),
                                            value_set=pa.array(sorted(same), pa.int64())))
            duplicates = dup_rows.num_rows + int(pc.sum(dup_rows.column("n_checks")).as_py() or 0)
        new = cand.filter(pc.invert(is_taken))
        if new.num_rows:
            self._insert_rows("decisions", new.drop_columns(["_item", "_pos"]))
        return new, duplicates

    def _stored_matches(self, cand: pa.Table) -> tuple[set[int], set[int]] | None:
        """None when no candidate is stored; else the `_pos` of the candidates whose stored
        copy has the same content, and of those whose stored copy differs."""
        con = self._con
        con.register("_k", cand.select(["id_key"]))
        try:
            # One UBIGINT column is all the common case reads; ids only on a hit.
            probe = "FROM decisions WHERE id_key IN (SELECT id_key FROM _k)"
            if not con.execute(f"SELECT count(*) {probe}").fetchall()[0][0]:
                return None
            hits = con.execute(f"SELECT run_id, decision_id, content_key AS stored {probe}"
                               ).to_arrow_table()
        finally:
            con.unregister("_k")
        frame = pl.from_arrow(cand.select(["_pos", "run_id", "decision_id", "content_key"]))
        stored = pl.from_arrow(hits)
        assert isinstance(frame, pl.DataFrame) and isinstance(stored, pl.DataFrame)
        matched = frame.join(stored, on=["run_id", "decision_id"], how="inner")  # exact ids
        if matched.height == 0:
            return None
        same = set(matched.filter(pl.col("stored") == pl.col("content_key"))["_pos"].to_list())
        every = set(matched["_pos"].to_list())
        return same, every - same

    def _quarantine_units(self, rows: pa.Table, chk: pa.Table, unit: pa.Array | None,
                          sources: list[str], qrows: list[QRow], now: float,
                          reasons: list[str]) -> None:
        items = rows.column("_item").to_pylist()
        for item, reason, raw in zip(items, reasons, _unit_raws(rows, chk, unit)):
            qrows.append(quarantine_row(sources[item], reason, raw, now))

    def _quarantine_orphans(self, orphans: pa.Table, chk: pa.Table, sources: list[str],
                            qrows: list[QRow], now: float) -> None:
        units = orphans.select(["o_item", "o_run", "o_did"]).rename_columns(UNIT)
        stub = pl.from_arrow(units)
        frame = pl.from_arrow(chk)
        assert isinstance(stub, pl.DataFrame) and isinstance(frame, pl.DataFrame)
        rows = frame.join(stub, on=UNIT, how="semi").to_arrow().cast(chk.schema)
        by_unit: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in _pylist(rows):
            by_unit.setdefault(tuple(row[k] for k in UNIT), []).append(_plain(row))
        for (item, run, did), checks in by_unit.items():
            qrows.append(quarantine_row(
                sources[item], f"checks: no decision {show_id(did)} of run {show_id(run)} in "
                f"the same batch", json.dumps({"checks": checks}, default=str), now))

    # --- rows of one table -------------------------------------------------------------------

    def _insert_rows(self, name: str, table: pa.Table) -> int:
        """Insert `table` and its rollup partials as they are."""
        con = self._con
        con.register("_b", table)
        try:
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _b")
            for rollup in ROLLUPS.get(name, ()):
                con.execute(rollup)
        finally:
            con.unregister("_b")
        return table.num_rows

    def _insert_new(self, name: str, table: pa.Table,
                    key: tuple[str, ...] | None = None) -> int:
        """Insert the rows whose natural key (or `key`) is not stored yet; returns how many."""
        con = self._con
        keys = list(key or NATURAL_KEYS[name])
        if table.num_rows > 1:
            df = pl.from_arrow(table)
            assert isinstance(df, pl.DataFrame)
            if df.select(pl.struct(keys).n_unique()).item() < df.height:
                table = _conform(name, df.unique(subset=keys, keep="first",
                                                 maintain_order=True).to_arrow())
        key_cols = ", ".join(keys)
        where = "run_id IN (SELECT DISTINCT run_id FROM _b)"
        if name in WINDOWED:
            lo, hi = pc.min_max(table.column("ts")).values()
            # Literal bounds (our own timestamps) let DuckDB prune row groups by zone maps.
            where += (f" AND ts BETWEEN TIMESTAMP '{lo.as_py().isoformat()}'"
                      f" AND TIMESTAMP '{hi.as_py().isoformat()}'")
        collisions = (f"SELECT e.* FROM (SELECT {key_cols} FROM {name} WHERE {where}) e "
                      f"SEMI JOIN _b USING ({key_cols})")
        con.register("_b", table)
        try:
            # Usually nothing collides; only then is the batch filtered (in polars), which is
            # cheaper than materialising an anti-join of every batch in the database.
            if con.execute(f"SELECT count(*) FROM ({collisions})").fetchall()[0][0]:
                stored = con.sql(collisions).pl()
                df = pl.from_arrow(table)
                assert isinstance(df, pl.DataFrame)
                table = _conform(name, df.join(stored, on=keys, how="anti",
                                               nulls_equal=True).to_arrow())
        finally:
            con.unregister("_b")
        if table.num_rows:
            self._insert_rows(name, table)
        return table.num_rows

    def _register_runs(self, run_ids: list[str]) -> None:
        con = self._con
        known = {r[0] for r in con.execute(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
            [run_ids]).fetchall()}
        for run_id in run_ids:
            if run_id not in known:
                con.execute("INSERT INTO runs VALUES (?, ?, now()::TIMESTAMP, NULL, ?)",
                            [run_id, run_id, self._run_meta])
            elif self._run_meta is not None:
                # A run stored before (a restarted collector): it joins the experiment unless
                # it already belongs to one.
                con.execute("UPDATE runs SET meta = ? WHERE run_id = ? AND meta IS NULL",
                            [self._run_meta, run_id])


def _set_keys(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(c).to_pylist() for c in NATURAL_KEYS["rulesets"])))


def _with_item(table: pa.Table, item: int) -> pa.Table:
    return table.append_column("_item", pa.array(np.full(table.num_rows, item, np.int32)))


def _concat(parts: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    """One table per name; decisions and checks tagged with their part (`_item`), since a
    decision's checks are those of its own part."""
    grouped: dict[str, list[pa.Table]] = {}
    for i, tables in enumerate(parts):
        for name, table in tables.items():
            grouped.setdefault(name, []).append(
                _with_item(table, i) if name in ("decisions", "checks") else table)
    return {n: pa.concat_tables(ts) if len(ts) > 1 else ts[0] for n, ts in grouped.items()}


def _rounds(dec: pa.Table) -> Iterator[pa.Table]:
    """The decisions in rounds: each round holds one copy of an id (the first copies first)."""
    if dec.num_rows == 0:
        return
    if pc.count_distinct(dec.column("id_key")).as_py() == dec.num_rows:
        yield dec  # the common case: no id twice
        return
    frame = pl.from_arrow(dec.select(["run_id", "decision_id"]))
    assert isinstance(frame, pl.DataFrame)
    rank = frame.select(pl.int_range(pl.len()).over(["run_id", "decision_id"]).alias("r"))["r"]
    ranks = pa.array(rank.to_numpy())
    top = rank.max()  # None when there are no rows
    for r in range((top if isinstance(top, int) else 0) + 1):
        yield dec.filter(pc.equal(ranks, r))


def _aligned(dec: pa.Table, chk: pa.Table) -> pa.Array | None:
    """For checks that come as their decisions' checks in order (decision 0's idx 0..n-1, then
    decision 1's, ...), the decision row of each check; else None."""
    counts = dec.column("n_checks").to_numpy(zero_copy_only=False).astype(np.int64)
    total = int(counts.sum())
    if total != chk.num_rows:
        return None
    unit = np.repeat(np.arange(dec.num_rows, dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    idx = chk.column("idx").to_numpy(zero_copy_only=False)
    if not np.array_equal(idx, np.arange(total, dtype=np.int64) - starts):
        return None
    take = pa.array(unit)
    for col in UNIT:
        if not pc.all(pc.equal(chk.column(col), dec.column(col).take(take))).as_py():
            return None
    return take
