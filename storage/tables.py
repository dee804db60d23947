"""The table spec: every stored table's columns, their DuckDB types and which must be present.

This is the one description of the latest schema. The Arrow schemas the writer builds batches
with (`storage/batch.py`) and the fields a row must have to be stored derive from it, and a test
checks that the migrations (`storage/schema.py`, frozen history) produce exactly it
(`DESCRIBE` of a fresh store). Each column reads `name TYPE [mark]`:

- `required`: NOT NULL and, for text, not empty: a row without it is quarantined;
- `not null`: NOT NULL, but the empty string is a value (a check's `rule_id` is "" when the
  service's verdict came from no single rule);
- `stored`: written by the writer itself (decision keys), not part of a batch;
- nothing: nullable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

Mark = Literal["required", "not null", "stored", ""]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str
    mark: Mark = ""

    @property
    def not_null(self) -> bool:
        return self.mark in ("required", "not null")


def _columns(spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec.split(","):
        name, sql_type, *mark = item.split(maxsplit=2)
        out.append(Column(name, sql_type, " ".join(mark) if mark else ""))  # type: ignore[arg-type]
    return tuple(out)


# The measures of the per-round rollups, with and without the agent in the key.
_ROUND_KEY: Final = "run_id VARCHAR not null, arm VARCHAR not null, round INTEGER not null, "
_ROUND_MEASURES: Final = (
    "actions BIGINT not null, covered BIGINT not null, enforce_mode BIGINT not null, "
    "attempted BIGINT not null, blocked BIGINT not null, escaped BIGINT not null, "
    "evasions BIGINT not null, executed BIGINT not null, latency_us_sum BIGINT not null, "
    "reward_n BIGINT not null, reward_sum DOUBLE not null, reward_sq_sum DOUBLE not null, "
    "ts_min TIMESTAMP, ts_max TIMESTAMP, would_have_blocked BIGINT, penalize_mode BIGINT, "
    "penalized BIGINT")

TABLES: Final[dict[str, tuple[Column, ...]]] = {name: _columns(spec) for name, spec in {
    "runs": "run_id VARCHAR required, name VARCHAR, created_at TIMESTAMP required, "
            "source VARCHAR, meta VARCHAR",
    "rollouts": "run_id VARCHAR required, rollout_id VARCHAR required, status VARCHAR required, "
                "ts TIMESTAMP required, agent_id VARCHAR, round INTEGER, arm VARCHAR, "
                "duration_s DOUBLE, metadata VARCHAR",
    "decisions": "run_id VARCHAR required, decision_id VARCHAR required, rollout_id VARCHAR, "
                 "agent_id VARCHAR required, round INTEGER required, arm VARCHAR required, "
                 "mode VARCHAR required, action_kind VARCHAR required, action_summary VARCHAR, "
                 "action_digest VARCHAR, verdict VARCHAR required, executed BOOLEAN required, "
                 "covered BOOLEAN required, attempted BOOLEAN required, "
                 "evasion BOOLEAN required, n_checks SMALLINT required, "
                 "latency_us BIGINT required, ts TIMESTAMP required, extra VARCHAR, "
                 "id_key UBIGINT stored, content_key UBIGINT stored",
    "checks": "run_id VARCHAR required, decision_id VARCHAR required, idx SMALLINT required, "
              "round INTEGER required, arm VARCHAR required, agent_id VARCHAR required, "
              "service VARCHAR required, rule_id VARCHAR not null, verdict VARCHAR required, "
              "raw_verdict VARCHAR, boundary VARCHAR, severity VARCHAR, "
              "enforced BOOLEAN required, latency_us BIGINT required, reason VARCHAR, "
              "ts TIMESTAMP required, extra VARCHAR, ruleset VARCHAR",
    "rewards": "run_id VARCHAR required, reward_id VARCHAR required, rollout_id VARCHAR, "
               "agent_id VARCHAR, round INTEGER required, arm VARCHAR required, "
               "value DOUBLE required, ts TIMESTAMP required",
    "events": "run_id VARCHAR required, event_id VARCHAR required, rollout_id VARCHAR, "
              "event_type VARCHAR required, ts TIMESTAMP required, payload VARCHAR",
    # The tool calls the gateway saw in model responses (records/witness.py), v7: the witness
    # of coverage. Arm and agent as the rollout's stamp told the tap ("" when it did not).
    "witnessed": "run_id VARCHAR required, witness_id VARCHAR required, "
                 "rollout_id VARCHAR required, position INTEGER not null, "
                 "idx SMALLINT not null, tool VARCHAR not null, digest VARCHAR required, "
                 "agent_id VARCHAR not null, arm VARCHAR not null, round INTEGER not null, "
                 "ts TIMESTAMP required",
    # Appended partial aggregates: one row per (key, ingest batch); queries sum them.
    "rollup_agent": _ROUND_KEY + "agent_id VARCHAR not null, " + _ROUND_MEASURES,
    "rollup_rule": "run_id VARCHAR not null, arm VARCHAR not null, round INTEGER not null, "
                   "service VARCHAR not null, rule_id VARCHAR not null, "
                   "minute TIMESTAMP not null, checks BIGINT not null, "
                   "enforced BIGINT not null, warns BIGINT not null, "
                   "escalates BIGINT not null, blocks BIGINT not null, "
                   "latency_us_sum BIGINT not null, latency_us_max BIGINT not null, "
                   "ruleset VARCHAR, enforced_blocks BIGINT",
    # The same partials without agent and without minute (v6): per round, what the charts and
    # KPIs read, so their cost grows with rounds (and rules), not with agents or time.
    "rollup_round": _ROUND_KEY + _ROUND_MEASURES,
    "rollup_rule_round": "run_id VARCHAR not null, arm VARCHAR not null, "
                         "round INTEGER not null, service VARCHAR not null, "
                         "rule_id VARCHAR not null, checks BIGINT not null, "
                         "enforced BIGINT not null, warns BIGINT not null, "
                         "escalates BIGINT not null, blocks BIGINT not null, "
                         "latency_us_sum BIGINT not null, latency_us_max BIGINT not null, "
                         "ruleset VARCHAR, enforced_blocks BIGINT",
    # Check latency per arm, service and round, in buckets at most 1/32 of their value wide
    # (storage/latency_buckets.py: exact below 64 us), v6: the Overhead view's percentiles.
    "rollup_check_latency": "run_id VARCHAR not null, arm VARCHAR not null, "
                            "service VARCHAR not null, round INTEGER not null, "
                            "bucket_us BIGINT not null, checks BIGINT not null",
    # Witnessed actions per run, arm, round and agent (v7).
    "rollup_witness": _ROUND_KEY + "agent_id VARCHAR not null, witnessed BIGINT not null, "
                      "ts_min TIMESTAMP, ts_max TIMESTAMP",
    # Per arm, action kind and latency value: decisions and executed ones (v5).
    "rollup_latency": "run_id VARCHAR not null, arm VARCHAR not null, "
                      "action_kind VARCHAR not null, latency_us BIGINT not null, "
                      "actions BIGINT not null, executed BIGINT not null",
    # The rules behind each rule-set version a check names (records/rulesets.py), one row per
    # rule; a set without rules is one row with rule_id "".
    "rulesets": "run_id VARCHAR required, service VARCHAR required, ruleset VARCHAR required, "
                "rule_id VARCHAR not null, ts TIMESTAMP required",
    # Run lifecycle, appended: the latest event of a run says whether it ended.
    "run_events": "run_id VARCHAR required, event VARCHAR required, ts TIMESTAMP required, "
                  "source VARCHAR, detail VARCHAR",
    "alerts": "fingerprint VARCHAR not null, alertname VARCHAR not null, run_id VARCHAR, "
              "state VARCHAR not null, severity VARCHAR, labels VARCHAR, annotations VARCHAR, "
              "value DOUBLE, active_since TIMESTAMP, updated_at TIMESTAMP not null, "
              "meta VARCHAR",
    "alert_events": "fingerprint VARCHAR not null, alertname VARCHAR not null, run_id VARCHAR, "
                    "from_state VARCHAR not null, to_state VARCHAR not null, value DOUBLE, "
                    "labels VARCHAR, ts TIMESTAMP not null",
    "silences": "silence_id VARCHAR not null, matchers VARCHAR not null, comment VARCHAR, "
                "created_by VARCHAR, starts_at TIMESTAMP not null, ends_at TIMESTAMP not null",
    "ingest_state": "source VARCHAR not null, cursor VARCHAR not null, "
                    "updated_at TIMESTAMP not null, stats VARCHAR",
    "quarantine": "source VARCHAR not null, ts TIMESTAMP not null, reason VARCHAR not null, "
                  "raw VARCHAR",
    "schema_version": "version INTEGER not null, description VARCHAR, "
                      "applied_at TIMESTAMP not null",
    "store_meta": "name VARCHAR not null, value VARCHAR not null",
}.items()}

# Tables whose rows arrive in batches (the writer's input): the event tables (their rows make a
# run), the side tables that describe runs (rule sets, lifecycle) and quarantine.
EVENT_TABLES: Final = ("rollouts", "decisions", "checks", "rewards", "events", "witnessed")
SIDE_TABLES: Final = ("rulesets", "run_events")
BATCH_TABLES: Final = (*EVENT_TABLES, *SIDE_TABLES, "quarantine")

_ARROW: Final[dict[str, pa.DataType]] = {
    "VARCHAR": pa.string(), "INTEGER": pa.int32(), "SMALLINT": pa.int16(),
    "BIGINT": pa.int64(), "UBIGINT": pa.uint64(), "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us"),
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a batch for `table` (the columns the writer fills itself left out)."""
    return pa.schema([(c.name, _ARROW[c.sql_type]) for c in TABLES[table] if c.mark != "stored"])


def required(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in TABLES[table] if c.mark == "required")


def not_null(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in TABLES[table] if c.not_null)


__all__ = ["BATCH_TABLES", "Column", "EVENT_TABLES", "SIDE_TABLES", "TABLES", "arrow_schema",
           "not_null", "required"]
