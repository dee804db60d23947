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
and carry on; stored rows are never touched. Decision ids come from their payloads; a reward
without its producer's `reward_id` is named by its position, qualified by the epoch from the
first restart on (agl.reward_key), so a rollout that reuses an id after the restart keeps its
rewards. A restart that completes more rollouts than our cursor before we look again cannot be
seen from outside; that is the limit of a read-only tap.

One rollout never stops the poller. Agent Lightning answers 500 for every events read of a
rollout holding a record it cannot serialise (a lone surrogate in a decision); any answer other
than 200/401/404 (or a body that is not JSON) to a read of one rollout, while the terminal log
or the listing that named it answered, is that rollout's failure: logged with its id and
status, counted (`read_errors`), retried on the next `read_attempts - 1` passes (the pending
ids commit with the cursor, so a restart retries them too), then given up: counted as missed
and `unreadable`, and a quarantine row names it. The terminal log advances past it at once. A
failing terminal log read (every request failing, connection refused) is the gateway's
failure: backoff and retry, as before.
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
from urllib.parse import quote

from ..records.events import REWARD_EVENT, Quarantined
from .httpget import AsyncGetClient, Unreachable
from ..records.agl import CAPTURE_TYPES, TERMINAL, EventNormaliser, RolloutContext
from ..records.delivery import Records, Sink

log = logging.getLogger(__name__)

VANISH_AFTER_S: Final = 30.0  # stop following a rollout absent from every listing this long


class AuthError(RuntimeError):
    """The gateway refused our key: polling cannot work, so the poller stops."""


class GatewayError(RuntimeError):
    """An unexpected answer (5xx, ...): retried with backoff like an unreachable gateway."""


class BadAnswer(GatewayError):
    """An answer we cannot use: a status other than 200/401/404, or a body that is not JSON.
    To a read of one rollout it is that rollout's failure; to the terminal log, the gateway's."""

    def __init__(self, path: str, status: int, reason: str) -> None:
        super().__init__(f"{reason} from {path}")
        self.path = path
        self.status = status
        self.reason = reason


class Consumed(Exception):
    """The rollout is gone (404): the trainer deleted it before we read it."""


# A rollout's new records, and the per-(attempt, type) counts they bring it to.
Read = tuple[Records, dict[tuple[str, str], int]]


@dataclass
class PollerStats:
    epoch: int = 0
    after: int = 0                # position in the current epoch's terminal log
    seen: int = 0                 # rollouts that reached a terminal state (+ lost in restarts)
    captured: int = 0             # final read succeeded: every decision and reward stored
    missed: int = 0               # consumed before the final read, skipped, or lost
    partial: int = 0              # missed, but some events had been read while it ran
    skipped: int = 0              # terminal log entries already deleted when we got there
    unreadable: int = 0           # missed: its reads kept failing (a quarantine row names it)
    retrying: int = 0             # terminal, reads failing, not given up yet (seen, not settled)
    read_errors: int = 0          # failed reads of one rollout (5xx, unparseable), retries too
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
    failing: bool = False  # its last read failed (logged once per run of failures)

    @property
    def read_any(self) -> bool:
        return any(self.counts.values())


class Poller:
    """Poll one gateway into a sink until stopped. Thread-safe to stop from anywhere."""

    def __init__(self, url: str, *, key: str | None = None, run_id: str = "",
                 interval_s: float = 0.25, running_interval_s: float = 1.0,
                 concurrency: int = 8, page_limit: int = 100, running_budget: int = 32,
                 event_types: tuple[str, ...] = CAPTURE_TYPES, timeout_s: float = 10.0,
                 backoff_base_s: float = 0.1, backoff_cap_s: float = 2.0,
                 read_attempts: int = 4) -> None:
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
        # Final reads of one terminal rollout before it is given up (one per pass, ~1 s).
        self.read_attempts = max(1, read_attempts)
        self.stats = PollerStats()
        # Terminal rollouts whose final read failed: rollout id -> failed reads so far.
        self._retry: dict[str, int] = {}
        self._listing_failing = False
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
            value = json.loads(committed) if committed else {}
        except ValueError:
            value = {}
        value = value if isinstance(value, dict) else {}
        last = value.get("last_entry")
        if isinstance(last, list) and len(last) == 2:
            self._last_entry = (int(last[0]), str(last[1]))
            self._check_identity = True  # the gateway may have restarted while we were down
        retry = value.get("retry")
        if isinstance(retry, dict):
            self._retry = {str(rid): n for rid, n in retry.items() if isinstance(n, int)}

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
            raise BadAnswer(path, status, f"HTTP {status}")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
            raise BadAnswer(path, status, "a body that is not JSON") from None

    # --- reading ----------------------------------------------------------------------------

    def _track(self, rollout: dict[str, Any]) -> _Tracked:
        rid = str(rollout.get("rollout_id"))
        ctx = RolloutContext.from_rollout(rollout, run_id=self.run_id)
        tracked = self._tracked.get(rid)
        if tracked is None:
            tracked = _Tracked(ctx=ctx, normaliser=EventNormaliser(ctx, self.source,
                                                                   epoch=self.stats.epoch))
            self._tracked[rid] = tracked
        else:
            tracked.ctx.refresh(ctx)
        tracked.last_listed = time.monotonic()
        return tracked

    async def _fetch(self, client: AsyncGetClient, paths: list[tuple[str, Any]]) -> list[Any]:
        """GET several paths at once. Of several errors the most general is raised: a refused
        key, then the gateway's (unreachable), then the rollout's own (gone, then unreadable)."""
        results = await asyncio.gather(*[self._get(client, p, params) for p, params in paths],
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            def rank(e: BaseException) -> int:
                return (0 if isinstance(e, AuthError) else 2 if isinstance(e, Consumed)
                        else 3 if isinstance(e, BadAnswer) else 1)
            raise min(errors, key=rank)
        return results

    @staticmethod
    def _rollout_path(rid: str, tail: str = "") -> str:
        # Quoted: a rollout id is the client's choice, and a space in it would break the request.
        return f"/api/rollouts/{quote(rid, safe='')}{tail}"

    def _event_paths(self, rid: str) -> list[tuple[str, Any]]:
        path = self._rollout_path(rid, "/events")
        return [(path, {"event_type": t}) for t in self.event_types]

    def _normalise(self, tracked: _Tracked, lists: list[Any]) -> Read:
        """Records for the positions not read yet. Nothing is changed here: the caller applies
        the result once every read of the tick succeeded, so a failure half way re-reads the
        same positions next time instead of skipping them."""
        scratch = Records()
        new_counts: dict[tuple[str, str], int] = {}
        for etype, events in zip(self.event_types, lists):
            if not isinstance(events, list):
                raise BadAnswer(self._rollout_path(tracked.ctx.rollout_id, "/events"), 200,
                                f"{type(events).__name__} for a list of events")
            first = events[0] if events else None
            attempt = (str(first.get("attempt_id") or tracked.ctx.attempt_id)
                       if isinstance(first, dict) else tracked.ctx.attempt_id)
            key = (attempt, etype)
            new_counts[key] = tracked.normaliser.add_typed_list(
                scratch, etype, events, tracked.counts.get(key, 0))
        return scratch, new_counts

    async def _read_events(self, client: AsyncGetClient, tracked: _Tracked) -> Read:
        lists = await self._fetch(client, self._event_paths(tracked.ctx.rollout_id))
        return self._normalise(tracked, lists)

    def _apply(self, tracked: _Tracked, scratch: Records,
               counts: dict[tuple[str, str], int], out: Records) -> None:
        tracked.counts.update(counts)
        self.stats.decisions += len(scratch.decisions)
        self.stats.rewards += len(scratch.rewards)
        out.extend(scratch)

    async def _final_read(self, client: AsyncGetClient, rid: str) -> tuple[
            str, _Tracked | None, Read | Consumed | BadAnswer]:
        """(rollout id, what we track of it, its new records and counts, or why not: Consumed
        when the trainer deleted it, BadAnswer when it cannot be read). Detail and events are
        read at once: the trainer may delete the rollout any moment."""
        tracked = self._tracked.get(rid)
        path = self._rollout_path(rid)
        try:
            detail, *lists = await self._fetch(client, [(path, None)] + self._event_paths(rid))
            if not isinstance(detail, dict):
                raise BadAnswer(path, 200, f"{type(detail).__name__} for a rollout")
            tracked = self._track(detail.get("rollout", detail))
            return rid, tracked, self._normalise(tracked, lists)
        except (Consumed, BadAnswer) as exc:
            return rid, tracked, exc

    def _settle(self, rid: str, tracked: _Tracked | None, result: Read | Consumed | BadAnswer,
                out: Records) -> None:
        """Account for the final read of a terminal rollout (already counted as seen)."""
        if isinstance(result, BadAnswer):
            self.stats.read_errors += 1
            attempts = self._retry.get(rid, 0) + 1
            if attempts < self.read_attempts:
                self._retry[rid] = attempts
                log.warning("poller: cannot read a rollout, retrying on the next pass",
                            extra={"fields": {"rollout_id": rid, "status": result.status,
                                              "error": str(result), "attempt": attempts}})
                return  # still tracked: what was read while it ran stays read
            self._give_up(rid, tracked, result, attempts, out)
        elif isinstance(result, Consumed):
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
        self._retry.pop(rid, None)
        self._tracked.pop(rid, None)

    def _give_up(self, rid: str, tracked: _Tracked | None, error: BadAnswer, attempts: int,
                 out: Records) -> None:
        """A rollout the gateway cannot serve us: missed, and named in the quarantine table."""
        partial = tracked is not None and tracked.read_any
        self.stats.missed += 1
        self.stats.unreadable += 1
        self.stats.partial += int(partial)
        reason = (f"rollout {rid}: unreadable, given up after {attempts} reads: {error} "
                  "(what was read while it ran is stored)" if partial else
                  f"rollout {rid}: unreadable, given up after {attempts} reads: {error}")
        out.quarantined.append(Quarantined(
            source=self.source, reason=reason, ts=time.time(), raw=json.dumps({
                "rollout_id": rid, "status": error.status, "path": error.path,
                "error": error.reason, "attempts": attempts, "partial": partial})))
        log.warning("poller: rollout unreadable, given up", extra={"fields": {
            "rollout_id": rid, "status": error.status, "error": str(error),
            "attempts": attempts, "partial": partial}})

    async def _retry_unreadable(self, client: AsyncGetClient, sink: Sink) -> None:
        """One more final read of each terminal rollout whose reads failed before."""
        if not self._retry:
            return
        results = await asyncio.gather(*[self._final_read(client, rid) for rid in self._retry])
        out = Records()
        for rid, tracked, result in results:
            self._settle(rid, tracked, result, out)
        self._deliver(out, sink)

    async def _follow_terminal(self, client: AsyncGetClient, sink: Sink) -> int:
        """Drain the terminal log from the cursor; returns how many entries were consumed."""
        await self._retry_unreadable(client, sink)
        consumed = 0
        while True:
            after = self.stats.after
            total, items, next_after = await self._terminal_page(client, after, self.page_limit)
            if total < after or await self._replaced(client, total):
                self._restarted(total, sink)
                continue
            results = await asyncio.gather(*[self._final_read(client, rid) for rid in items])
            out = Records()
            for rid, tracked, result in results:
                self._settle(rid, tracked, result, out)
            skipped = (next_after - after) - len(items)
            if items and skipped == 0:  # positions are known only when nothing was skipped
                self._last_entry = (next_after - 1, items[-1])
            self.stats.skipped += skipped
            self.stats.missed += skipped
            self.stats.seen += next_after - after
            consumed += next_after - after
            self.stats.after = next_after
            self._deliver(out, sink)
            if next_after >= total or next_after == after:
                return consumed

    async def _terminal_page(self, client: AsyncGetClient, after: int,
                             limit: int) -> tuple[int, list[str], int]:
        """(total_terminal, rollout ids, next_after) of one page of the terminal log."""
        path = "/api/rollouts/terminal"
        page = await self._get(client, path, {"after": after, "limit": limit})
        try:
            return (int(page["total_terminal"]), [str(it["rollout_id"]) for it in page["items"]],
                    int(page["next_after"]))
        except (KeyError, TypeError, ValueError):
            raise BadAnswer(path, 200, "a terminal page of an unknown shape") from None

    async def _replaced(self, client: AsyncGetClient, total: int) -> bool:
        """After being cut off: is the entry we read last still the same rollout? (Only
        conclusive when it still exists; a deleted entry tells nothing.)"""
        if not self._check_identity:
            return False
        self._check_identity = False
        if self._last_entry is None or total <= self._last_entry[0]:
            return False
        position, rid = self._last_entry
        _, items, _ = await self._terminal_page(client, position, 1)
        return bool(items) and items[0] != rid

    def _restarted(self, total: int, sink: Sink) -> None:
        # Terminal rollouts still being retried were seen already: now they are just missed.
        retrying = [self._tracked.get(rid) for rid in self._retry]
        lost = [t for rid, t in self._tracked.items() if rid not in self._retry]
        log.warning("poller: gateway restarted (terminal log shrank below our cursor)",
                    extra={"fields": {"url": self.url, "cursor": self.stats.after,
                                      "total_terminal": total, "lost_rollouts": len(lost),
                                      "lost_unreadable": len(retrying)}})
        self.stats.restarts += 1
        self.stats.epoch += 1
        self.stats.after = 0
        self._last_entry = None
        self.stats.lost_in_restart += len(lost)
        self.stats.seen += len(lost)
        self.stats.missed += len(lost) + len(retrying)
        self.stats.partial += sum(1 for t in lost + retrying if t is not None and t.read_any)
        self._tracked.clear()
        self._retry.clear()
        self._deliver(Records(), sink)

    async def _list_running(self, client: AsyncGetClient) -> list[dict[str, Any]] | None:
        """The queuing and running rollouts, or None when the gateway cannot list them (one
        rollout it cannot serialise fails the whole listing): the terminal log, read first,
        still answers, so we go on with final reads alone."""
        path = "/api/rollouts"
        try:
            listed = await self._get(client, path, [
                ("state_in", "queuing"), ("state_in", "running"), ("limit", 1_000_000)])
            if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
                raise BadAnswer(path, 200, "a listing of an unknown shape")
        except BadAnswer as exc:
            if not self._listing_failing:
                log.warning("poller: cannot list running rollouts; reading each rollout when "
                            "it ends", extra={"fields": {"url": self.url, "status": exc.status,
                                                         "error": str(exc)}})
            self._listing_failing = True
            return None
        if self._listing_failing:
            log.info("poller: running rollouts listed again", extra={"fields": {"url": self.url}})
        self._listing_failing = False
        return listed

    def _running_failed(self, tracked: _Tracked, error: BadAnswer) -> None:
        self.stats.read_errors += 1
        if not tracked.failing:  # once per run of failures: it is tried every pass
            log.warning("poller: cannot read a running rollout", extra={"fields": {
                "rollout_id": tracked.ctx.rollout_id, "status": error.status,
                "error": str(error)}})
        tracked.failing = True

    async def _follow_running(self, client: AsyncGetClient, sink: Sink) -> None:
        listed = await self._list_running(client)
        if listed is None:
            return
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

        async def one(tracked: _Tracked) -> tuple[_Tracked, Read | BadAnswer | None]:
            try:
                return tracked, await self._read_events(client, tracked)
            except Consumed:
                return tracked, None  # finished and deleted: the terminal log accounts for it
            except BadAnswer as exc:
                return tracked, exc  # its final read retries and, if need be, reports it

        for tracked, result in await asyncio.gather(*[one(t) for t in running]):
            if isinstance(result, BadAnswer):
                self._running_failed(tracked, result)
            elif result is not None:
                tracked.failing = False
                self._apply(tracked, *result, out)
        horizon = time.monotonic() - VANISH_AFTER_S
        for rid in [r for r, t in self._tracked.items() if t.last_listed < horizon]:
            del self._tracked[rid]
        self._deliver(out, sink)

    def _deliver(self, out: Records, sink: Sink) -> None:
        self.stats.retrying = len(self._retry)
        value = json.loads(self.stats.cursor_value())
        value["last_entry"] = list(self._last_entry) if self._last_entry else None
        value["retry"] = dict(self._retry)
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
                except (Unreachable, GatewayError) as exc:
                    failures += 1
                    self.stats.errors += 1
                    self._check_identity = True  # the gateway may come back as a new one
                    # Full jitter: many pollers restarting together do not hammer the gateway.
                    delay = random.uniform(0, min(self.backoff_cap_s,
                                                  self.backoff_base_s * 2 ** failures))
                    what = "unreachable" if isinstance(exc, Unreachable) else "failing"
                    log.warning(f"poller: gateway {what}, retrying", extra={"fields": {
                        "url": self.url, "error": f"{type(exc).__name__}: {exc}",
                        "status": getattr(exc, "status", None), "attempt": failures,
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
            settled = poller.stats.seen == before and not poller._retry
            quiet = quiet + 1 if settled else 0
