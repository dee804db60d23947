"""The poller tap: attach read-only to a running Agent Lightning gateway over its REST API.

The gateway keeps everything in memory and the trainer deletes each rollout 1-2 s after it
finishes, so the poller races the trainer:
- every `interval_s` (<= 250 ms) it follows the append-only terminal log
  (`GET /api/rollouts/terminal?after=`) and does a final read of each newly terminal rollout:
  its detail (metadata carries the stamped round) and its decision and reward events, by type;
- every `running_interval_s` it lists queuing/running rollouts and reads their decision and
  reward events incrementally (position in the type-filtered list is the identity, see agl.py),
  so most of a rollout is stored before it ends;
- a 404 means the trainer consumed the rollout first: counted as missed (and as partial when
  part of it had been read while it ran). The terminal log skips deleted rollouts while
  `next_after` still advances: each skipped entry is a missed rollout too.

Capture completeness: `seen = captured + missed` over rollouts that reached a terminal state
(plus rollouts lost in a gateway restart). The figures live in the cursor, which commits in the
same transaction as the rows, so they survive a crash of the poller exactly as the data does.

A gateway restart loses its memory and exposes no epoch: it shows as `total_terminal` below our
cursor. We then count the rollouts we were following as lost, start a new epoch at position 0
and carry on; stored rows are never touched and ids are unchanged (rollout ids are fresh uuids),
so nothing is lost or duplicated. A restart that completes more rollouts than our cursor before
we look again cannot be seen from outside; that is the limit of a read-only tap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Final


from ..governance.events import REWARD_EVENT
from .httpget import AsyncGetClient, Unreachable
from .agl import CAPTURE_TYPES, TERMINAL, EventNormaliser, RolloutContext
from .sink import Records, Sink

log = logging.getLogger(__name__)

VANISH_AFTER_S: Final = 30.0  # stop following a rollout absent from every listing this long


class AuthError(RuntimeError):
    """The gateway refused our key: polling cannot work, so the poller stops."""


class GatewayError(RuntimeError):
    """An unexpected answer (5xx, ...): retried with backoff like an unreachable gateway."""


class Consumed(Exception):
    """The rollout is gone (404): the trainer deleted it before we read it."""


@dataclass
class PollerStats:
    epoch: int = 0
    after: int = 0                # position in the current epoch's terminal log
    seen: int = 0                 # rollouts that reached a terminal state (+ lost in restarts)
    captured: int = 0             # final read succeeded: every decision and reward stored
    missed: int = 0               # consumed before the final read, skipped, or lost
    partial: int = 0              # missed, but some events had been read while it ran
    skipped: int = 0              # terminal log entries already deleted when we got there
    lost_in_restart: int = 0
    restarts: int = 0
    decisions: int = 0
    rewards: int = 0
    errors: int = 0               # connection errors (retried with backoff)

    def cursor_value(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_cursor(cls, value: str | None) -> PollerStats:
        if not value:
            return cls()
        try:
            d = json.loads(value)
        except ValueError:
            return cls()
        known = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in d.items() if k in known and isinstance(v, int)})

    @property
    def completeness(self) -> float | None:
        return self.captured / self.seen if self.seen else None


@dataclass
class _Tracked:
    ctx: RolloutContext
    normaliser: EventNormaliser
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (attempt, type) -> read
    last_listed: float = field(default_factory=time.monotonic)
    last_read: float = 0.0

    @property
    def read_any(self) -> bool:
        return any(self.counts.values())


class Poller:
    """Poll one gateway into a sink until stopped. Thread-safe to stop from anywhere."""

    def __init__(self, url: str, *, key: str | None = None, run_id: str = "",
                 interval_s: float = 0.25, running_interval_s: float = 1.0,
                 concurrency: int = 8, page_limit: int = 100, running_budget: int = 32,
                 event_types: tuple[str, ...] = CAPTURE_TYPES, timeout_s: float = 10.0,
                 backoff_base_s: float = 0.1, backoff_cap_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self._key = key  # never logged, never stored: it only goes into the auth header
        self.run_id = run_id
        self.interval_s = interval_s
        self.running_interval_s = running_interval_s
        # Running rollouts read per pass (least recently read first): with hundreds running,
        # reading them all every second would keep the single-threaded gateway busy for us.
        self.running_budget = running_budget
        self.concurrency = concurrency
        # Small pages: each page is one delivery, so the writer commits one page while the
        # next is read (measured: 100 drains 20k events ~1.7x faster than 1000).
        self.page_limit = page_limit
        # Decisions first: a reward takes its agent and arm from the rollout's decisions.
        self.event_types = tuple(sorted(event_types, key=lambda t: t == REWARD_EVENT))
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stats = PollerStats()
        self._tracked: dict[str, _Tracked] = {}
        self._last_running = 0.0
        # (position, rollout id) of the last terminal entry we read, to recognise a restarted
        # gateway that already went past our cursor while we could not reach it.
        self._last_entry: tuple[int, str] | None = None
        self._check_identity = False
        self._delivered = ""

    @property
    def source(self) -> str:
        return f"agl:{self.url}"

    def resume(self, committed: str | None) -> None:
        self.stats = PollerStats.from_cursor(committed)
        try:
            last = json.loads(committed)["last_entry"] if committed else None
        except (ValueError, KeyError, TypeError):
            last = None
        if isinstance(last, list) and len(last) == 2:
            self._last_entry = (int(last[0]), str(last[1]))
            self._check_identity = True  # the gateway may have restarted while we were down

    # --- HTTP -------------------------------------------------------------------------------

    def _client(self) -> AsyncGetClient:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        return AsyncGetClient(self.url, headers=headers, max_connections=self.concurrency,
                              timeout_s=self.timeout_s)

    async def _get(self, client: AsyncGetClient, path: str,
                   params: dict[str, Any] | list[tuple[str, Any]] | None = None) -> Any:
        status, body = await client.get(path, params)
        if status == 401:
            raise AuthError(f"the gateway at {self.url} refused the API key (HTTP 401); set "
                            "AGL_KEY or --key-file to the key the gateway was started with")
        if status == 404:
            raise Consumed(path)
        if status != 200:
            raise GatewayError(f"HTTP {status} from {path}")
        return json.loads(body)

    # --- reading ----------------------------------------------------------------------------

    def _track(self, rollout: dict[str, Any]) -> _Tracked:
        rid = str(rollout.get("rollout_id"))
        ctx = RolloutContext.from_rollout(rollout, run_id=self.run_id)
        tracked = self._tracked.get(rid)
        if tracked is None:
            tracked = _Tracked(ctx=ctx, normaliser=EventNormaliser(ctx, self.source))
            self._tracked[rid] = tracked
        else:
            tracked.ctx.refresh(ctx)
        tracked.last_listed = time.monotonic()
        return tracked

    async def _fetch(self, client: AsyncGetClient, paths: list[tuple[str, Any]]) -> list[Any]:
        """GET several paths at once; the first error (404 included) is raised."""
        results = await asyncio.gather(*[self._get(client, p, params) for p, params in paths],
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, AuthError)), errors[0])
        return results

    def _event_paths(self, rid: str) -> list[tuple[str, Any]]:
        return [(f"/api/rollouts/{rid}/events", {"event_type": t}) for t in self.event_types]

    def _normalise(self, tracked: _Tracked, lists: list[Any]
                   ) -> tuple[Records, dict[tuple[str, str], int]]:
        """Records for the positions not read yet. Nothing is changed here: the caller applies
        the result once every read of the tick succeeded, so a failure half way re-reads the
        same positions next time instead of skipping them."""
        scratch = Records()
        new_counts: dict[tuple[str, str], int] = {}
        for etype, events in zip(self.event_types, lists):
            attempt = str(events[0].get("attempt_id")) if events else tracked.ctx.attempt_id
            key = (attempt, etype)
            new_counts[key] = tracked.normaliser.add_typed_list(
                scratch, etype, events, tracked.counts.get(key, 0))
        return scratch, new_counts

    async def _read_events(self, client: AsyncGetClient,
                           tracked: _Tracked) -> tuple[Records, dict[tuple[str, str], int]]:
        lists = await self._fetch(client, self._event_paths(tracked.ctx.rollout_id))
        return self._normalise(tracked, lists)

    def _apply(self, tracked: _Tracked, scratch: Records,
               counts: dict[tuple[str, str], int], out: Records) -> None:
        tracked.counts.update(counts)
        self.stats.decisions += len(scratch.decisions)
        self.stats.rewards += len(scratch.rewards)
        out.extend(scratch)

    async def _final_read(self, client: AsyncGetClient, rid: str) -> tuple[
            str, _Tracked | None, tuple[Records, dict[tuple[str, str], int]] | None]:
        """(rollout id, what we track of it, its new records and counts or None if consumed).
        Detail and events are read at once: the trainer may delete the rollout any moment."""
        tracked = self._tracked.get(rid)
        try:
            detail, *lists = await self._fetch(
                client, [(f"/api/rollouts/{rid}", None)] + self._event_paths(rid))
        except Consumed:
            return rid, tracked, None
        tracked = self._track(detail.get("rollout", detail))
        return rid, tracked, self._normalise(tracked, lists)

    async def _follow_terminal(self, client: AsyncGetClient, sink: Sink) -> int:
        """Drain the terminal log from the cursor; returns how many entries were consumed."""
        consumed = 0
        while True:
            after = self.stats.after
            page = await self._get(client, "/api/rollouts/terminal",
                                   {"after": after, "limit": self.page_limit})
            total = int(page["total_terminal"])
            if total < after or await self._replaced(client, total):
                self._restarted(total, sink)
                continue
            items = page["items"]
            next_after = int(page["next_after"])
            results = await asyncio.gather(*[self._final_read(client, str(it["rollout_id"]))
                                             for it in items])
            out = Records()
            for rid, tracked, result in results:
                if result is None:
                    self.stats.missed += 1
                    partial = tracked is not None and tracked.read_any
                    self.stats.partial += int(partial)
                    log.info("poller: rollout consumed before its final read",
                             extra={"fields": {"rollout_id": rid, "partial": partial}})
                else:
                    assert tracked is not None
                    self._apply(tracked, *result, out)
                    self.stats.captured += 1
                    out.rollouts.append(tracked.normaliser.transition("queuing"))
                    if tracked.ctx.state in TERMINAL:
                        out.rollouts.append(tracked.normaliser.transition())
                self._tracked.pop(rid, None)
            skipped = (next_after - after) - len(items)
            if items and skipped == 0:  # positions are known only when nothing was skipped
                self._last_entry = (next_after - 1, str(items[-1]["rollout_id"]))
            self.stats.skipped += skipped
            self.stats.missed += skipped
            self.stats.seen += next_after - after
            consumed += next_after - after
            self.stats.after = next_after
            self._deliver(out, sink)
            if next_after >= total or next_after == after:
                return consumed

    async def _replaced(self, client: AsyncGetClient, total: int) -> bool:
        """After being cut off: is the entry we read last still the same rollout? (Only
        conclusive when it still exists; a deleted entry tells nothing.)"""
        if not self._check_identity:
            return False
        self._check_identity = False
        if self._last_entry is None or total <= self._last_entry[0]:
            return False
        position, rid = self._last_entry
        page = await self._get(client, "/api/rollouts/terminal", {"after": position, "limit": 1})
        items = page["items"]
        return bool(items) and str(items[0]["rollout_id"]) != rid

    def _restarted(self, total: int, sink: Sink) -> None:
        lost = len(self._tracked)
        log.warning("poller: gateway restarted (terminal log shrank below our cursor)",
                    extra={"fields": {"url": self.url, "cursor": self.stats.after,
                                      "total_terminal": total, "lost_rollouts": lost}})
        self.stats.restarts += 1
        self.stats.epoch += 1
        self.stats.after = 0
        self._last_entry = None
        self.stats.lost_in_restart += lost
        self.stats.seen += lost
        self.stats.missed += lost
        self.stats.partial += sum(1 for t in self._tracked.values() if t.read_any)
        self._tracked.clear()
        self._deliver(Records(), sink)

    async def _follow_running(self, client: AsyncGetClient, sink: Sink) -> None:
        listed = await self._get(client, "/api/rollouts", [
            ("state_in", "queuing"), ("state_in", "running"), ("limit", 1_000_000)])
        out = Records()
        running: list[_Tracked] = []
        for rollout in listed:
            rid = str(rollout.get("rollout_id"))
            before = self._tracked.get(rid)
            was_running = before is not None and before.ctx.state == "running"
            tracked = self._track(rollout)
            if before is None:
                out.rollouts.append(tracked.normaliser.transition("queuing"))
            if tracked.ctx.state == "running":
                if not was_running:
                    out.rollouts.append(tracked.normaliser.transition("running"))
                running.append(tracked)
        running.sort(key=lambda t: t.last_read)
        running = running[:self.running_budget]
        for tracked in running:
            tracked.last_read = time.monotonic()

        async def one(tracked: _Tracked) -> tuple[
                _Tracked, tuple[Records, dict[tuple[str, str], int]] | None]:
            try:
                return tracked, await self._read_events(client, tracked)
            except Consumed:
                return tracked, None  # finished and deleted: the terminal log accounts for it

        for tracked, result in await asyncio.gather(*[one(t) for t in running]):
            if result is not None:
                self._apply(tracked, *result, out)
        horizon = time.monotonic() - VANISH_AFTER_S
        for rid in [r for r, t in self._tracked.items() if t.last_listed < horizon]:
            del self._tracked[rid]
        self._deliver(out, sink)

    def _deliver(self, out: Records, sink: Sink) -> None:
        value = json.loads(self.stats.cursor_value())
        value["last_entry"] = list(self._last_entry) if self._last_entry else None
        cursor = json.dumps(value, sort_keys=True)
        if not len(out) and cursor == self._delivered:
            return  # an idle tick: no commit (each one costs the writer a transaction)
        self._delivered = cursor
        out.cursor = (self.source, cursor)
        out.stats = asdict(self.stats)
        sink(out)

    # --- loop -------------------------------------------------------------------------------

    async def poll_once(self, client: AsyncGetClient, sink: Sink, *,
                        running: bool | None = None) -> None:
        # Terminal first: those rollouts are the ones about to be deleted.
        await self._follow_terminal(client, sink)
        now = time.monotonic()
        if running if running is not None else now - self._last_running >= self.running_interval_s:
            self._last_running = now
            await self._follow_running(client, sink)

    async def run_async(self, sink: Sink, stop: threading.Event) -> None:
        failures = 0
        async with self._client() as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.poll_once(client, sink)
                except AuthError:
                    raise
                except (Unreachable, GatewayError, json.JSONDecodeError) as exc:
                    failures += 1
                    self.stats.errors += 1
                    self._check_identity = True  # the gateway may come back as a new one
                    # Full jitter: many pollers restarting together do not hammer the gateway.
                    delay = random.uniform(0, min(self.backoff_cap_s,
                                                  self.backoff_base_s * 2 ** failures))
                    log.warning("poller: gateway unreachable, retrying", extra={"fields": {
                        "url": self.url, "error": type(exc).__name__, "attempt": failures,
                        "retry_in_s": round(delay, 3)}})
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    log.info("poller: gateway reachable again",
                             extra={"fields": {"url": self.url, "after_attempts": failures}})
                failures = 0
                remaining = self.interval_s - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.to_thread(stop.wait, remaining)

    def run(self, sink: Sink, stop: threading.Event,
            get_cursor: Callable[[str], str | None] | None = None) -> None:
        """Blocking: poll until `stop` is set (raises AuthError on a refused key)."""
        if get_cursor is not None:
            self.resume(get_cursor(self.source))
        asyncio.run(self.run_async(sink, stop))


async def poll_until_idle(poller: Poller, sink: Sink, *, idle_ticks: int = 2,
                          max_s: float = 60.0) -> None:
    """Poll until a few ticks bring nothing new (tests and benchmarks: drain a gateway)."""
    quiet = 0
    deadline = time.monotonic() + max_s
    async with poller._client() as client:
        while quiet < idle_ticks and time.monotonic() < deadline:
            before = poller.stats.seen
            await poller.poll_once(client, sink, running=False)
            quiet = quiet + 1 if poller.stats.seen == before else 0
