"""Run several sources at once into one writer until a stop event (the `collect` command).

Each source runs in its own thread and calls the shared sink; the storage writer serialises the
commits. SIGINT/SIGTERM set the stop event (a second SIGINT aborts), every source finishes its
current pass, the writer flushes, and the function returns what each source ended with.
Log lines are JSON objects on stderr. The Agent Lightning key comes from `AGL_KEY` or a key file
and is only ever handed to the HTTP clients: it is never printed, logged or stored.

Run identity across restarts: every committed cursor carries the run its source was collected
into (`run_id` in the cursor's stats, same row, same transaction). Without `--run`, a command
calls `resume_run_id` before it starts, and a restarted collector on the same source continues
that run: what it re-reads (the poller re-reads the rollouts still running) has the same
natural keys as what is stored, so it is not stored twice. A first start gets
`<command>-<YYYYmmdd-HHMMSS>`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final, Iterable, Protocol, Sequence, TextIO

from .audit import AuditDefaults, ingest_audit
from ..records.delivery import Records, Sink
from .sink import writer_sink

log = logging.getLogger("tractatus_watch.collectors.runner")

GetCursor = Callable[[str], str | None]
# The key, in a committed cursor's stats, of the run its source was collected into.
RUN_STAT: Final = "run_id"


class Source(Protocol):
    @property
    def source(self) -> str: ...

    def run(self, sink: Sink, stop: threading.Event, get_cursor: GetCursor | None = None) -> None:
        ...


class KeyFileError(ValueError):
    """The key cannot be read; the message never contains the key."""


def load_key(key_file: str | os.PathLike[str] | None = None, *,
             env: str = "AGL_KEY") -> str | None:
    """The gateway key from a key file (first line) or the environment; None if neither."""
    if key_file is not None:
        from ..records.files import SecretFileError, read_secret

        path = Path(key_file).expanduser()
        try:
            key = read_secret(path, "key file")
        except SecretFileError as exc:
            raise KeyFileError(str(exc)) from None
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file is readable by other users; chmod 600 it",
                        extra={"fields": {"path": str(path)}})
        return key
    return os.environ.get(env) or None


class JsonLines(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(out, default=str)


def setup_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Structured lines on stderr for the collectors' loggers (idempotent)."""
    root = logging.getLogger("tractatus_watch")
    for h in list(root.handlers):
        if getattr(h, "_tw_json", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLines())
    handler._tw_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler


@dataclass
class AuditSource:
    """Audit files as a source: ingest once (or every `follow_s` seconds) and log a summary."""

    paths: list[str]
    defaults: AuditDefaults = field(default_factory=AuditDefaults)
    follow_s: float | None = None

    @property
    def source(self) -> str:
        return "audit:" + ",".join(self.paths)

    def run(self, sink: Sink, stop: threading.Event, get_cursor: GetCursor | None = None) -> None:
        while True:
            summary = ingest_audit(list(self.paths), sink, defaults=self.defaults,
                                   get_cursor=get_cursor)
            for line in summary.lines():
                log.info("audit: " + line)
            if self.follow_s is None or stop.wait(self.follow_s):
                return


# --- run identity ---------------------------------------------------------------------------

class _Cursors(Protocol):
    def cursor(self) -> Any: ...


def stored_run(store: _Cursors, source: str) -> tuple[str, Any] | None:
    """(run id, commit time) recorded with the newest committed cursor of `source`, if any."""
    cur = store.cursor()
    try:
        rows = cur.execute("SELECT stats, updated_at FROM ingest_state WHERE source = ? "
                           "ORDER BY updated_at DESC LIMIT 1", [source]).fetchall()
    finally:
        cur.close()
    if not rows or not rows[0][0]:
        return None
    try:
        run = json.loads(rows[0][0]).get(RUN_STAT)
    except (ValueError, AttributeError):
        return None
    return (run, rows[0][1]) if isinstance(run, str) and run else None


def resume_run_id(store: _Cursors, sources: Iterable[str], given: str | None,
                  prefix: str) -> str:
    """The run a collector writes into: `given` (--run) if any; else the run its sources'
    newest committed cursors name (the most recent one if they differ); else a fresh
    `<prefix>-<YYYYmmdd-HHMMSS>`."""
    if given:
        return given
    found = {src: run for src in sources if (run := stored_run(store, src)) is not None}
    if not found:
        return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    source, (run_id, _) = max(found.items(), key=lambda item: item[1][1])
    fields: dict[str, Any] = {"run_id": run_id, "source": source}
    if len({r for r, _ in found.values()}) > 1:
        fields["others"] = {src: r for src, (r, _) in found.items() if r != run_id}
        log.warning("sources were last collected into different runs; continuing the most "
                    "recent one (give --run to choose)", extra={"fields": fields})
    else:
        log.info("continuing the run stored with the committed cursor",
                 extra={"fields": fields})
    return run_id


def adopt_run_id(sources: Iterable[Source], run_id: str) -> None:
    """Hand the run to the sources that stamp one on what they read (the poller, the gateway
    tap); the others' records carry their own or take the writer's default."""
    for src in sources:
        if hasattr(src, "run_id"):
            src.run_id = run_id


def recording_run(sink: Sink, run_id: str) -> Sink:
    """`sink`, with `run_id` stored beside every cursor it commits (see resume_run_id)."""
    def record(records: Records) -> None:
        if records.cursor is not None:
            records.stats = {**(records.stats or {}), RUN_STAT: run_id}
        sink(records)

    return record


@dataclass
class RunResult:
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def run_sources(sources: Sequence[Source], writer: Any, *, run_id: str = "default",
                stop: threading.Event | None = None, get_cursor: GetCursor | None = None,
                handle_signals: bool = True, stop_on_error: bool = True) -> RunResult:
    """Run `sources` into `writer` (a storage Writer, or any sink callable) until they all end
    or `stop` is set (by the caller, SIGINT/SIGTERM, or a failing source)."""
    stop = stop or threading.Event()
    sink: Sink = (recording_run(writer_sink(writer, run_id), run_id)
                  if hasattr(writer, "submit") else writer)
    result = RunResult()
    started = time.monotonic()

    def work(src: Source) -> None:
        name = src.source
        log.info("source started", extra={"fields": {"source": name}})
        try:
            src.run(sink, stop, get_cursor)
        except BaseException as exc:
            result.errors[name] = str(exc) or type(exc).__name__
            log.error("source failed", extra={"fields": {"source": name,
                                                         "error": result.errors[name]}})
            if stop_on_error:
                stop.set()
        else:
            log.info("source stopped", extra={"fields": {"source": name}})

    previous: dict[signal.Signals, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: give up on a clean stop
            result.interrupted = True
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    threads = [threading.Thread(target=work, args=(s,), name=f"tw-src-{i}", daemon=True)
               for i, s in enumerate(sources)]
    try:
        for t in threads:
            t.start()
        # Short joins keep the main thread responsive to signals.
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if hasattr(writer, "flush"):
            writer.flush()
        result.seconds = time.monotonic() - started
        log.info("collect finished", extra={"fields": {
            "seconds": round(result.seconds, 3), "errors": len(result.errors),
            "interrupted": result.interrupted}})
    return result
