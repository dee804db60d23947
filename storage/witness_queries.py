"""Reconciliation of witnessed actions with decisions: the one SQL definition of the match.

A witnessed tool call (the `witnessed` table) is matched to the decision that governed it by
rollout, argument digest and order: the k-th call of a rollout with digest D is governed by the
k-th decision of that rollout whose action records `call_digest` D (in decision time order). A
call with no such decision is an ungoverned action; a decision with no such call (no
`call_digest`, or none witnessed) is an unwitnessed decision: an action that bypassed the model,
or a capture gap. The figures built on it are in analysis/metrics.py (`witness_figures`).

Every query here reads one run (and optionally a span of rounds), so the window functions run
over that run's rows only.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .queries import Con, _df

_MATCH = """
WITH w AS (
    SELECT rollout_id, digest, witness_id, tool, position, idx, round, ts,
           nullif(agent_id, '') AS agent_id, nullif(nullif(arm, ''), 'unknown') AS arm,
           row_number() OVER (PARTITION BY rollout_id, digest ORDER BY position, idx) AS k
    FROM witnessed WHERE run_id = $run {w_rounds}
), d AS (
    SELECT rollout_id, decision_id, covered, agent_id, arm, round, ts,
           json_extract_string(extra, '$.action.call_digest') AS digest
    FROM decisions WHERE run_id = $run {d_rounds}
), dk AS (
    SELECT *, row_number() OVER (PARTITION BY rollout_id, digest ORDER BY ts, decision_id) AS k
    FROM d
), owner AS (  -- whose rollout a call with no decision of its own belongs to
    SELECT rollout_id, max(nullif(arm, '')) AS arm, max(nullif(agent_id, '')) AS agent_id
    FROM d GROUP BY rollout_id
)
SELECT coalesce(w.rollout_id, dk.rollout_id) AS rollout_id, w.witness_id, dk.decision_id,
       w.tool, w.position, w.idx,
       coalesce(dk.arm, w.arm, o.arm, 'unknown') AS arm,
       coalesce(dk.agent_id, w.agent_id, o.agent_id, '') AS agent_id,
       coalesce(dk.round, w.round) AS round,
       w.witness_id IS NOT NULL AS witnessed, dk.decision_id IS NOT NULL AS decided,
       coalesce(dk.covered, false) AS covered, coalesce(w.ts, dk.ts) AS ts
FROM w FULL JOIN dk ON w.rollout_id = dk.rollout_id AND w.digest = dk.digest AND w.k = dk.k
LEFT JOIN owner o ON o.rollout_id = w.rollout_id
"""


COUNTS_SCHEMA = pl.Schema({"arm": pl.String(), "agent_id": pl.String(), "round": pl.Int32(),
                           "witnessed": pl.Int64(), "governed": pl.Int64(),
                           "matched": pl.Int64(), "unwitnessed": pl.Int64()})


def _match(rounds: tuple[int, int] | None) -> str:
    span = "AND round BETWEEN $lo AND $hi" if rounds is not None else ""
    return _MATCH.format(w_rounds=span, d_rounds=span)


def _params(run_id: str, rounds: tuple[int, int] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"run": run_id}
    if rounds is not None:
        params.update(lo=rounds[0], hi=rounds[1])
    return params


def witnessed_total(con: Con, run_id: str) -> int:
    """Witnessed actions of a run, from their rollup (0: the run has no witness)."""
    row = con.execute("SELECT coalesce(sum(witnessed), 0) FROM rollup_witness WHERE run_id = ?",
                      [run_id]).fetchall()[0]
    return int(row[0])


def witness_counts(con: Con, run_id: str, *,
                   rounds: tuple[int, int] | None = None) -> pl.DataFrame:
    """Per (arm, agent, round): witnessed actions, of them governed (matched to a decision
    checked in enforce mode) and matched (to any decision), and unwitnessed decisions. Empty
    when the run has no witnessed action: then nothing was witnessed, not everything missed."""
    if not witnessed_total(con, run_id):
        return pl.DataFrame(schema=COUNTS_SCHEMA)
    return _df(con, f"""
        SELECT arm, agent_id, round, count_if(witnessed)::BIGINT AS witnessed,
               count_if(witnessed AND covered)::BIGINT AS governed,
               count_if(witnessed AND decided)::BIGINT AS matched,
               count_if(decided AND NOT witnessed)::BIGINT AS unwitnessed
        FROM ({_match(rounds)}) GROUP BY ALL ORDER BY arm, agent_id, round""",
               _params(run_id, rounds))


def ungoverned_actions(con: Con, run_id: str, *, limit: int = 1000) -> pl.DataFrame:
    """The witnessed actions no decision governed, oldest first: rollout, agent, arm, round,
    tool, where in the rollout (model_request position, call index) and when."""
    return _df(con, f"""
        SELECT rollout_id, agent_id, arm, round, tool, position, idx, ts
        FROM ({_match(None)}) WHERE witnessed AND NOT decided
        ORDER BY ts, rollout_id, position, idx LIMIT {int(limit)}""", _params(run_id, None))
