"""A collecting process for the SIGKILL test: polls a gateway into a database through the
`collect` runner (key from AGL_KEY), resuming from its committed cursor, until SIGTERM. Prints
the poller's figures after each delivery so the test knows when to kill it."""

from __future__ import annotations

import json
import sys

from tractatus_watch.collectors.poller import Poller
from tractatus_watch.collectors.runner import load_key, run_sources, setup_logging
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.records.delivery import Records
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer


def main(db: str, url: str) -> int:
    setup_logging()
    store = Store.open(db)
    writer = Writer(store, flush_interval_s=0.05)
    poller = Poller(url, key=load_key(), interval_s=0.1, running_interval_s=0.3)
    inner = writer_sink(writer, "killed-run")

    def sink(records: Records) -> None:
        inner(records)
        print(json.dumps({"seen": poller.stats.seen, "decisions": poller.stats.decisions}),
              flush=True)

    result = run_sources([poller], sink, get_cursor=store.get_cursor)
    writer.close()
    store.close()
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
