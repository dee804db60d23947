"""A collecting process for the spool SIGKILL test: follows a spool folder into a database
through the `collect` runner, resuming from its committed cursor, until SIGTERM. Prints the
cursor after each delivery so the test knows when to kill it."""

from __future__ import annotations

import sys

from tractatus_watch.collectors.runner import run_sources, setup_logging
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.records.delivery import Records
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer


def main(db: str, folder: str) -> int:
    setup_logging()
    store = Store.open(db)
    writer = Writer(store, flush_interval_s=0.02)
    reader = SpoolReader(folder, settle_s=0.0, batch_records=300, poll_s=0.05)
    inner = writer_sink(writer, "spool-run")

    def sink(records: Records) -> None:
        inner(records)
        writer.flush()  # one commit per delivery: the kill lands between commits
        print(records.cursor[1] if records.cursor else "-", flush=True)

    result = run_sources([reader], sink, get_cursor=store.get_cursor)
    writer.close()
    store.close()
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
