"""Experiments: runs grouped under a name, with what makes each run a replicate.

A run's experiment lives in its `runs.meta` JSON (`{"experiment": ..., "scenario": ...,
"seed": ..., "agents": ..., "arms": [...], "adversarial_round": ...}`; every key but
`experiment` optional), written by the writer when it registers the run (`Writer(run_meta=)`):
`demo --seeds` tags each seed's run, and `collect`/`gateway`/`live --experiment E` tag every run
they collect. A run belongs to one experiment: the first writer to tag it wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import duckdb
import polars as pl

from .queries import _df

Con = duckdb.DuckDBPyConnection

# Names travel in file names, URLs and the HTML report: keep them plain.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}")


def check_experiment_name(name: str) -> str:
    """The name, or ValueError saying what a name may hold."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"experiment name {name!r}: expected 1-100 letters, digits or ._:+- "
                         "starting with a letter or digit")
    return name


def run_meta_json(meta: Mapping[str, Any]) -> str:
    if not isinstance(meta.get("experiment"), str):
        raise ValueError("run meta needs an experiment name")
    check_experiment_name(meta["experiment"])
    return json.dumps(dict(meta), sort_keys=True, separators=(",", ":"))


def update_run_meta(con: Con, run_id: str, extra: Mapping[str, Any]) -> None:
    """Add keys to a tagged run's meta (what the run's producer learns at its end); a run
    without meta, or with another's JSON, is left as it is."""
    row = con.execute("SELECT meta FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row or row[0][0] is None:
        return
    try:
        meta = json.loads(row[0][0])
    except ValueError:
        return
    if isinstance(meta, dict) and "experiment" in meta:
        con.execute("UPDATE runs SET meta = ? WHERE run_id = ?",
                    [run_meta_json({**meta, **extra}), run_id])


# A run's meta, or NULL when it is not JSON (a store written by someone else).
_META: Final = "CASE WHEN json_valid(meta) THEN meta::JSON END"


def experiments(con: Con) -> pl.DataFrame:
    """Every experiment, newest first: its runs, scenarios and seeds."""
    return _df(con, f"""
        WITH tagged AS (
            SELECT run_id, created_at, {_META} AS m FROM runs WHERE meta IS NOT NULL)
        SELECT m->>'experiment' AS experiment, count(*)::BIGINT AS runs,
               list(DISTINCT m->>'scenario') FILTER (WHERE m->>'scenario' IS NOT NULL)
                   AS scenarios,
               list(DISTINCT (m->>'seed')::BIGINT ORDER BY (m->>'seed')::BIGINT)
                   FILTER (WHERE m->>'seed' IS NOT NULL) AS seeds,
               min(created_at) AS first_created, max(created_at) AS last_created
        FROM tagged WHERE m->>'experiment' IS NOT NULL
        GROUP BY 1 ORDER BY last_created DESC, experiment""")


def latest_experiment(con: Con) -> str | None:
    df = experiments(con)
    return None if df.is_empty() else str(df["experiment"][0])


def experiment_runs(con: Con, experiment: str) -> list[dict[str, Any]]:
    """The runs of an experiment, oldest first: run_id, created_at and the run's meta keys."""
    rows = con.execute(f"""
        SELECT run_id, created_at, meta FROM runs
        WHERE meta IS NOT NULL AND (({_META})->>'experiment') = ?
        ORDER BY created_at, run_id""", [experiment]).fetchall()
    return [{**json.loads(meta), "run_id": str(run_id), "created_at": created}
            for run_id, created, meta in rows]
