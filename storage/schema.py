"""All DDL, in one place, as forward migrations.

Designed for two backends: a DuckDB file today and a DuckLake catalog later. DuckLake has no
primary keys, unique constraints or indexes, so none are declared here: idempotency is an
anti-join on each table's natural key (`NATURAL_KEYS`), and rollups are appended partial
aggregates that queries sum and `compact_rollups` folds. JSON columns are VARCHAR holding JSON text
so both backends read them the same way.

Decisions carry two 64-bit keys (v3) so that de-duplication by `decision_id` stays cheap however
large the table grows: probing one UBIGINT column costs a fraction of an anti-join on VARCHAR ids
(no ts window: the same id with another ts is the same decision).
- `id_key`: DuckDB's `hash()` of (run_id, decision_id); a hit is verified on the ids.
- `content_key`: `hash()` over the decision's columns and its checks' (`DECISION_CONTENT`,
  `CHECK_CONTENT`): equal for a re-delivery, different for another version of the decision.
`hash()` is fast (MD5 over the same text cost ten times more) but DuckDB does not promise it
across versions, so `store_meta` keeps what it gave for fixed values when the keys were made;
a writer that finds another value (a DuckDB upgrade) makes every key again (`ensure_keys`).
All writers of one store therefore run the same DuckDB version (a lake requires that anyway).
"""

from __future__ import annotations

import logging
from typing import Final

import duckdb

from .errors import SchemaTooNew
from .latency_buckets import bucket_sql
from .transaction import transaction

log = logging.getLogger(__name__)

SCHEMA_VERSION_TABLE: Final = "schema_version"

MIGRATIONS: Final[list[tuple[int, str, list[str]]]] = [
    (1, "initial schema", [
        """CREATE TABLE runs (
            run_id VARCHAR NOT NULL, name VARCHAR, created_at TIMESTAMP NOT NULL,
            source VARCHAR, meta VARCHAR)""",
        """CREATE TABLE rollouts (
            run_id VARCHAR NOT NULL, rollout_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL, agent_id VARCHAR, round INTEGER, arm VARCHAR,
            duration_s DOUBLE, metadata VARCHAR)""",
        """CREATE TABLE decisions (
            run_id VARCHAR NOT NULL, decision_id VARCHAR NOT NULL, rollout_id VARCHAR,
            agent_id VARCHAR NOT NULL, round INTEGER NOT NULL, arm VARCHAR NOT NULL,
            mode VARCHAR NOT NULL, action_kind VARCHAR NOT NULL, action_summary VARCHAR,
            action_digest VARCHAR, verdict VARCHAR NOT NULL, executed BOOLEAN NOT NULL,
            covered BOOLEAN NOT NULL, attempted BOOLEAN NOT NULL, evasion BOOLEAN NOT NULL,
            n_checks SMALLINT NOT NULL, latency_us BIGINT NOT NULL, ts TIMESTAMP NOT NULL,
            extra VARCHAR)""",
        """CREATE TABLE checks (
            run_id VARCHAR NOT NULL, decision_id VARCHAR NOT NULL, idx SMALLINT NOT NULL,
            round INTEGER NOT NULL, arm VARCHAR NOT NULL, agent_id VARCHAR NOT NULL,
            service VARCHAR NOT NULL, rule_id VARCHAR NOT NULL, verdict VARCHAR NOT NULL,
            raw_verdict VARCHAR, boundary VARCHAR, severity VARCHAR, enforced BOOLEAN NOT NULL,
            latency_us BIGINT NOT NULL, reason VARCHAR, ts TIMESTAMP NOT NULL, extra VARCHAR)""",
        """CREATE TABLE rewards (
            run_id VARCHAR NOT NULL, reward_id VARCHAR NOT NULL, rollout_id VARCHAR,
            agent_id VARCHAR, round INTEGER NOT NULL, arm VARCHAR NOT NULL,
            value DOUBLE NOT NULL, ts TIMESTAMP NOT NULL)""",
        """CREATE TABLE events (
            run_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, rollout_id VARCHAR,
            event_type VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, payload VARCHAR)""",
        # Appended partial aggregates: one row per (key, ingest batch); queries sum them.
        """CREATE TABLE rollup_agent (
            run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, round INTEGER NOT NULL,
            agent_id VARCHAR NOT NULL, actions BIGINT NOT NULL, covered BIGINT NOT NULL,
            enforce_mode BIGINT NOT NULL, attempted BIGINT NOT NULL, blocked BIGINT NOT NULL,
            escaped BIGINT NOT NULL, evasions BIGINT NOT NULL, executed BIGINT NOT NULL,
            latency_us_sum BIGINT NOT NULL, reward_n BIGINT NOT NULL, reward_sum DOUBLE NOT NULL,
            reward_sq_sum DOUBLE NOT NULL, ts_min TIMESTAMP, ts_max TIMESTAMP)""",
        """CREATE TABLE rollup_rule (
            run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, round INTEGER NOT NULL,
            service VARCHAR NOT NULL, rule_id VARCHAR NOT NULL, minute TIMESTAMP NOT NULL,
            checks BIGINT NOT NULL, enforced BIGINT NOT NULL, warns BIGINT NOT NULL,
            escalates BIGINT NOT NULL, blocks BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL,
            latency_us_max BIGINT NOT NULL)""",
        """CREATE TABLE alerts (
            fingerprint VARCHAR NOT NULL, alertname VARCHAR NOT NULL, run_id VARCHAR,
            state VARCHAR NOT NULL, severity VARCHAR, labels VARCHAR, annotations VARCHAR,
            value DOUBLE, active_since TIMESTAMP, updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE alert_events (
            fingerprint VARCHAR NOT NULL, alertname VARCHAR NOT NULL, run_id VARCHAR,
            from_state VARCHAR NOT NULL, to_state VARCHAR NOT NULL, value DOUBLE,
            labels VARCHAR, ts TIMESTAMP NOT NULL)""",
        """CREATE TABLE silences (
            silence_id VARCHAR NOT NULL, matchers VARCHAR NOT NULL, comment VARCHAR,
            created_by VARCHAR, starts_at TIMESTAMP NOT NULL, ends_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE ingest_state (
            source VARCHAR NOT NULL, cursor VARCHAR NOT NULL, updated_at TIMESTAMP NOT NULL,
            stats VARCHAR)""",
        """CREATE TABLE quarantine (
            source VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, reason VARCHAR NOT NULL,
            raw VARCHAR)""",
    ]),
    (2, "alert bookkeeping (for/keep_firing_for counters) survives restarts", [
        "ALTER TABLE alerts ADD COLUMN meta VARCHAR",
    ]),
]

# The content of a decision (for duplicate vs conflict): every column but its identity and keys,
# and every column of its checks but the copies of the decision's own (round, arm, agent, ts).
# Must list the DDL's columns (tests/storage checks it does).
DECISION_CONTENT: Final = (
    "rollout_id", "agent_id", "round", "arm", "mode", "action_kind", "action_summary",
    "action_digest", "verdict", "executed", "covered", "attempted", "evasion", "n_checks",
    "latency_us", "ts", "extra")
CHECK_CONTENT_V3: Final = (
    "idx", "service", "rule_id", "verdict", "raw_verdict", "boundary", "severity", "enforced",
    "latency_us", "reason", "extra")
CHECK_CONTENT: Final = (*CHECK_CONTENT_V3, "ruleset")  # v4
CHECK_COPIES: Final = ("run_id", "decision_id", "round", "arm", "agent_id", "ts")
KEY_COLUMNS: Final = ("id_key", "content_key")
META_TABLE: Final = "store_meta"
# The value of `KEY_CANARY_SQL` when the stored keys were made: another DuckDB may hash
# differently, and then the keys are made again (`ensure_keys`). One value of every type the
# keys hash, NULL included.
KEY_CANARY: Final = "key_hash"
KEY_CANARY_SQL: Final = (
    "SELECT hash('tractatus-watch', 'ü', 7::SMALLINT, 11::INTEGER, 13::BIGINT, 17::HUGEINT, "
    "true, TIMESTAMP '2026-01-02 03:04:05.678901', NULL::VARCHAR)::VARCHAR")


def id_key_sql(alias: str) -> str:
    """The UBIGINT identity key of the decision row `alias`."""
    return f"hash({alias}.run_id, {alias}.decision_id)"


def check_hash_sql(alias: str, columns: tuple[str, ...] = CHECK_CONTENT) -> str:
    return f"hash({', '.join(f'{alias}.{c}' for c in columns)})"


def checks_agg_sql(source: str, group: str = "run_id, decision_id", where: str = "",
                   columns: tuple[str, ...] = CHECK_CONTENT) -> str:
    """Per decision of `source` (a table of checks): rows, idx range, and the order-independent
    sum of the check hashes (each includes its idx, so order still counts)."""
    return (f"SELECT {group}, count(*) AS n, min(idx) AS lo, max(idx) AS hi, "
            f"sum({check_hash_sql('c', columns)})::HUGEINT AS h FROM {source} c {where} "
            "GROUP BY ALL")


def decision_content_sql(alias: str, n: str, h: str) -> str:
    """The content key of decision row `alias` whose checks number `n` and hash-sum to `h`."""
    cols = ", ".join(f"{alias}.{c}" for c in DECISION_CONTENT)
    return f"hash({cols}, ({n})::BIGINT, ({h})::HUGEINT)"


def rekey_sql(check_columns: tuple[str, ...] = CHECK_CONTENT) -> list[str]:
    """Every stored decision's keys, made from the stored rows (a migration's backfill, and
    again when DuckDB's hash changed); migrations pass the check columns of their version."""
    return [
        f"UPDATE decisions SET id_key = {id_key_sql('decisions')}, "
        f"content_key = {decision_content_sql('decisions', '0', 'NULL')}",
        f"UPDATE decisions SET content_key = {decision_content_sql('decisions', 'ck.n', 'ck.h')} "
        f"FROM ({checks_agg_sql('checks', columns=check_columns)}) ck "
        "WHERE decisions.run_id = ck.run_id AND decisions.decision_id = ck.decision_id",
    ]


REKEY: Final = rekey_sql()

MIGRATIONS.append((3, "decision keys: de-duplication by decision_id alone", [
    "ALTER TABLE decisions ADD COLUMN id_key UBIGINT",
    "ALTER TABLE decisions ADD COLUMN content_key UBIGINT",
    *rekey_sql(CHECK_CONTENT_V3),
    f"CREATE TABLE {META_TABLE} (name VARCHAR NOT NULL, value VARCHAR NOT NULL)",
    # Only with keys to vouch for: an empty store stays empty (a copy target must be).
    f"INSERT INTO {META_TABLE} SELECT '{KEY_CANARY}', ({KEY_CANARY_SQL}) "
    "WHERE EXISTS (SELECT 1 FROM decisions)",
]))


def _counter(table: str, column: str) -> str:
    # Nullable: neither DuckDB nor DuckLake adds a column with a constraint (and a lake refuses
    # SET NOT NULL next to the tables it has just created). The writer always fills it.
    return f"ALTER TABLE {table} ADD COLUMN {column} BIGINT DEFAULT 0"


MIGRATIONS.append((4, "one truth for every number: rule-set versions (per-rule denominators), "
                      "would-have-blocked, enforced blocks per rule, run lifecycle", [
    # Which rules each check evaluated: its service's rule-set version, and the sets' rules.
    "ALTER TABLE checks ADD COLUMN ruleset VARCHAR",
    """CREATE TABLE rulesets (
        run_id VARCHAR NOT NULL, service VARCHAR NOT NULL, ruleset VARCHAR NOT NULL,
        rule_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL)""",
    "ALTER TABLE rollup_rule ADD COLUMN ruleset VARCHAR",
    _counter("rollup_rule", "enforced_blocks"),
    _counter("rollup_agent", "would_have_blocked"),
    # The new counters of the rows stored so far, as partial aggregates of their own (rollups
    # are sums of partial rows, so nothing stored is rewritten).
    """INSERT INTO rollup_rule (run_id, arm, round, service, rule_id, minute, checks, enforced,
           warns, escalates, blocks, latency_us_sum, latency_us_max, ruleset, enforced_blocks)
       SELECT run_id, arm, round, service, rule_id, date_trunc('minute', ts), 0, 0, 0, 0, 0, 0,
              0, NULL, count(*)
       FROM checks WHERE verdict = 'block' AND enforced GROUP BY ALL""",
    """INSERT INTO rollup_agent (run_id, arm, round, agent_id, actions, covered, enforce_mode,
           attempted, blocked, escaped, evasions, executed, latency_us_sum, reward_n,
           reward_sum, reward_sq_sum, ts_min, ts_max, would_have_blocked)
       SELECT run_id, arm, round, agent_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, NULL, NULL,
              count(*)
       FROM decisions WHERE attempted AND mode <> 'enforce' GROUP BY ALL""",
    """CREATE TABLE run_events (
        run_id VARCHAR NOT NULL, event VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, source VARCHAR,
        detail VARCHAR)""",
    # The checks' content now includes their rule-set version.
    *rekey_sql(CHECK_CONTENT),
]))

MIGRATIONS.append((5, "latency and action-kind rollup: the report without scanning decisions", [
    """CREATE TABLE rollup_latency (
        run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, action_kind VARCHAR NOT NULL,
        latency_us BIGINT NOT NULL, actions BIGINT NOT NULL, executed BIGINT NOT NULL)""",
    """INSERT INTO rollup_latency
       SELECT run_id, arm, action_kind, latency_us, count(*), count_if(executed)
       FROM decisions GROUP BY ALL""",
]))

MIGRATIONS.append((6, "per-round rollups without agent and minute: charts and KPIs from tables "
                      "that grow with rounds and rules, not with agents or time", [
    """CREATE TABLE rollup_round (
        run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, round INTEGER NOT NULL,
        actions BIGINT NOT NULL, covered BIGINT NOT NULL, enforce_mode BIGINT NOT NULL,
        attempted BIGINT NOT NULL, blocked BIGINT NOT NULL, escaped BIGINT NOT NULL,
        evasions BIGINT NOT NULL, executed BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL,
        reward_n BIGINT NOT NULL, reward_sum DOUBLE NOT NULL, reward_sq_sum DOUBLE NOT NULL,
        ts_min TIMESTAMP, ts_max TIMESTAMP, would_have_blocked BIGINT)""",
    """CREATE TABLE rollup_rule_round (
        run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, round INTEGER NOT NULL,
        service VARCHAR NOT NULL, rule_id VARCHAR NOT NULL, checks BIGINT NOT NULL,
        enforced BIGINT NOT NULL, warns BIGINT NOT NULL, escalates BIGINT NOT NULL,
        blocks BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL, latency_us_max BIGINT NOT NULL,
        ruleset VARCHAR, enforced_blocks BIGINT)""",
    """CREATE TABLE rollup_check_latency (
        run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, service VARCHAR NOT NULL,
        round INTEGER NOT NULL, bucket_us BIGINT NOT NULL, checks BIGINT NOT NULL)""",
    f"""INSERT INTO rollup_check_latency
        SELECT run_id, arm, service, round, {bucket_sql('latency_us')}, count(*)
        FROM checks GROUP BY ALL""",
    # What is stored so far, folded (the sums of the partials are the same).
    """INSERT INTO rollup_round
       SELECT run_id, arm, round, sum(actions), sum(covered), sum(enforce_mode),
              sum(attempted), sum(blocked), sum(escaped), sum(evasions), sum(executed),
              sum(latency_us_sum), sum(reward_n), sum(reward_sum), sum(reward_sq_sum),
              min(ts_min), max(ts_max), coalesce(sum(would_have_blocked), 0)
       FROM rollup_agent GROUP BY run_id, arm, round""",
    """INSERT INTO rollup_rule_round
       SELECT run_id, arm, round, service, rule_id, sum(checks), sum(enforced), sum(warns),
              sum(escalates), sum(blocks), sum(latency_us_sum), max(latency_us_max), ruleset,
              coalesce(sum(enforced_blocks), 0)
       FROM rollup_rule GROUP BY run_id, arm, round, service, rule_id, ruleset""",
]))

MIGRATIONS.append((7, "witnessed actions: the tool calls the gateway saw, and their rollup", [
    """CREATE TABLE witnessed (
        run_id VARCHAR NOT NULL, witness_id VARCHAR NOT NULL, rollout_id VARCHAR NOT NULL,
        position INTEGER NOT NULL, idx SMALLINT NOT NULL, tool VARCHAR NOT NULL,
        digest VARCHAR NOT NULL, agent_id VARCHAR NOT NULL, arm VARCHAR NOT NULL,
        round INTEGER NOT NULL, ts TIMESTAMP NOT NULL)""",
    """CREATE TABLE rollup_witness (
        run_id VARCHAR NOT NULL, arm VARCHAR NOT NULL, round INTEGER NOT NULL,
        agent_id VARCHAR NOT NULL, witnessed BIGINT NOT NULL, ts_min TIMESTAMP,
        ts_max TIMESTAMP)""",
]))

MIGRATIONS.append((8, "the penalized arm: decisions in penalize mode and the penalties they cost", [
    # No stored decision can be in penalize mode (earlier versions refused the mode), so 0 is
    # every stored row's count, and would_have_blocked (shadow and off verdicts) is unchanged.
    _counter("rollup_agent", "penalize_mode"),
    _counter("rollup_agent", "penalized"),
    _counter("rollup_round", "penalize_mode"),
    _counter("rollup_round", "penalized"),
]))

LATEST_VERSION: Final = MIGRATIONS[-1][0]

# The identity of a record in each event table: re-delivery of the same key changes nothing.
NATURAL_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "rulesets": ("run_id", "service", "ruleset", "rule_id"),
    "rollouts": ("run_id", "rollout_id", "status"),
    "decisions": ("run_id", "decision_id"),
    "checks": ("run_id", "decision_id", "idx"),
    "rewards": ("run_id", "reward_id"),
    "events": ("run_id", "event_id"),
    "witnessed": ("run_id", "witness_id"),
}

ROLLUP_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "rollup_agent": ("run_id", "arm", "round", "agent_id"),
    "rollup_rule": ("run_id", "arm", "round", "service", "rule_id", "ruleset", "minute"),
    "rollup_latency": ("run_id", "arm", "action_kind", "latency_us"),
    "rollup_round": ("run_id", "arm", "round"),
    "rollup_rule_round": ("run_id", "arm", "round", "service", "rule_id", "ruleset"),
    "rollup_check_latency": ("run_id", "arm", "service", "round", "bucket_us"),
    "rollup_witness": ("run_id", "arm", "round", "agent_id"),
}
# How each rollup measure folds: everything sums except these.
ROLLUP_FOLDS: Final[dict[str, str]] = {
    "ts_min": "min", "ts_max": "max", "latency_us_max": "max",
}


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_catalog = current_database() AND table_schema = current_schema() "
        "ORDER BY ordinal_position", [table]).fetchall()
    return [r[0] for r in rows]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    # Asked of the table itself, not information_schema, which a Quack-attached database lacks.
    try:
        row = con.execute(f"SELECT max(version) FROM {SCHEMA_VERSION_TABLE}").fetchall()[0]
    except duckdb.CatalogException:
        return 0
    return int(row[0] or 0)


def migrate(con: duckdb.DuckDBPyConnection, *, path: str = "database") -> int:
    """Apply pending migrations in one transaction; refuse a database newer than this code."""
    version = current_version(con)
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this tractatus-watch supports "
            f"({LATEST_VERSION}); upgrade tractatus-watch to open it")
    if version == LATEST_VERSION:
        return version
    # A backfill over millions of rows takes a while: no progress bar on a collector's stdout.
    con.execute("SET enable_progress_bar = false")
    with transaction(con):
        if version == 0:
            con.execute(f"CREATE TABLE {SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL, "
                        "description VARCHAR, applied_at TIMESTAMP NOT NULL)")
        for number, description, statements in MIGRATIONS:
            if number <= version:
                continue
            for statement in statements:
                con.execute(statement)
            con.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?, ?, now()::TIMESTAMP)",
                        [number, description])
    return LATEST_VERSION


def compact_rollups(con: duckdb.DuckDBPyConnection) -> None:
    """Fold the appended partial aggregates into one row per key (same sums, fewer rows)."""
    with transaction(con):
        for table, keys in ROLLUP_KEYS.items():
            measures = [c for c in table_columns(con, table) if c not in keys]
            folds = ", ".join(f"{ROLLUP_FOLDS.get(m, 'sum')}({m}) AS {m}" for m in measures)
            cols = ", ".join(keys)
            con.execute(f"CREATE TEMP TABLE _folded AS SELECT {cols}, {folds} FROM {table} "
                        f"GROUP BY ALL")
            con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _folded")
            con.execute("DROP TABLE _folded")


def ensure_keys(con: duckdb.DuckDBPyConnection) -> bool:
    """Make every decision's keys again if this DuckDB hashes differently from the one that
    made them (see the module docstring). Returns True when the store has no decisions and no
    record of the hash yet: the caller records it (`record_key_hash`) with its first ones."""
    now = con.execute(KEY_CANARY_SQL).fetchall()[0][0]
    values = {r[0] for r in con.execute(f"SELECT value FROM {META_TABLE} WHERE name = ?",
                                        [KEY_CANARY]).fetchall()}
    if values == {now}:
        return False
    if not values and not con.execute("SELECT count(*) FROM (SELECT 1 FROM decisions LIMIT 1)"
                                      ).fetchall()[0][0]:
        return True
    log.warning("storage: this DuckDB hashes differently from the one that made the stored "
                "decision keys; making them again")
    con.execute("SET enable_progress_bar = false")
    with transaction(con):
        for statement in REKEY:
            con.execute(statement)
        con.execute(f"DELETE FROM {META_TABLE} WHERE name = ?", [KEY_CANARY])
        record_key_hash(con)
    return False


def record_key_hash(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"INSERT INTO {META_TABLE} SELECT ?, ({KEY_CANARY_SQL})", [KEY_CANARY])
