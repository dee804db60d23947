"""The storage commands as a user runs them: runs, query, export, errors and exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Writer


def tw(*args: str, env: dict[str, str] | None = None,
       db: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    if db is not None:
        full_env["TRACTATUS_WATCH_DB"] = str(db)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "watch.duckdb"
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(decisions_batch(0, 3_000, run_id="run-1", rounds=5))
        writer.submit(decisions_batch(0, 1_000, run_id="run-2", rounds=2))
        writer.close()
    return path


def test_version_and_help_on_every_command() -> None:
    result = tw("--version")
    assert result.returncode == 0 and result.stdout.strip() == "tractatus-watch 0.1.0"
    for command in ("runs", "query", "export"):
        result = tw(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "--db" in result.stdout and "TRACTATUS_WATCH_DB" in result.stdout


def test_runs_lists_both_runs_with_counts(db: Path) -> None:
    result = tw("runs", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rows = {r["run_id"]: r for r in __import__("json").loads(result.stdout)}
    assert rows["run-1"]["actions"] == 3_000 and rows["run-1"]["rounds"] == 5
    assert rows["run-2"]["actions"] == 1_000
    # Per-arm figures under `arms`; `actions` and `escaped` are totals over the arms.
    arms = rows["run-2"]["arms"]
    assert [a["arm"] for a in arms] == ["governed", "ungoverned"]
    for run in rows.values():
        assert run["actions"] == sum(a["actions"] for a in run["arms"])
        assert run["escaped"] == sum(a["escaped"] for a in run["arms"])


def test_query_formats(db: Path, tmp_path: Path) -> None:
    sql = ("SELECT arm, count(*) AS n FROM decisions WHERE run_id = 'run-1' "
           "GROUP BY arm ORDER BY arm")
    result = tw("query", sql, "--format", "csv", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["arm,n", "governed,1500", "ungoverned,1500"]
    out = tmp_path / "q.parquet"
    assert tw("query", sql, "--format", "parquet", "--out", str(out), db=db).returncode == 0
    assert pl.read_parquet(out).to_dicts() == [{"arm": "governed", "n": 1500},
                                               {"arm": "ungoverned", "n": 1500}]
    table = tw("query", sql, db=db, env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert "governed" in table.stdout
    assert not re.search(r"\x1b\[[0-9;]*(3|4|9|10)[0-9]m", table.stdout)  # no colour codes


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_export_round_trip(db: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"checks.{fmt}"
    result = tw("export", "--table", "checks", "--run", "run-1", "--format", fmt,
                "--out", str(out), db=db)
    assert result.returncode == 0, result.stderr
    assert "exported 6000 rows" in result.stderr
    with Store.open(db, read_only=True) as store:
        expected = store.cursor().sql(
            "SELECT * FROM checks WHERE run_id = 'run-1' ORDER BY decision_id, idx").pl()
    if fmt == "parquet":
        back = pl.read_parquet(out)
    elif fmt == "csv":
        back = pl.read_csv(out, schema_overrides={"ts": pl.String}, infer_schema_length=None)
    else:
        back = pl.read_ndjson(out, schema_overrides={"ts": pl.String})
    if fmt != "parquet":
        back = back.with_columns(pl.col("ts").str.to_datetime(time_unit="us"))
    back = back.select(expected.columns).cast(dict(expected.schema)).sort("decision_id", "idx")
    assert back.equals(expected)
    again = tw("export", "--table", "checks", "--format", fmt, "--out", str(out), db=db)
    assert again.returncode == 2 and "--force" in again.stderr


def test_export_since_filters_by_time(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "recent.csv"
    result = tw("export", "--table", "decisions", "--since", "2026-11-18T11:06:41",
                "--run", "run-1", "--format", "csv", "--out", str(out), db=db)
    assert result.returncode == 0, result.stderr
    assert pl.read_csv(out).height == 2_000  # one decision per ms from 11:06:40


@pytest.mark.parametrize("args, message", [
    (["query", "SELEC 1"], "error: query failed: Parser Error"),
    (["query", "SELECT * FROM nope"], "error: query refused: 'nope' is not a stored table"),
    (["export", "--table", "nope", "--out", "x.csv"], "error: no table 'nope'"),
    (["export", "--table", "runs", "--since", "yesterday", "--out", "x.csv"], "error: --since"),
])
def test_bad_input_is_one_line_exit_2(db: Path, args: list[str], message: str) -> None:
    result = tw(*args, db=db)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_database_uses_xdg_default(tmp_path: Path) -> None:
    result = tw("query", "SELECT 1", env={"XDG_DATA_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert f"no database at {tmp_path}/tractatus-watch/watch.duckdb" in result.stderr


def test_locked_database_names_file_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tractatus_watch.storage.store import "
         "Store; s = Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = tw("runs", db=path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: database {path} is in use by PID {holder.pid}")
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def _sys_or_readonly(tmp_path: Path) -> Path:
    """A folder nobody can create files in: a 0500 folder, or (root ignores modes) sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_export_and_query_files_are_0600_whatever_the_umask(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = os.umask(0)  # inherited by the subprocesses: files would come out 0666
    try:
        runs = [tw("export", "--table", "runs", "--format", fmt, "--out",
                   str(out / f"runs.{fmt}"), db=db) for fmt in ("parquet", "csv", "ndjson")]
        runs += [tw("query", "SELECT * FROM runs", "--format", fmt, "--out",
                    str(out / f"q.{fmt}"), db=db) for fmt in ("csv", "json", "parquet")]
        stale = out / "runs.csv"
        stale.chmod(0o644)  # --force replaces it: the new file is 0600 too
        runs.append(tw("export", "--table", "decisions", "--format", "csv", "--force",
                       "--out", str(stale), db=db))
    finally:
        os.umask(old)
    assert [r.returncode for r in runs] == [0] * 7, [r.stderr for r in runs]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert modes == {name: "0o600" for name in ("runs.parquet", "runs.csv", "runs.ndjson",
                                                "q.csv", "q.json", "q.parquet")}
    assert pl.read_csv(stale).height == 4_000  # replaced: the decisions of both runs


def test_export_destination_errors_are_one_line_and_leave_nothing(db: Path,
                                                                  tmp_path: Path) -> None:
    existing = tmp_path / "existing.csv"
    existing.write_text("keep me\n")
    locked = _sys_or_readonly(tmp_path)
    cases = [
        (existing, f"error: {existing} exists; pass --force to overwrite it"),
        (tmp_path, f"error: {tmp_path} is a folder: give the name of a file to write"),
        (tmp_path / "missing" / "x.csv",
         f"error: cannot write {tmp_path}/missing/x.csv: no folder {tmp_path}/missing"),
        (existing / "x.csv", f"error: cannot write {existing}/x.csv: {existing} is not a folder"),
        (locked / "x.csv", f"error: cannot write {locked}/x.csv: Permission denied"),
    ]
    for out, message in cases:
        for args in (("export", "--table", "runs", "--format", "csv"),
                     ("query", "SELECT * FROM runs", "--format", "csv")):
            result = tw(*args, "--out", str(out), db=db)
            assert result.returncode == 2, (args, out, result.stderr)
            assert result.stderr.startswith(message), (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.csv"] + (
        [] if locked == Path("/sys") else ["locked"])
    assert not list(locked.glob("*x.csv*"))


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    from tractatus_watch.records.files import atomic_file

    out = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with atomic_file(out, force=False) as fh:
            fh.write(b"half a file")
            raise RuntimeError("the export broke off")
    assert list(tmp_path.iterdir()) == []
