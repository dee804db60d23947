"""The gateway tap: run the real Agent Lightning gateway in-process and tee what it records.

Agent Lightning 1.0.2 keeps its whole state in module-level containers of
`agentlightning.server.store`; rollouts live in `_rollouts` and events in `_events`, which the
route modules import by name and mutate on the event loop thread. The least invasive tee is to hand those modules the same
containers with a recording `__setitem__`/`append`: the app, its routes, its validation and its
responses are untouched (the API stays exactly Agent Lightning's), and every mutation is seen
synchronously, in order, with its exact list position, including events the LLM proxy records
itself. An ASGI middleware would see only HTTP bodies (not proxy-recorded events, not list
positions); wrapping route functions would miss the endpoints FastAPI captured at import time.

The tee only enqueues references (a few microseconds on the event loop). A drain thread
normalises them and calls the sink every `batch_interval_s`, so a slow sink never slows the
gateway; `stop()` drains everything before it returns: zero loss.

The store is process-global in Agent Lightning, so one tap can be installed per process.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Final

from .agl import EventNormaliser, RolloutContext
from .sink import Records, Sink

log = logging.getLogger(__name__)

_STOP: Final = object()


# --- the tee ------------------------------------------------------------------------------------

class _Tee:
    """Where the recording containers send their observations (None: uninstalled, inert)."""

    queue: queue.SimpleQueue[Any] | None = None

    @classmethod
    def emit(cls, item: tuple[Any, ...]) -> None:
        q = cls.queue
        if q is not None:
            q.put_nowait(item)


class _TeeList(list):  # type: ignore[type-arg]
    """One attempt's events; `append` is the only way Agent Lightning adds one."""

    def __init__(self, rollout_id: str, attempt_id: str, initial: Any = ()) -> None:
        super().__init__(initial)
        self._rollout_id = rollout_id
        self._attempt_id = attempt_id
        self._counts: Counter[str] = Counter(e.event_type for e in self)

    def append(self, event: Any) -> None:
        position = self._counts[event.event_type]
        self._counts[event.event_type] = position + 1
        super().append(event)
        _Tee.emit(("event", self._rollout_id, self._attempt_id, position, event))


class _TeeAttempts(dict):  # type: ignore[type-arg]
    def __init__(self, rollout_id: str, initial: Any = ()) -> None:
        super().__init__()
        self._rollout_id = rollout_id
        for attempt_id, events in dict(initial).items():
            self[attempt_id] = events

    def __setitem__(self, attempt_id: str, events: Any) -> None:
        if not isinstance(events, _TeeList):
            events = _TeeList(self._rollout_id, attempt_id, events)
        super().__setitem__(attempt_id, events)


class _TeeEvents(dict):  # type: ignore[type-arg]
    def __setitem__(self, rollout_id: str, attempts: Any) -> None:
        if not isinstance(attempts, _TeeAttempts):
            attempts = _TeeAttempts(rollout_id, attempts)
        super().__setitem__(rollout_id, attempts)


class _TeeRollouts(dict):  # type: ignore[type-arg]
    """Every create and status patch is a `__setitem__` of a new Rollout object."""

    def __setitem__(self, rollout_id: str, rollout: Any) -> None:
        super().__setitem__(rollout_id, rollout)
        _Tee.emit(("rollout", rollout))

    def pop(self, rollout_id: str, *default: Any) -> Any:
        value = super().pop(rollout_id, *default)
        _Tee.emit(("deleted", rollout_id))
        return value


_CONTAINERS: Final = ("_rollouts", "_events")


def _store_modules() -> list[Any]:
    import sys

    import agentlightning.server.app  # noqa: F401  (imports every route module)

    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "agentlightning" or name.startswith("agentlightning."))]


def _install(q: queue.SimpleQueue[Any]) -> None:
    from agentlightning.server import store

    if _Tee.queue is not None:
        raise RuntimeError("a gateway tap is already installed in this process")
    originals = {name: getattr(store, name) for name in _CONTAINERS}
    tees: dict[str, dict[str, Any]] = {"_rollouts": _TeeRollouts(), "_events": _TeeEvents()}
    dict.update(tees["_rollouts"], originals["_rollouts"])  # existing rollouts: no emission
    for rollout_id, attempts in originals["_events"].items():
        tees["_events"][rollout_id] = attempts
    for module in _store_modules():
        for name in _CONTAINERS:
            if getattr(module, name, None) is originals[name]:
                setattr(module, name, tees[name])
    _Tee.queue = q


def _uninstall() -> None:
    """Give the modules plain containers again (same contents); the tees go inert."""
    from agentlightning.server import store

    current = {name: getattr(store, name) for name in _CONTAINERS}
    plain: dict[str, dict[str, Any]] = {
        "_rollouts": dict(current["_rollouts"]),
        "_events": {rid: {aid: list(evs) for aid, evs in attempts.items()}
                    for rid, attempts in current["_events"].items()},
    }
    for module in _store_modules():
        for name in _CONTAINERS:
            if getattr(module, name, None) is current[name]:
                setattr(module, name, plain[name])
    _Tee.queue = None


# --- the tap ------------------------------------------------------------------------------------

@dataclass
class TapStats:
    rollout_updates: int = 0
    events: int = 0
    decisions: int = 0
    rewards: int = 0
    quarantined: int = 0
    deliveries: int = 0
    queue_max: int = 0
    lost: int = 0  # records a failing sink could not take


def server_config(*, host: str, port: int, key: str | None) -> dict[str, Any]:
    """Agent Lightning's own server config (its packaged server.yaml), with our host, port, key:
    the gateway we run is configured exactly like `agl-server`."""
    from omegaconf import OmegaConf

    text = resources.files("agentlightning.config").joinpath("server.yaml").read_text()
    cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    assert isinstance(cfg, dict)
    cfg.update({"host": host, "port": port, "key": key or ""})
    return cfg


class GatewayTap:
    """Start/stop the gateway in a thread; normalised records go to `sink`."""

    def __init__(self, sink: Sink, *, host: str = "127.0.0.1", port: int = 8080,
                 key: str | None = None, run_id: str = "", batch_interval_s: float = 0.05,
                 batch_max: int = 20_000, log_level: str = "warning") -> None:
        self._sink = sink
        self.host = host
        self.port = port
        self._key = key  # handed to Agent Lightning's config only; never logged
        self.run_id = run_id
        self.batch_interval_s = batch_interval_s
        self.batch_max = batch_max
        self.log_level = log_level
        self.stats = TapStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._contexts: dict[str, EventNormaliser] = {}
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._drain_thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def source(self) -> str:
        return f"gateway:{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        import uvicorn
        from agentlightning.server.app import create_app

        app = create_app(server_config(host=self.host, port=self.port, key=self._key))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it, Nagle's algorithm and the client's
        # delayed ACK hold every small response ~40 ms (measured: 48 ms -> 2.4 ms per request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))  # bind here: a busy port is a clear error now
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level=self.log_level, timeout_keep_alive=120,
                                lifespan="on")
        self._server = uvicorn.Server(config)
        try:
            _install(self._queue)
        except BaseException:
            sock.close()
            raise
        self._drain_thread = threading.Thread(target=self._drain, name="tw-gateway-drain",
                                              daemon=True)
        self._drain_thread.start()

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() / stop()
                self._error = exc

        self._server_thread = threading.Thread(target=serve, name="tw-gateway", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._server_thread.is_alive():
                self._shutdown_drain()
                raise RuntimeError(f"gateway failed to start: {self._error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start in time")
            time.sleep(0.01)
        log.info("gateway: listening", extra={"fields": {"url": self.url}})

    def stop(self, timeout_s: float = 20.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout_s)
        self._shutdown_drain(timeout_s)

    def _shutdown_drain(self, timeout_s: float = 20.0) -> None:
        if _Tee.queue is self._queue:
            _uninstall()
        if self._drain_thread is not None and self._drain_thread.is_alive():
            self._queue.put(_STOP)
            self._drain_thread.join(timeout_s)

    def run(self, sink: Sink, stop: threading.Event, get_cursor: Any = None) -> None:
        """As a `collect` source: serve until `stop` is set, then drain."""
        self._sink = sink
        self.start()
        try:
            while not stop.wait(0.5):
                if self._error is not None or (self._server_thread is not None
                                               and not self._server_thread.is_alive()):
                    raise RuntimeError(f"gateway stopped: {self._error or 'server exited'}")
        finally:
            self.stop()
        if self._error is not None:  # the final drain failed to store something
            raise RuntimeError(f"gateway tap could not store every record: {self._error}")

    def __enter__(self) -> GatewayTap:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- drain thread -------------------------------------------------------------------------

    def _handle(self, item: tuple[Any, ...], out: Records) -> None:
        kind = item[0]
        if kind == "event":
            _, rid, aid, position, event = item
            norm = self._contexts.get(rid)
            if norm is None:  # created before the tap was installed
                norm = EventNormaliser(RolloutContext(rollout_id=rid, run_id=self.run_id),
                                       self.source)
                self._contexts[rid] = norm
            self.stats.events += 1
            norm.add(out, event_type=event.event_type, position=position, data=event.data,
                     ts=event.timestamp, attempt_id=aid)
        elif kind == "rollout":
            rollout = item[1]
            self.stats.rollout_updates += 1
            known = self._contexts.get(rollout.rollout_id)
            previous = known.ctx.state if known is not None else None
            fresh = RolloutContext.from_rollout(
                rollout.model_dump(mode="json", exclude={"input", "config"}), run_id=self.run_id)
            if known is None:
                known = EventNormaliser(fresh, self.source)
                self._contexts[rollout.rollout_id] = known
            else:
                known.ctx.refresh(fresh)
            if fresh.state != previous:
                if previous is None and fresh.state != "queuing":
                    out.rollouts.append(known.transition("queuing"))
                out.rollouts.append(known.transition())
        elif kind == "deleted":
            self._contexts.pop(item[1], None)

    def _drain(self) -> None:
        stopping = False
        while not (stopping and self._queue.empty()):
            try:
                item: Any = self._queue.get_nowait() if stopping else self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            out = Records()
            deadline = time.monotonic() + self.batch_interval_s
            n = 0
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    try:
                        self._handle(item, out)
                    except Exception as exc:  # one odd object must not stop the tee
                        log.error("gateway: cannot normalise %s: %s", item[0], exc)
                    n += 1
                if n >= self.batch_max:
                    break
                remaining = deadline - time.monotonic()
                try:
                    item = (self._queue.get_nowait() if stopping or remaining <= 0
                            else self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            self.stats.queue_max = max(self.stats.queue_max, n)
            if n:
                self._deliver(out)
        log.info("gateway: tee drained", extra={"fields": asdict(self.stats)})

    def _deliver(self, out: Records) -> None:
        self.stats.decisions += len(out.decisions)
        self.stats.rewards += len(out.rewards)
        self.stats.quarantined += len(out.quarantined)
        self.stats.deliveries += 1
        out.cursor = (self.source, json.dumps(asdict(self.stats), sort_keys=True))
        out.stats = asdict(self.stats)
        try:
            self._sink(out)
        except Exception as exc:
            # Keep draining (the gateway must not block), but `run` stops the gateway: a tap
            # that cannot store must not go on accepting events as if it could.
            self.stats.lost += len(out)
            self._error = self._error or exc
            log.error("gateway: sink failed, records not stored",
                      extra={"fields": {"records": len(out), "error": str(exc)}})
