"""Peak memory of the spool reader on one big segment (issue 11: a segment is streamed).

Each case writes one segment of about `--mb` MB, then reads it in a fresh subprocess with
`SpoolReader.poll_once` into a sink that only counts (so the figure is the reader's, not the
store's) and reports that process's peak RSS (`resource.getrusage`). `baseline` is the same
process importing the reader and reading an empty folder.
Cases: random bytes (garbage, a newline every ~256 bytes), one 50 MB line with no newline,
valid decision lines as the SpoolWriter writes them, and (`audit_array`) a pretty-printed
mongoexport --jsonArray file read by the audit tap.
With --store the sink is a real Writer into a DuckDB file (the path `collect --spool` takes).
Last line: {"<case>_peak_rss_mb": ..., "<case>_records": ...}.
Usage: bench/spool_memory.py [--mb N] [--store] [--cases baseline,random,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402

CASES = ("baseline", "random", "noline", "valid", "audit_array")


def segment(folder: Path) -> Path:
    from tractatus_watch.records.spool_format import segment_name

    folder.mkdir(parents=True, exist_ok=True)
    return folder / segment_name(time.time_ns() - 60 * 10**9, 1, 1)


def audit_doc(i: int) -> dict[str, object]:
    return {"_id": {"$oid": f"{i:024x}"}, "sessionId": f"agent-{i % 16}",
            "action": "boundary_enforcement", "allowed": i % 3 != 0,
            "violations": ["inst_016"] if i % 3 == 0 else [], "metadata": {"boundary": "VALUES"},
            "timestamp": {"$date": "2025-10-01T10:00:00.000Z"}}


def write_case(case: str, folder: Path, size: int) -> None:
    if case == "baseline":
        folder.mkdir(parents=True, exist_ok=True)
        return
    if case == "audit_array":  # mongoexport --jsonArray --pretty
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "auditLogs.json", "w") as fh:
            fh.write("[\n")
            i, written = 0, 0
            while written < size:
                text = ("," if i else "") + json.dumps(audit_doc(i), indent=2) + "\n"
                fh.write(text)
                written += len(text)
                i += 1
            fh.write("]\n")
        return
    path = segment(folder)
    with open(path, "wb") as fh:
        if case == "random":
            chunk = 1 << 20
            for _ in range(size // chunk):
                fh.write(os.urandom(chunk))
        elif case == "noline":
            block = b"x" * (1 << 20)
            for _ in range(size // len(block)):
                fh.write(block)
        else:
            i, written = 0, 0
            while written < size:
                line = json.dumps({"type": "decision", "data": {
                    "schema": "tractatus.decision/1", "decision_id": f"m-{i:09d}",
                    "agent_id": f"agent-{i % 16}", "round": i % 50, "arm": "governed",
                    "mode": "enforce", "action": {"kind": "publish", "summary": "weather"},
                    "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_017",
                                "verdict": "allow"}],
                    "executed": True, "ts": 1_790_000_000.0 + i}},
                    separators=(",", ":")).encode() + b"\n"
                fh.write(line)
                written += len(line)
                i += 1


def read_case(folder: str, db: str | None) -> None:
    """Child process: read the folder once (into a real store with `db`), print the peak RSS
    and what the sink saw."""
    from tractatus_watch.collectors.sink import writer_sink
    from tractatus_watch.collectors.spool_reader import SpoolReader
    from tractatus_watch.storage.store import Store
    from tractatus_watch.storage.writer import Writer

    seen = {"records": 0, "calls": 0}
    store = Store.open(db) if db else None
    writer = Writer(store, flush_interval_s=0.05) if store else None
    inner = writer_sink(writer, "bench") if writer else None

    def sink(records: object) -> None:
        seen["records"] += len(records)  # type: ignore[arg-type]
        seen["calls"] += 1
        if inner is not None:
            inner(records)  # type: ignore[arg-type]

    if Path(folder, "auditLogs.json").exists():
        from tractatus_watch.collectors.audit import ingest_audit

        ingest_audit([Path(folder, "auditLogs.json")], sink)
    else:
        SpoolReader(Path(folder), settle_s=0.0).poll_once(sink)
    if writer is not None and store is not None:
        writer.close()
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak, 1), **seen}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--store", action="store_true",
                    help="read into a real DuckDB store through the Writer (the collect path)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of "
                    + ", ".join(CASES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        read_case(args.child, args.db)
        return
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            folder = Path(tmp) / case
            write_case(case, folder, args.mb * 1024 * 1024)
            cmd = [sys.executable, __file__, "--child", str(folder)]
            if args.store:
                cmd += ["--db", str(Path(tmp) / f"{case}.duckdb")]
            out = subprocess.run(cmd,
                                 capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"{case}: {result}", file=sys.stderr)
            figures[f"{case}_peak_rss_mb"] = result["peak_rss_mb"]
            figures[f"{case}_records"] = result["records"]
    last_line(figures)


if __name__ == "__main__":
    main()
