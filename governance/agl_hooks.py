"""The hooks tap: a `RolloutHooks` file for the trainer's `agentlightning.hooks` setting.

    agentlightning.hooks: $(tractatus-watch hooks-path)   # this file (governance.hooks_path())
    TRACTATUS_WATCH_SPOOL=/path/to/spool          # where the records go (a spool folder)
    TRACTATUS_WATCH_USER_HOOKS=/path/to/mine.py   # optional: your own hooks, still run
    TRACTATUS_WATCH_RUN_ID=exp-42                 # optional: run id (default: one per start)
    TRACTATUS_WATCH_ARM=governed                  # optional: arm of rewards with no decisions

How Agent Lightning 1.0.2 uses this file (agentlightning/hooks.py, verl/agl_rollout_manager.py):
- `load_hooks(path)` executes the file as a fresh module and instantiates *the one* subclass of
  `RolloutHooks` it finds among the module's classes (imported ones included), with no
  arguments. So this file defines exactly one subclass, imports no other, and wraps a user's
  hooks file by loading it itself (Agent Lightning cannot load two).
- `on_startup()` is called once, with no store.
- `on_enqueue(request)` runs per rollout inside `AglRolloutManagerBase._create_rollouts`, before
  the rollout id exists; `request.is_train` says training or validation. The trainer enqueues a
  step's rollouts in one batch (the n rollouts of a sample back to back, with equal `input`) and
  sees them finish (`on_succeeded`/`on_failed`) before it enqueues the next batch; validation
  batches (is_train false) come at the step they follow, 0 before training. So the round is the
  number of training batches enqueued so far, and a group is a run of equal inputs in a batch:
  both from what the hooks are given. Only a resumed trainer (its first step is the
  checkpoint's) is beyond that count; the manager's private `_step` tells, so
  `_trainer_step()`, the one read of Agent Lightning's private state here, takes the round from
  it while it exists, and the count is the fallback, with a warning the first time it is
  missing (`TRACTATUS_WATCH_ROUND`, if set, comes before the count).
- `on_succeeded(rollout, events_by_attempt, trace_writer)` gets the last attempt's raw events.
- `on_failed(rollout, trace_writer)` gets no events, and the manager deletes the rollout on its
  next poll, so we fetch them at once over Agent Lightning's REST API, through the calling
  manager's public `client` (same URL, same key) or else `TRACTATUS_WATCH_AGL_URL`.

Agent Lightning 1.0.2 hooks have no shutdown callback, so the run's end is recorded at process
exit (atexit): one `run` record `ended` in the last segment, so that `check` after training does
not take the finished run for a stalled one. A trainer killed by a signal it does not handle
(SIGKILL; SIGTERM unless the trainer turns it into an exit) records no end.

Nothing here raises into the trainer: every failure is printed on stderr and counted. A user's
hooks are called exactly as Agent Lightning would call them (their exceptions reach the manager
as before). The file runs without being registered in `sys.modules`, so it defines no dataclass
(dataclasses look their module up there).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any, Mapping

from agentlightning.hooks import RolloutHooks, load_hooks

from tractatus_watch.records.agl import EventNormaliser, RolloutContext, stamp
from tractatus_watch.records.delivery import Records
from tractatus_watch.records.events import RunEvent
from tractatus_watch.records.spool_format import QUARANTINE_EVENT

SPOOL_ENV = "TRACTATUS_WATCH_SPOOL"
USER_HOOKS_ENV = "TRACTATUS_WATCH_USER_HOOKS"
RUN_ID_ENV = "TRACTATUS_WATCH_RUN_ID"
ARM_ENV = "TRACTATUS_WATCH_ARM"
ROUND_ENV = "TRACTATUS_WATCH_ROUND"  # only when the trainer's step cannot be read
DEFAULT_SPOOL = "tractatus-watch-spool"
AGL_URL_ENVS = ("TRACTATUS_WATCH_AGL_URL", "AGL_BASE_URL", "AGL_SERVER_URL")
END_SOURCE = "trainer hooks"
END_DETAIL = "the trainer process exited"
MANAGER_CLASS = "AglRolloutManagerBase"
STEP_ATTR = "_step"  # AglRolloutManagerBase's private copy of the trainer's step
STEP_MISSING = ("the trainer's step is not readable (no {cls} with {attr!r} is calling "
                "on_enqueue): rounds are the count of training batches since this trainer "
                "started, right unless it resumed from a checkpoint")
log = logging.getLogger("tractatus_watch.governance.agl_hooks")


def _calling_manager(max_depth: int = 12) -> Any | None:
    """The Agent Lightning rollout manager among our callers (an instance of its exported
    `AglRolloutManagerBase`, found by name: importing verl's module would import numpy)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if owner is not None and any(c.__name__ == MANAGER_CLASS for c in type(owner).__mro__):
            return owner
        frame = frame.f_back
    return None


def _trainer_step() -> int | None:
    """The step of the rollout manager enqueueing this rollout (the trainer's `global_steps`),
    read from its private `_step`: Agent Lightning 1.0.2 gives it to no hook. The only read of
    its private state here; None when there is no such manager or attribute."""
    manager = _calling_manager()
    step = getattr(manager, STEP_ATTR, None) if manager is not None else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def _text(given: Mapping[str, Any], key: str) -> str | None:
    value = given.get(key)
    return value if isinstance(value, str) and value else None


def _dump(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude={"input", "config"})
    return dict(obj)


class TractatusWatchHooks(RolloutHooks):
    def __init__(self) -> None:
        # One id per trainer start unless set; the uuid keeps two starts in one second apart.
        self.run_id = (os.environ.get(RUN_ID_ENV)
                       or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
        self.arm = os.environ.get(ARM_ENV, "")
        self.spool_dir = Path(os.environ.get(SPOOL_ENV) or DEFAULT_SPOOL).expanduser().resolve()
        self.counts = {"rollouts": 0, "decisions": 0, "rewards": 0, "events": 0,
                       "quarantined": 0, "errors": 0, "warnings": 0}
        self._lock = threading.Lock()
        self._spool: Any = None
        self._spool_pid: int | None = None  # the process that opened the spool
        # Where the enqueues are (see the module's docstring): a batch is open from its first
        # enqueue until a rollout finishes.
        self._train_batches = 0
        self._batch_open = False
        self._batch_is_train = True
        self._last_input: Any = None
        self._group = ""
        self._warned: set[str] = set()
        user_path = os.environ.get(USER_HOOKS_ENV)
        if user_path and Path(user_path).resolve() == Path(__file__).resolve():
            user_path = None  # pointing at ourselves would load us forever
        # A broken user hooks file is a configuration error: fail at load, as Agent Lightning
        # would have without us, rather than train without the user's hooks.
        self.user: RolloutHooks | None = load_hooks(user_path) if user_path else None

    # --- Agent Lightning's hooks ----------------------------------------------------------------

    def on_startup(self, store: Any | None = None) -> None:
        try:
            self._open_spool()
            print(f"tractatus-watch hooks: run {self.run_id}, spool {self.spool_dir}",
                  file=sys.stderr)
        except Exception as exc:
            self._failed("startup", exc)
        if self.user is not None:
            self.user.on_startup(store)

    def on_enqueue(self, request: Any) -> Any:
        if self.user is not None:
            request = self.user.on_enqueue(request)
        try:
            is_train = bool(getattr(request, "is_train", True))
            round_, group = self._place(request.input, is_train)
            metadata = request.metadata
            if hasattr(metadata, "model_dump"):
                metadata = metadata.model_dump(exclude_none=True)
            # A task that names its agent or arm (`agent_id`, `arm` in its input) tells every
            # tap whose rollout it is before any decision arrives (witnessed actions need it).
            given = request.input if isinstance(request.input, Mapping) else {}
            new = stamp(metadata, run_id=self.run_id, round=round_, group=group,
                        arm=_text(given, "arm") or self.arm or None,
                        agent_id=_text(given, "agent_id"), is_train=is_train)
            return request.model_copy(update={"metadata": new})
        except Exception as exc:
            self._failed("on_enqueue", exc)
            return request

    def on_succeeded(self, rollout: Any, events: dict[str, list[Any]], store: Any) -> None:
        self._batch_open = False
        try:
            self._capture(rollout, events)
        except Exception as exc:
            self._failed("on_succeeded", exc)
        if self.user is not None:
            self.user.on_succeeded(rollout, events, store)

    def on_failed(self, rollout: Any, store: Any) -> None:
        self._batch_open = False
        try:
            self._capture(rollout, self._fetch_events(rollout))
        except Exception as exc:
            self._failed("on_failed", exc)
        if self.user is not None:
            self.user.on_failed(rollout, store)

    # --- ours -----------------------------------------------------------------------------------

    def _place(self, given_input: Any, is_train: bool) -> tuple[int | None, str]:
        """The round and group of the rollout being enqueued (the module's docstring)."""
        with self._lock:
            new_batch = not self._batch_open or is_train != self._batch_is_train
            if new_batch:
                self._batch_open, self._batch_is_train = True, is_train
                if is_train:
                    self._train_batches += 1
            if new_batch or given_input != self._last_input:
                self._group = uuid.uuid4().hex
            self._last_input = given_input
            counted, group = self._train_batches, self._group
        step = _trainer_step()
        if step is not None:
            return step, group
        given = _env_int(ROUND_ENV)
        if given is not None:
            return given, group
        self._warn_once("step", STEP_MISSING.format(attr=STEP_ATTR, cls=MANAGER_CLASS))
        return counted, group

    def _fetch_events(self, rollout: Any) -> dict[str, list[Any]]:
        """The last attempt's events, read now: the manager deletes the rollout next poll."""
        rid = rollout.rollout_id
        attempt = rollout.status.last_attempt_id or "0"
        manager = _calling_manager()
        client = getattr(manager, "client", None) if manager is not None else None
        events = self._fetch_over_http(rid, client)
        grouped: dict[str, list[Any]] = {}
        for ev in events:
            grouped.setdefault(str(_attr(ev, "attempt_id") or attempt), []).append(ev)
        return grouped

    def _fetch_over_http(self, rollout_id: str, client: Any = None) -> list[Any]:
        """GET /api/rollouts/{id}/events through the manager's client, or else the URL from the
        environment (`AGL_KEY` as the bearer key)."""
        from urllib.parse import quote

        import httpx

        path = f"/api/rollouts/{quote(rollout_id, safe='')}/events"  # as the poller quotes it
        params = {"include_routed_experts": False}
        if isinstance(client, httpx.Client):
            resp = client.get(path, params=params)
        else:
            url = next((os.environ[k] for k in AGL_URL_ENVS if os.environ.get(k)), None)
            if url is None:
                raise RuntimeError("no rollout manager on the stack and no "
                                   "TRACTATUS_WATCH_AGL_URL: cannot read the failed rollout's "
                                   "events")
            key = os.environ.get("AGL_KEY")
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            resp = httpx.get(f"{url.rstrip('/')}{path}", params=params, headers=headers,
                             timeout=30)
        resp.raise_for_status()
        return list(resp.json())

    def _capture(self, rollout: Any, events: dict[str, list[Any]]) -> None:
        ctx = RolloutContext.from_rollout(_dump(rollout), run_id=self.run_id)
        norm = EventNormaliser(ctx, f"hooks:{self.run_id}", default_arm=self.arm or "unknown")
        out = Records()
        for attempt_id, attempt_events in events.items():
            norm.add_mixed_list(out, list(attempt_events), attempt_id)
        out.rollouts.append(norm.transition("queuing"))
        out.rollouts.append(norm.transition())
        self._write(out)

    def _open_spool(self) -> Any:
        if self._spool is None:
            from tractatus_watch.governance.spool_writer import SpoolWriter

            # SpoolWriter creates the folder (0700) and its segments (0600) itself.
            # No flush per rollout (an fsync and a segment each, on the trainer's thread): the
            # writer seals a segment every second and at exit, so a hard kill of the trainer
            # loses at most its last second.
            self._spool = SpoolWriter(self.spool_dir, max_age_s=1.0)
            self._spool_pid = os.getpid()
            # Registered after the SpoolWriter's own: atexit runs it first, while the spool
            # still takes records.
            atexit.register(self.close)
        return self._spool

    def _write(self, out: Records) -> None:
        lines = records_to_lines(out)
        with self._lock:
            spool = self._open_spool()
            for kind, data in lines:
                spool.write(kind, data)
            self.counts["rollouts"] += 1
            self.counts["decisions"] += len(out.decisions)
            self.counts["rewards"] += len(out.rewards)
            self.counts["events"] += len(out.events)
            self.counts["quarantined"] += len(out.quarantined)

    def close(self) -> None:
        """Record that the run ended and publish what is buffered (registered with atexit:
        this is the trainer's exit)."""
        with self._lock:
            if self._spool is not None:
                # A forked child inherits the object, not the run: its exit ends nothing.
                if self._spool_pid == os.getpid():
                    try:
                        self._write_end()
                    except Exception as exc:
                        self._failed("close: recording the run's end", exc)
                try:
                    self._spool.close()
                except Exception as exc:
                    self._failed("close", exc)
                self._spool = None

    def _write_end(self) -> None:
        # An end counts only at or after the run's last data, so a second trainer process of
        # the same run (its later data) makes the run live again until it exits too.
        end = RunEvent(run_id=self.run_id, event="ended", ts=time.time(), source=END_SOURCE,
                       detail=END_DETAIL)
        for kind, data in records_to_lines(Records(run_events=[end])):
            self._spool.write(kind, data)

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            self.counts["warnings"] += 1
            log.warning("tractatus-watch hooks: %s", message)

    def _failed(self, where: str, exc: BaseException) -> None:
        self.counts["errors"] += 1
        print(f"tractatus-watch hooks: {where} failed (training continues): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)


def records_to_lines(out: Records) -> list[tuple[str, dict[str, Any]]]:
    """Spool lines (type, data) for records, in the format the spool reader parses."""
    lines: list[tuple[str, dict[str, Any]]] = []
    for tr in out.rollouts:
        lines.append(("rollout", {
            "rollout_id": tr.rollout_id, "status": tr.status, "ts": tr.ts,
            "agent_id": tr.agent_id, "round": tr.round, "arm": tr.arm,
            "duration_s": tr.duration_s, "run_id": tr.run_id, "metadata": tr.metadata}))
    for dec in out.decisions:
        lines.append(("decision", dec.to_payload()))
    for r in out.rewards:
        lines.append(("reward", {
            "reward_id": r.reward_id, "rollout_id": r.rollout_id, "agent_id": r.agent_id,
            "round": r.round, "arm": r.arm, "value": r.value, "ts": r.ts, "run_id": r.run_id}))
    for ev in out.events:
        lines.append(("event", {
            "event_id": ev.event_id, "event_type": ev.event_type, "ts": ev.ts,
            "rollout_id": ev.rollout_id, "payload": ev.payload, "run_id": ev.run_id}))
    for run in out.run_events:
        lines.append(("run", run.to_payload()))
    for w in out.witnessed:
        lines.append(("witnessed", w.to_payload()))
    for i, q in enumerate(out.quarantined):
        # The spool has no quarantine record type; the reader turns this event back into one.
        lines.append(("event", {
            "event_id": f"quarantine:{q.ts}:{i}", "event_type": QUARANTINE_EVENT, "ts": q.ts,
            "rollout_id": "", "payload": {"source": q.source, "reason": q.reason, "raw": q.raw},
            "run_id": ""}))
    return lines


def _attr(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None
