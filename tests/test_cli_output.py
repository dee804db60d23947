"""How results are chosen, formatted and written, through the real CLI (subprocesses, real
DuckDB files): the format from --out's extension unless --format says otherwise, one set of
formats for runs, query, export and report, the same bytes from every command, unknown runs
as errors, and data printed verbatim (no Rich markup or emoji codes, run ids never cut)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from support.synthetic import decisions_batch
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from .test_cli_storage import tw

# Run ids a console would read as markup, a link and emoji codes if it did not print verbatim.
ODD = "demo2-[bold]x[/bold]-:x:-[link=http://127.0.0.1/]l[/link]"
TYPICAL = "showcase-20261201-131549"
LONG = "a-very-long-run-id-" + "0123456789" * 6  # 79 characters: no table row can hold it
EXTENSIONS = {"csv": "csv", "json": "json", "ndjson": "ndjson", "jsonl": "ndjson",
              "parquet": "parquet"}
ONE_LINE = "cannot tell the format of"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("out") / "watch.duckdb"
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(decisions_batch(0, 400, run_id=ODD, rounds=4))
        writer.submit(decisions_batch(0, 200, run_id=TYPICAL, rounds=2))
        writer.submit(decisions_batch(0, 100, run_id=LONG, rounds=1))
        writer.close()
    return path


def read_back(path: Path, fmt: str) -> list[dict]:
    """The rows of a file, read by the format it must be in (not by its name)."""
    if fmt == "parquet":
        assert path.read_bytes()[:4] == b"PAR1"
        return pl.read_parquet(path).to_dicts()
    text = path.read_text()
    if fmt == "json":
        doc = json.loads(text)
        assert isinstance(doc, list)
        return doc
    if fmt == "ndjson":
        return [json.loads(line) for line in text.splitlines()]
    assert fmt == "csv" and not text.startswith(("[", "{", "PAR1"))
    return pl.read_csv(path).to_dicts()


SQL = "SELECT arm, count(*) AS n FROM decisions GROUP BY arm ORDER BY arm"
EXPECTED = [{"arm": "governed", "n": 350}, {"arm": "ungoverned", "n": 350}]


@pytest.mark.parametrize("ext", sorted(EXTENSIONS))
def test_the_extension_names_the_format(db: Path, tmp_path: Path, ext: str) -> None:
    fmt = EXTENSIONS[ext]
    q = tmp_path / f"q.{ext}"
    result = tw("query", SQL, "--out", str(q), db=db)
    assert result.returncode == 0, result.stderr
    assert read_back(q, fmt) == EXPECTED
    e = tmp_path / f"e.{ext}"
    result = tw("export", "--table", "runs", "--out", str(e), db=db)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith(f"({fmt})")
    assert sorted(r["run_id"] for r in read_back(e, fmt)) == sorted([ODD, TYPICAL, LONG])
    r = tmp_path / f"r.{ext}"
    result = tw("runs", "--out", str(r), db=db)
    assert result.returncode == 0, result.stderr
    assert {row["run_id"]: row["actions"] for row in read_back(r, fmt)} == {
        ODD: 400, TYPICAL: 200, LONG: 100}
    rep = tmp_path / f"rep.{ext}"
    result = tw("report", "--run", TYPICAL, "--out", str(rep), db=db)
    assert result.returncode == 0, result.stderr
    if fmt == "json":  # report's JSON is its one document
        assert set(json.loads(rep.read_text())) == {"run_id", "baseline_run", "arms",
                                                     "difference", "ungoverned_actions",
                                                     "agents"}
    else:  # one row per arm
        assert sorted((row["arm"], row["actions"]) for row in read_back(rep, fmt)) == [
            ("governed", 100), ("ungoverned", 100)]


def test_format_always_wins_over_the_extension(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "really-json.csv"
    assert tw("export", "--table", "runs", "--format", "json", "--out", str(out),
              db=db).returncode == 0
    assert len(read_back(out, "json")) == 3
    out = tmp_path / "really-csv.parquet"
    assert tw("query", SQL, "--format", "csv", "--out", str(out), db=db).returncode == 0
    assert read_back(out, "csv") == EXPECTED
    out = tmp_path / "no-extension"
    assert tw("runs", "--format", "ndjson", "--out", str(out), db=db).returncode == 0
    assert len(read_back(out, "ndjson")) == 3


@pytest.mark.parametrize("args", [
    ("export", "--table", "runs"), ("query", SQL), ("runs",), ("report",)])
@pytest.mark.parametrize("name", ["x.txt", "x", "x.csv.gz"])
def test_an_unknown_extension_is_one_line_listing_the_formats(
        db: Path, tmp_path: Path, args: tuple[str, ...], name: str) -> None:
    out = tmp_path / name
    result = tw(*args, "--out", str(out), db=db)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {ONE_LINE} {out}")
    assert "name it .csv, .json, .ndjson/.jsonl" in result.stderr
    assert ", or give --format csv, json, ndjson" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_markdown_is_reports_alone(db: Path, tmp_path: Path) -> None:
    md = tmp_path / "report.md"
    result = tw("report", "--run", TYPICAL, "--out", str(md), db=db)
    assert result.returncode == 0, result.stderr
    lines = md.read_text().splitlines()
    assert lines[0] == "| Metric | Ungoverned | Governed | Difference |"
    assert lines[1] == "|---|---|---|---|"
    assert "| Actions | 100 | 100 |" in md.read_text()
    refused = tw("query", SQL, "--out", str(tmp_path / "q.md"), db=db)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {ONE_LINE} {tmp_path / 'q.md'} (a markdown file)")
    assert tw("runs", "--format", "markdown", db=db).stderr.strip() == (
        "error: --format: unknown format 'markdown'; use table, csv, json, ndjson or parquet")


@pytest.mark.parametrize("args, message", [
    (("runs", "--format", "parquet"), "error: --format parquet needs a file: add --out FILE"),
    (("query", SQL, "--format", "parquet"), "error: --format parquet needs a file"),
    (("report", "--format", "parquet"), "error: --format parquet needs a file"),
    (("runs", "--format", "table", "--out", "runs.csv"),
     "error: --format table prints to the terminal; to write runs.csv use csv, json, ndjson "
     "or parquet"),
    (("export", "--table", "runs", "--format", "table", "--out", "x.csv"),
     "error: --format: unknown format 'table'; use csv, json, ndjson or parquet"),
    (("query", SQL, "--format", "xml"),
     "error: --format: unknown format 'xml'; use table, csv, json, ndjson or parquet"),
    (("report", "--format", "yaml"),
     "error: --format: unknown format 'yaml'; use table, csv, json, ndjson, parquet or "
     "markdown"),
])
def test_impossible_outputs_are_one_line(db: Path, args: tuple[str, ...], message: str) -> None:
    result = tw(*args, db=db)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_every_command_writes_the_same_bytes_for_the_same_rows(db: Path, tmp_path: Path) -> None:
    # `export` streams Arrow batches, `query` writes a frame: one writer, one text.
    for fmt in ("csv", "json", "ndjson"):
        e, q = tmp_path / f"e.{fmt}", tmp_path / f"q.{fmt}"
        assert tw("export", "--table", "decisions", "--run", TYPICAL, "--out", str(e),
                  db=db).returncode == 0
        assert tw("query", f"SELECT * FROM decisions WHERE run_id = '{TYPICAL}'",
                  "--out", str(q), db=db).returncode == 0
        if fmt == "json":
            assert sorted(map(json.dumps, json.loads(e.read_text()))) == sorted(
                map(json.dumps, json.loads(q.read_text())))
        else:
            assert sorted(e.read_text().splitlines()) == sorted(q.read_text().splitlines())
    first = json.loads((tmp_path / "e.ndjson").read_text().splitlines()[0])
    assert first["ts"].startswith("2026-11-18T11:06:40.")  # ISO-8601, as in CSV


def test_json_is_one_valid_document_and_ndjson_one_object_a_line(db: Path) -> None:
    sql = "SELECT 'nan'::DOUBLE AS x, [1, 2] AS l, TIMESTAMP '2026-01-02 03:04:05' AS t"
    doc = tw("query", sql, "--format", "json", db=db)
    assert doc.returncode == 0, doc.stderr
    # NaN is not JSON: it is null, and the document parses strictly.
    assert json.loads(doc.stdout, parse_constant=lambda c: pytest.fail(c)) == [
        {"x": None, "l": [1, 2], "t": "2026-01-02T03:04:05.000000"}]
    lines = tw("runs", "--format", "ndjson", db=db).stdout.splitlines()
    assert sorted(json.loads(line)["run_id"] for line in lines) == sorted([ODD, TYPICAL, LONG])
    csv = tw("query", sql, "--format", "csv", db=db).stdout.splitlines()
    assert csv == ["x,l,t", 'NaN,"[1, 2]",2026-01-02T03:04:05.000000']
    empty = tw("query", "SELECT run_id FROM runs WHERE false", "--format", "json", db=db)
    assert empty.stdout == "[]\n"


def test_report_keeps_its_json_keys_in_every_format(db: Path, tmp_path: Path) -> None:
    doc = json.loads(tw("report", "--run", TYPICAL, "--format", "json", db=db).stdout)
    for arm in ("governed", "ungoverned"):
        assert {"actions", "attempted", "blocked", "escaped_violations", "coverage"} <= set(
            doc["arms"][arm])
    rows = [json.loads(line) for line in tw("report", "--run", TYPICAL, "--format", "ndjson",
                                             db=db).stdout.splitlines()]
    assert {r.pop("arm"): r for r in rows} == doc["arms"]


@pytest.mark.parametrize("args", [
    ("export", "--table", "decisions", "--run", "nosuch", "--out", "{tmp}/x.csv"),
    ("report", "--run", "nosuch"),
    ("report", "--run", TYPICAL, "--baseline", "nosuch"),
    ("open", "--run", "nosuch"),
    ("open", "--baseline", "nosuch"),
])
def test_an_unknown_run_is_an_error_naming_known_runs(db: Path, tmp_path: Path,
                                                      args: tuple[str, ...]) -> None:
    result = tw(*(a.format(tmp=tmp_path) for a in args), db=db)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no run 'nosuch'; runs: ")
    assert TYPICAL in result.stderr and result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no empty export left behind


@pytest.mark.parametrize("columns", ["80", "120"])
def test_tables_print_data_verbatim_and_never_cut_a_run_id(db: Path, columns: str) -> None:
    env = {"COLUMNS": columns}
    result = tw("runs", db=db, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for run_id in (ODD, TYPICAL, LONG):  # each whole on one line, markup and codes as typed
        assert any(run_id in line for line in lines), (run_id, result.stdout)
    assert "…" not in result.stdout
    assert not any(len(line) > int(columns) for line in lines if LONG not in line)

    sql = ("SELECT run_id, '[red]red[/red] :x: :thumbs_up: [link=http://127.0.0.1/]l[/link]' "
           "AS note FROM runs ORDER BY run_id")
    query = tw("query", sql, db=db, env=env)
    assert query.returncode == 0, query.stderr
    assert query.stdout.count("[red]red[/red] :x: :thumbs_up:") == 3
    assert any(TYPICAL in line for line in query.stdout.splitlines())

    report = tw("report", "--run", ODD, db=db, env=env)
    assert report.returncode == 0, report.stderr
    assert f"run {ODD}" in report.stdout


def test_a_typical_runs_table_at_80_columns_is_a_table(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Store.open(path) as store:
        writer = Writer(store)
        for i, run in enumerate(("showcase-20261201-131549", "demo2-20261201-140002",
                                 "adversarial-20261201-150310")):
            writer.submit(decisions_batch(0, 100 * (i + 1), run_id=run, rounds=3))
        writer.close()
    result = tw("runs", db=path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run_id", "arms", "rounds", "actions", "escaped", "last", "data"]
    assert all(len(line) <= 80 for line in lines)
    rows = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith(" ")}
    assert set(rows) == {"showcase-20261201-131549", "demo2-20261201-140002",
                         "adversarial-20261201-150310"}
    assert rows["adversarial-20261201-150310"][3] == "300"  # actions, whole
