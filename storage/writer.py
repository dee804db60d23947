"""The single writer: one thread owns the write connection and commits batches exactly once.

Each commit is one transaction holding the new rows, their rollup partial aggregates, any
quarantined rows and the source cursors, so a crash either keeps all of it or none of it, and a
restarted collector resumes from the stored cursor. Re-delivered records are dropped on their
natural key; the check only reads the batch's timestamp window (a record's `ts` is part of its
payload, so a re-delivery has the same one), which keeps it cheap as the tables grow.
Small submits are coalesced up to one DuckDB row group (122,880 rows) or `flush_interval_s`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Final

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..records.events import MODES
from ..records.verdicts import VERDICTS
from .batch import ARROW_SCHEMAS, EVENT_TABLES, Batch
from .coordination import is_conflict, retry_conflicts
from .schema import NATURAL_KEYS
from .store import Store
from .transaction import transaction

log = logging.getLogger(__name__)

ROW_GROUP: Final = 122_880
# Tables whose collision check reads only the batch's ts window: their ts comes with the record
# (the Governor's clock), so every copy of a record carries the same one. A rollout transition's
# ts is the gateway's updated_at and a reward's the gateway's event time, which differ when the
# same run reaches two gateways: those small tables (about one row per rollout) are checked
# whole, per run.
WINDOWED: Final = frozenset({"decisions", "checks", "events"})
# Columns that must be non-empty for a row to be stored, per table.
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "rollouts": ("run_id", "rollout_id", "status", "ts"),
    "decisions": ("run_id", "decision_id", "agent_id", "round", "arm", "mode", "action_kind",
                  "verdict", "executed", "covered", "attempted", "evasion", "n_checks",
                  "latency_us", "ts"),
    # rule_id may be "" (a service verdict that no single rule produced), never NULL.
    "checks": ("run_id", "decision_id", "idx", "round", "arm", "agent_id", "service",
               "verdict", "enforced", "latency_us", "ts"),
    "rewards": ("run_id", "reward_id", "round", "arm", "value", "ts"),
    "events": ("run_id", "event_id", "event_type", "ts"),
}
VOCAB: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("decisions", "verdict"): VERDICTS, ("decisions", "mode"): MODES,
    ("checks", "verdict"): VERDICTS,
}

# Rollup partial aggregates of the rows a commit adds (registered as `_b`). blocked/escaped follow the definitions
# in records/events.py (Decision.blocked / Decision.escaped).
ROLLUP_AGENT_FROM_DECISIONS: Final = """
INSERT INTO rollup_agent BY NAME
SELECT run_id, arm, round, agent_id, count(*) AS actions, count_if(covered) AS covered,
       count_if(mode = 'enforce') AS enforce_mode, count_if(attempted) AS attempted,
       count_if(attempted AND NOT executed) AS blocked, count_if(attempted AND executed) AS escaped,
       count_if(evasion) AS evasions, count_if(executed) AS executed,
       sum(latency_us)::BIGINT AS latency_us_sum, 0 AS reward_n, 0.0 AS reward_sum,
       0.0 AS reward_sq_sum, min(ts) AS ts_min, max(ts) AS ts_max
FROM _b GROUP BY run_id, arm, round, agent_id"""
ROLLUP_AGENT_FROM_REWARDS: Final = """
INSERT INTO rollup_agent BY NAME
SELECT run_id, arm, round, coalesce(agent_id, '') AS agent_id, 0 AS actions, 0 AS covered,
       0 AS enforce_mode, 0 AS attempted, 0 AS blocked, 0 AS escaped, 0 AS evasions,
       0 AS executed, 0 AS latency_us_sum, count(*) AS reward_n, sum(value) AS reward_sum,
       sum(value * value) AS reward_sq_sum, min(ts) AS ts_min, max(ts) AS ts_max
FROM _b GROUP BY run_id, arm, round, coalesce(agent_id, '')"""
ROLLUP_RULE_FROM_CHECKS: Final = """
INSERT INTO rollup_rule BY NAME
SELECT run_id, arm, round, service, rule_id, date_trunc('minute', ts) AS minute,
       count(*) AS checks, count_if(enforced) AS enforced, count_if(verdict = 'warn') AS warns,
       count_if(verdict = 'escalate') AS escalates, count_if(verdict = 'block') AS blocks,
       sum(latency_us)::BIGINT AS latency_us_sum, max(latency_us) AS latency_us_max
FROM _b GROUP BY ALL"""
ROLLUPS: Final[dict[str, str]] = {
    "decisions": ROLLUP_AGENT_FROM_DECISIONS,
    "rewards": ROLLUP_AGENT_FROM_REWARDS,
    "checks": ROLLUP_RULE_FROM_CHECKS,
}


@dataclass(frozen=True)
class Cursor:
    """Where a source has got to; committed with the rows it produced."""

    source: str
    value: str


class WriterError(RuntimeError):
    pass


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


@dataclass
class _Control:
    stop: bool
    done: threading.Event = field(default_factory=threading.Event)


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


def _problems(name: str, table: pa.Table) -> list[tuple[str, pa.Array | pa.ChunkedArray]]:
    """(reason, row mask) for every check that some row fails; cheap when all rows are fine."""
    found = []
    for col in REQUIRED[name]:
        column = table.column(col)
        missing = pc.is_null(column) if column.null_count else None
        if pa.types.is_string(column.type) and pc.any(pc.equal(column, "")).as_py():
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
    return found


def _split_invalid(name: str, table: pa.Table) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Rows that can be stored, and (reason, raw JSON) for the rest (first failed check)."""
    if name not in REQUIRED or table.num_rows == 0:
        return table, []
    problems = _problems(name, table)
    if not problems:
        return table, []
    bad: pa.Array | pa.ChunkedArray = pa.array([False] * table.num_rows)
    reasons: pa.Array | pa.ChunkedArray = pa.nulls(table.num_rows, pa.string())
    for reason, mask in problems:
        reasons = pc.if_else(pc.and_(mask, pc.invert(bad)), reason, reasons)
        bad = pc.or_(bad, mask)
    out = [(r, json.dumps(row, default=str)) for r, row in
           zip(reasons.filter(bad).to_pylist(), table.filter(bad).to_pylist())]
    return table.filter(pc.invert(bad)), out


class Writer:
    """Owns the write connection. `submit` from any thread; batches commit in submit order."""

    def __init__(self, store: Store, *, max_queue: int = 32, flush_rows: int = ROW_GROUP,
                 flush_interval_s: float = 1.0,
                 on_commit: Callable[[WriterStats], None] | None = None) -> None:
        if store.read_only:
            raise WriterError(f"{store.label} is open read-only")
        self._store = store
        self._queue: queue.Queue[_Item | _Control] = queue.Queue(maxsize=max_queue)
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        self._on_commit = on_commit
        self._error: BaseException | None = None
        self._closed = False
        self.stats = WriterStats()
        self._known_runs: set[str] = set()  # runs already in `runs`: no lookup per commit
        self._con = store.cursor()
        self._coord = store.coordinator()
        self._thread = threading.Thread(target=self._run, name="tw-writer", daemon=True)
        self._thread.start()

    # --- producer side -------------------------------------------------------------------------

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

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def error(self) -> BaseException | None:
        """Why the writer stopped committing (every later call raises WriterError), or None."""
        return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise WriterError(f"writer failed: {self._error}") from self._error

    # --- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Item] = []
        rows: dict[str, int] = {}
        started = 0.0
        while True:
            timeout = None
            if pending:
                timeout = max(0.0, self._flush_interval_s - (time.monotonic() - started))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, _Item):
                if not pending:
                    started = time.monotonic()
                pending.append(item)
                for name, table in item.batch.tables.items():
                    rows[name] = rows.get(name, 0) + table.num_rows
                # A table that reaches a row group is written straight to it, not to the WAL.
                if max(rows.values(), default=0) < self._flush_rows:
                    continue
            if pending and self._error is None:
                try:
                    self._commit_or_quarantine(pending)
                except BaseException as exc:  # surfaced to producers through _check()
                    log.error("writer: commit failed: %s", exc)
                    self._error = exc
            pending, rows = [], {}
            if isinstance(item, _Control):
                item.done.set()
                if item.stop:
                    self._finish()
                    return

    def _finish(self) -> None:
        # On a lake, CHECKPOINT means maintenance (merge, expire): that is `lake maintain`'s job.
        if not self._store.is_lake:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:  # a checkpoint is an optimisation; data is committed
                log.warning("writer: checkpoint failed: %s", exc)
        self._con.close()
        self._coord.close()

    def _commit_or_quarantine(self, items: list[_Item]) -> None:
        try:
            self._commit(items)
        except duckdb.Error as exc:
            if is_conflict(exc):  # the data is fine; the lake stayed too busy: fail loudly
                raise
            if len(items) > 1:  # isolate the item that cannot be stored
                for item in items:
                    self._commit_or_quarantine([item])
                return
            # A single batch the database refuses: keep it whole in quarantine, and still
            # advance its cursor so the source does not re-deliver it forever.
            item = items[0]
            reason = f"batch refused by the database: {str(exc).splitlines()[0]}"
            raw = {name: t.to_pylist() for name, t in item.batch.tables.items()}
            source = item.cursor.source if item.cursor else "writer"
            q = Batch({"quarantine": pa.Table.from_pydict({
                "source": [source], "ts": [int(time.time() * 1e6)], "reason": [reason],
                "raw": [json.dumps(raw, default=str)]}, schema=ARROW_SCHEMAS["quarantine"])})
            self._commit([_Item(q, item.cursor, item.stats)])

    def _commit(self, items: list[_Item]) -> None:
        t0 = time.perf_counter()
        grouped: dict[str, list[pa.Table]] = {}
        for item in items:
            for name, table in item.batch.tables.items():
                if name not in ARROW_SCHEMAS:
                    raise WriterError(f"unknown table {name!r} in batch")
                if table.num_rows:
                    grouped.setdefault(name, []).append(_conform(name, table))
        tables = {n: pa.concat_tables(ts) if len(ts) > 1 else ts[0] for n, ts in grouped.items()}
        quarantine: list[tuple[str, str]] = []
        for name in EVENT_TABLES:
            if name in tables:
                tables[name], rejected = _split_invalid(name, tables[name])
                quarantine.extend(rejected)
        cursors: dict[str, tuple[str, dict[str, Any] | None]] = {
            i.cursor.source: (i.cursor.value, i.stats) for i in items if i.cursor}
        run_ids: set[str] = set()
        for name in EVENT_TABLES:
            if name in tables and tables[name].num_rows:
                run_ids.update(pc.unique(tables[name].column("run_id")).to_pylist())
        # Writers of the same run (other processes on a lake) take turns: each one's anti-join
        # then sees what the previous one committed.
        with self._coord.locked(run_ids):
            added, duplicates = retry_conflicts(
                lambda: self._transaction(tables, run_ids, quarantine, cursors, items))
        self._known_runs.update(run_ids)
        st = self.stats
        for name, n in added.items():
            st.committed_rows[name] = st.committed_rows.get(name, 0) + n
        st.duplicates += duplicates
        st.quarantined += added.get("quarantine", 0)
        st.commits += 1
        st.last_commit_at = time.time()
        st.last_commit_ms = (time.perf_counter() - t0) * 1000
        if self._on_commit is not None:
            try:
                self._on_commit(st)
            except Exception as exc:  # a listener must not break ingestion
                log.warning("writer: on_commit listener failed: %s", exc)

    def _transaction(self, tables: dict[str, pa.Table], run_ids: set[str],
                     quarantine: list[tuple[str, str]],
                     cursors: dict[str, tuple[str, dict[str, Any] | None]],
                     items: list[_Item]) -> tuple[dict[str, int], int]:
        """One attempt at the commit: rows, rollups, quarantine and cursors, all or nothing."""
        con = self._con
        added: dict[str, int] = {}
        duplicates = 0
        with transaction(con):
            for name in EVENT_TABLES:
                table = tables.get(name)
                if table is None or table.num_rows == 0:
                    continue
                n_new = self._insert_new(name, table)
                added[name] = n_new
                duplicates += table.num_rows - n_new
            new_runs = sorted(run_ids - self._known_runs)
            if new_runs:
                self._register_runs(new_runs)
            q_from_batch = tables.get("quarantine")
            if quarantine:
                now_us = int(time.time() * 1e6)
                q_extra = pa.Table.from_pydict({
                    "source": [self._source_of(items)] * len(quarantine),
                    "ts": [now_us] * len(quarantine),
                    "reason": [r for r, _ in quarantine], "raw": [raw for _, raw in quarantine],
                }, schema=ARROW_SCHEMAS["quarantine"])
                q_from_batch = (pa.concat_tables([q_from_batch, q_extra])
                                if q_from_batch is not None else q_extra)
            if q_from_batch is not None and q_from_batch.num_rows:
                con.register("_q", q_from_batch)
                con.execute("INSERT INTO quarantine BY NAME SELECT * FROM _q")
                con.unregister("_q")
                added["quarantine"] = q_from_batch.num_rows
            # Appended, never updated: the newest row per source is its cursor. Updates would
            # make concurrent lake writers conflict; `lake maintain` trims the history.
            for source, (value, stats) in cursors.items():
                con.execute("INSERT INTO ingest_state VALUES (?, ?, now()::TIMESTAMP, ?)",
                            [source, value, json.dumps(stats) if stats is not None else None])
        return added, duplicates

    @staticmethod
    def _source_of(items: list[_Item]) -> str:
        sources = {i.cursor.source for i in items if i.cursor}
        return ",".join(sorted(sources)) if sources else "writer"

    def _insert_new(self, name: str, table: pa.Table) -> int:
        """Insert the rows whose natural key is not stored yet; returns how many."""
        con = self._con
        keys = list(NATURAL_KEYS[name])
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
                con.unregister("_b")
                con.register("_b", table)
            if table.num_rows:
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _b")
                if name in ROLLUPS:
                    con.execute(ROLLUPS[name])
        finally:
            con.unregister("_b")
        return table.num_rows

    def _register_runs(self, run_ids: list[str]) -> None:
        con = self._con
        known = {r[0] for r in con.execute(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
            [run_ids]).fetchall()}
        for run_id in run_ids:
            if run_id not in known:
                con.execute("INSERT INTO runs VALUES (?, ?, now()::TIMESTAMP, NULL, NULL)",
                            [run_id, run_id])
