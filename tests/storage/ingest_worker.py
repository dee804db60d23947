"""A collector-like process for the crash test: ingests a deterministic stream of batches into a
database, resuming from the cursor it committed, and prints each committed cursor."""

from __future__ import annotations

import sys
from pathlib import Path

from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Cursor, Writer

sys.path.insert(0, str(Path(__file__).parents[1]))  # run as a script: tests/ for support.*
from support.synthetic import decisions_batch  # noqa: E402

SOURCE = "crash-test"


def main(db: str, batches: int, size: int) -> None:
    store = Store.open(db)
    done = store.get_cursor(SOURCE)
    first = int(done) + 1 if done is not None else 0
    writer = Writer(store, max_queue=1, flush_rows=1)
    for i in range(first, batches):
        writer.submit(decisions_batch(i * size, size, total=batches * size, rounds=20),
                      Cursor(SOURCE, str(i)))
        writer.flush()
        print(f"committed {i}", flush=True)
    writer.close()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
