"""The gateway tap in a process of its own.

`GatewayTap` runs Agent Lightning's app (FastAPI on uvicorn) and the tee in the caller's
process, where serving every request shares one interpreter lock with whatever else that
process runs. For the demo that is the trainer, the controller, the agents, the model server,
the storage writer and the alert evaluation: measured on this 2-core machine, the gateway and
its tee were a third of that process's CPU time. `GatewayProcess` runs the same `GatewayTap`
in a child process (`python -m tractatus_watch.collectors.gateway_process`, talking over a
socket pair with multiprocessing's connection), so the gateway gets a core of its own; the
records its tee normalises come back over a pipe, in order, with the tap's own cursors and
stats, and go to the sink here: to the store the two are the same source.

The child's log records are handed to this process's loggers (so they end up wherever this
process sends its logs), and Agent Lightning's structlog lines are kept to warnings. The
gateway's key goes to the child through the pipe, never on a command line.

Left out (use GatewayTap for them): the write-ahead log and `govern`.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from multiprocessing.connection import Connection
from typing import Any, Mapping

from ..records.delivery import Records, Sink
from .gateway_tap import GetCursor, TapStats

log = logging.getLogger(__name__)

_TAP_STATS = {f.name for f in fields(TapStats)}


class _Relay(logging.Handler):
    """In the child: every log record goes to the parent as (level, logger, message)."""

    def __init__(self, send: Any) -> None:
        super().__init__(logging.INFO)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields_ = getattr(record, "fields", None)
            self._send(("log", record.levelno, record.name, record.getMessage(),
                        fields_ if isinstance(fields_, dict) else None))
        except Exception:  # the pipe is gone: nobody to tell
            pass


def _child(conn: Connection) -> None:
    """The child process: serve the tap until the parent says stop (or goes away), drain
    everything to the pipe, then report the final stats."""
    import structlog

    from .gateway_tap import GatewayTap

    try:
        config, run_id, batch_interval_s, log_level = conn.recv()
    except (EOFError, OSError):
        return
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    root = logging.getLogger()
    root.handlers[:] = [_Relay(send)]
    root.setLevel(logging.INFO)
    structlog.configure(
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tap = GatewayTap(lambda records: send(("records", records)), run_id=run_id,
                     batch_interval_s=batch_interval_s, log_level=log_level, config=config)
    try:
        tap.start()
    except BaseException as exc:
        send(("error", str(exc) or type(exc).__name__))
        return
    send(("listening", tap.port))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent is gone: stop serving
                break
            if message == "deliver":
                tap.deliver_now()
            elif message == "stop":
                break
    finally:
        tap.stop()  # drains every record to the pipe first
        error = getattr(tap, "_error", None)
        try:
            send(("stopped", asdict(tap.stats), str(error) if error is not None else None))
        except (OSError, ValueError):
            pass


class GatewayProcess:
    """A `GatewayTap` in a child process: the same source (`run`, `source`, `url`,
    `listening`, `stats`, `deliver_now`) for a collection session."""

    def __init__(self, sink: Sink, *, config: Mapping[str, Any], run_id: str = "",
                 batch_interval_s: float = 0.05, log_level: str = "warning",
                 start_timeout_s: float = 60.0, stop_timeout_s: float = 60.0) -> None:
        self._sink = sink
        # Handed to the child only (it holds the key): never logged.
        self._config = dict(config)
        self.host = str(self._config["host"])
        self.port = int(self._config["port"])
        self.run_id = run_id
        self.batch_interval_s = batch_interval_s
        self.log_level = log_level
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.stats = TapStats()
        # Decisions the sink has taken: what a caller waiting for them watches.
        self.handed_decisions = 0
        self.listening = threading.Event()
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()

    @property
    def source(self) -> str:
        return f"gateway:{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def deliver_now(self) -> None:
        """Ask the child's tap to hand over what it holds without waiting for the interval."""
        self._send("deliver")

    def _send(self, message: str) -> None:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.send(message)
            except (OSError, ValueError):  # the child is gone: run() reports it
                pass

    def run(self, sink: Sink, stop: threading.Event, get_cursor: GetCursor | None = None) -> None:
        """As a `collect` source: serve until `stop` is set, then drain."""
        self._sink = sink
        mine, theirs = socket.socketpair()
        # A fresh interpreter (not a fork of this one, which has threads), told where the
        # socket is; the configuration goes over it.
        proc = subprocess.Popen(
            [sys.executable, "-m", "tractatus_watch.collectors.gateway_process",
             str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)
        theirs.close()
        here = Connection(mine.detach())
        with self._send_lock:
            self._conn = here
        try:
            here.send((self._config, self.run_id, self.batch_interval_s, self.log_level))
            self._serve(here, proc, stop)
        finally:
            with self._send_lock:
                self._conn = None
            here.close()  # the child stops serving when it sees the socket close
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)

    def _serve(self, conn: Connection, proc: subprocess.Popen[bytes],
               stop: threading.Event) -> None:
        started = time.monotonic()
        stopping_since: float | None = None
        while True:
            if stop.is_set() and stopping_since is None:
                self._send("stop")
                stopping_since = time.monotonic()
            if conn.poll(0.1):
                try:
                    message = conn.recv()
                except EOFError:
                    raise RuntimeError("the gateway process ended without draining "
                                       f"(exit code {proc.poll()})") from None
                if self._handle(message):
                    return
                continue
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway process exited (exit code {proc.returncode})")
            now = time.monotonic()
            if not self.listening.is_set() and now - started > self.start_timeout_s:
                raise RuntimeError(f"the gateway did not start in {self.start_timeout_s:g} s")
            if stopping_since is not None and now - stopping_since > self.stop_timeout_s:
                raise RuntimeError(f"the gateway did not drain in {self.stop_timeout_s:g} s")

    def _handle(self, message: tuple[Any, ...]) -> bool:
        """Act on one message from the child; True once it has stopped."""
        kind = message[0]
        if kind == "records":
            records: Records = message[1]
            self._sink(records)
            if records.stats is not None:
                self.stats = TapStats(**{k: v for k, v in records.stats.items()
                                         if k in _TAP_STATS})
            self.handed_decisions += len(records.decisions)
        elif kind == "listening":
            self.port = int(message[1])
            self.listening.set()
            log.info("gateway: listening", extra={"fields": {"url": self.url}})
        elif kind == "log":
            _, level, name, text, extra = message
            logging.getLogger(name).log(level, text, extra={"fields": extra} if extra else None)
        elif kind == "error":
            raise RuntimeError(f"gateway failed to start: {message[1]}")
        elif kind == "stopped":
            _, stats, error = message
            self.stats = TapStats(**{k: v for k, v in stats.items() if k in _TAP_STATS})
            if error is not None:
                raise RuntimeError(f"gateway tap could not store every record: {error}")
            return True
        return False

    def __repr__(self) -> str:
        return f"GatewayProcess({self.url})"


__all__ = ["GatewayProcess"]


if __name__ == "__main__":
    _child(Connection(int(sys.argv[1])))
