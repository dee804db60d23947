"""The poller tap: attach read-only to a running Agent Lightning gateway over its REST API.

The gateway keeps everything in memory and the trainer deletes each rollout soon after it ends
(`AglRolloutManager` ~1 s after, `AglAsyncRolloutManager` as soon as its group is complete), so
the poller races the trainer:
- every `interval_s` (<= 250 ms) it follows the terminal log (`GET /api/rollouts/terminal`) and
  does a final read of each newly ended rollout: its detail (metadata carries the stamped round)
  and its decision and reward events, by type;
- every `running_interval_s` it lists queuing/running rollouts and reads their decision and
  reward events incrementally (position in the type-filtered list is the identity, see agl.py),
  so most of a rollout is stored before it ends.

What each rollout had. Agent Lightning 1.0.2 gives no event counts or sequence numbers: no id
on an event, nothing in the rollout (`status.version` counts status patches), nothing in the
terminal log (id, state, data_id, is_train). The one place that tells what a rollout had is its
event lists read after it ended: they no longer grow. So a rollout is *captured* when its final
read succeeded (every decision and reward it had is stored, and the record of its terminal
transition says so in `metadata.capture`). Otherwise it ended *partly read* or *not read*, with
its reason, and what was read of it while it ran is stored and counted (`decisions_unverified`
and `rewards_unverified`: lower bounds of what it had):
- `consumed`: listed in the terminal log, deleted before its final read. Its terminal state is
  the log entry's, so its terminal transition is stored all the same (`state_from`).
- `vanished`: deleted before we read its terminal entry. 1.0.2 drops a deleted rollout from the
  log's pages (its position is `skipped`), the upstream change prunes it from the log, and its
  detail answers 404: its terminal state is known nowhere any more (`state_unknown`). We know it
  from the running listing: a rollout that left the listing and is absent from the terminal log
  read after that is read once more; a 404 settles it.
- `unreadable` (see below), `lost_in_restart` (followed, or still being retried, when the
  gateway restarted).
`seen` counts ended rollouts: those named above plus skipped positions no vanished rollout
explains (rollouts that ran and ended between two passes: nothing of them was read).
`missed = seen - captured - retrying`; `partial` of them had something read. The figures live in
the cursor, which commits in the same transaction as the rows, so they survive a crash of the
poller exactly as the data does.

Following a log that may be pruned. 1.0.2's log is append-only (deleted entries keep their
position); an open upstream change removes a deleted rollout's entry, which shortens the log and
moves every later entry down. So a position is checked before it is trusted: after each page the
entry we read last (the anchor) must still be where we read it, or its position must hold a
deleted entry (a gateway that keeps them does not prune: then positions are stable and only the
log shrinking below our cursor needs a look). When the log moved, we read it whole, in one
request, and go on after the newest entry we consumed before (by rollout id; its creation time
confirms it is the same rollout, not a new one under a reused id). Old entries can only be
removed, new ones only appended, so everything after it is new: nothing is read twice, nothing
is skipped.

A gateway restart loses its memory and exposes no epoch. It is not "the log got shorter" (pruning
does that) but: the log moved, none of the rollouts we consumed or are following is still there
(same id and creation time), and either we could not reach the gateway meanwhile (or the poller
itself was restarted) or an id came back as a different rollout. We then count the rollouts we
were following as lost, start a new epoch at position 0 and carry on; stored rows are never
touched. Decision ids come from their payloads; a reward without its producer's `reward_id` is
named by its position, qualified by the epoch from the first restart on (agl.reward_key), so a
rollout that reuses an id after the restart keeps its rewards. A restart nobody could notice (no
outage, nothing of the old gateway left to compare) is read as pruning: every entry of the new log
is read, and only the epoch and the reason given for the rollouts we were following differ.

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
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Final
from urllib.parse import quote

from ..records.events import REWARD_EVENT, Quarantined, RolloutTransition
from .httpget import AsyncGetClient, Unreachable
from ..records.agl import CAPTURE_TYPES, TERMINAL, EventNormaliser, RolloutContext
from ..records.delivery import Records, Sink

log = logging.getLogger(__name__)

VANISH_AFTER_S: Final = 30.0  # settle a rollout absent from every listing whose reads fail
# One request reads the whole log when it moved: pages read one after another could each see a
# different log (an entry pruned between two reads moves the next page's entries down).
FULL_LOG_LIMIT: Final = 1_000_000
KNOWN_MAX: Final = 4096       # consumed terminal entries remembered (by id) to find our place
KNOWN_IN_CURSOR: Final = 16   # of which the newest go into the cursor (a restarted poller's)
IDENTITY_CHECKS: Final = 4    # rollout details read at most to confirm one place in the log

# Why a rollout was not read to its end (the `reason` of its capture record and log line).
CAPTURED: Final = "read after it ended"
CONSUMED: Final = "deleted before its final read"
VANISHED: Final = "deleted before its terminal entry was read"
UNREADABLE: Final = "unreadable"
LOST: Final = "lost in a gateway restart"


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
    seen: int = 0                 # ended rollouts: `ended` + skipped positions vanished ones
    #                               do not explain (recount())
    captured: int = 0             # final read after it ended: every decision and reward it had
    missed: int = 0               # seen - captured - retrying: not read to its end
    partial: int = 0              # missed, but some events had been read while it ran
    ended: int = 0                # ended rollouts we know by id (listed, vanished, lost)
    consumed: int = 0             # listed in the terminal log, deleted before the final read
    vanished: int = 0             # deleted before we read its terminal entry (seen running)
    skipped: int = 0              # terminal log positions already deleted when we read them
    unreadable: int = 0           # missed: its reads kept failing (a quarantine row names it)
    retrying: int = 0             # terminal, reads failing, not given up yet (seen, not settled)
    read_errors: int = 0          # failed reads of one rollout (5xx, unparseable), retries too
    lost_in_restart: int = 0
    restarts: int = 0
    resyncs: int = 0              # the terminal log moved under the cursor: found our place
    state_unknown: int = 0        # ended without its terminal state stored (vanished, lost)
    decisions: int = 0            # decision records read (each stored once)
    rewards: int = 0
    decisions_unverified: int = 0  # of `decisions`, from rollouts not read to their end
    rewards_unverified: int = 0
    errors: int = 0               # connection errors (retried with backoff)

    def recount(self) -> None:
        """The derived figures. A vanished rollout ended, so 1.0.2 also skipped its position;
        skipped positions beyond those are rollouts we never saw."""
        self.seen = self.ended + max(0, self.skipped - self.vanished)
        self.missed = self.seen - self.captured - self.retrying

    @classmethod
    def from_cursor(cls, value: str | None) -> PollerStats:
        if not value:
            return cls()
        try:
            d = json.loads(value)
        except ValueError:
            return cls()
        if not isinstance(d, dict):
            return cls()
        known = cls.__dataclass_fields__
        stats = cls(**{k: int(v) for k, v in d.items() if k in known and isinstance(v, int)})
        if "ended" not in d:  # a cursor from before `ended`: its `seen` counted every position
            stats.ended = max(0, stats.seen - stats.skipped)
        stats.recount()
        return stats

    @property
    def completeness(self) -> float | None:
        """Share of the ended rollouts read to their end."""
        return self.captured / self.seen if self.seen else None

    def summary(self) -> str:
        """One line for people: what ended, what of it was read, and why not the rest."""
        share = f" ({self.completeness:.1%})" if self.completeness is not None else ""
        line = (f"{self.seen} rollouts ended, {self.captured} read to their end{share}; "
                f"{self.decisions} decisions and {self.rewards} rewards stored")
        if self.missed:
            why = [f"{n} {what}" for n, what in (
                (self.consumed, CONSUMED), (self.vanished, VANISHED),
                (self.unreadable, UNREADABLE), (self.lost_in_restart, LOST),
                (self.missed - self.consumed - self.vanished - self.unreadable
                 - self.lost_in_restart, "ended unseen between two passes")) if n > 0]
            line += (f"; {self.missed} not read to their end ({', '.join(why)}): "
                     f"{self.partial} partly read, {self.decisions_unverified} decisions and "
                     f"{self.rewards_unverified} rewards of theirs stored")
        return line


@dataclass
class _Tracked:
    ctx: RolloutContext
    normaliser: EventNormaliser
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (attempt, type) -> read
    decisions: int = 0            # decision records read of it
    rewards: int = 0
    last_listed: float = field(default_factory=time.monotonic)
    last_read: float = 0.0
    absent_since: float | None = None  # first listing that no longer named it
    failing: bool = False  # its last read failed (logged once per run of failures)

    @property
    def read_any(self) -> bool:
        return any(self.counts.values())


@dataclass(frozen=True, slots=True)
class _Entry:
    """One terminal log entry as a page names it."""

    rollout_id: str
    state: str


@dataclass(slots=True)
class _Page:
    total: int
    items: list[_Entry]
    next_after: int

    def skipped_from(self, after: int) -> int:
        """Positions of the page whose rollout was already deleted (a gateway that keeps them)."""
        return self.next_after - after - len(self.items)


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
        self._ended_state: dict[str, str] = {}  # their state, as the terminal log gave it
        self._listing_failing = False
        self._tracked: dict[str, _Tracked] = {}
        self._last_running = 0.0
        # (position, rollout id) of the last terminal entry we read: the anchor that tells
        # whether positions still hold (pruning) and whether the gateway is still the same.
        self._last_entry: tuple[int, str] | None = None
        # Consumed terminal entries, oldest first: rollout id -> its creation time (None when
        # we never read its detail). Finds our place again when the log moved.
        self._known: OrderedDict[str, float | None] = OrderedDict()
        # Does the gateway prune deleted entries? None: not seen yet; False: it keeps them
        # (positions are stable, no anchor check needed); True: it prunes.
        self._prunes: bool | None = None
        self._check_identity = False  # unreachable meanwhile, or resumed: maybe a new gateway
        self._cut_off = False         # unreachable meanwhile (not a resume: see _resync)
        self._reborn = False          # a rollout id came back as another rollout
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
        for item in value.get("known") or []:
            if isinstance(item, list) and len(item) == 2:
                created = item[1] if isinstance(item[1], (int, float)) else None
                self._known[str(item[0])] = created
        prunes = value.get("prunes")
        self._prunes = prunes if isinstance(prunes, bool) else None

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
        if tracked is not None and _other_incarnation(tracked.ctx.created_at, ctx.created_at):
            # Same id, created again: what we read belongs to the one that is gone.
            self._reborn = True
            self._vanish(rid, tracked)
            tracked = None
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
        tracked.decisions += len(scratch.decisions)
        tracked.rewards += len(scratch.rewards)
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
                out: Records, state: str | None) -> None:
        """Account for the final read of an ended rollout (already counted as ended); `state`
        is its terminal state as the log gave it (None: we did not read it there)."""
        if isinstance(result, BadAnswer):
            self.stats.read_errors += 1
            attempts = self._retry.get(rid, 0) + 1
            if attempts < self.read_attempts:
                self._retry[rid] = attempts
                if state:
                    self._ended_state[rid] = state
                log.warning("poller: cannot read a rollout, retrying on the next pass",
                            extra={"fields": {"rollout_id": rid, "status": result.status,
                                              "error": str(result), "attempt": attempts}})
                return  # still tracked: what was read while it ran stays read
            self._give_up(rid, tracked, result, attempts, out,
                          state or self._ended_state.get(rid))
        elif isinstance(result, Consumed):
            self.stats.consumed += 1
            self._not_read_to_end(rid, tracked, CONSUMED, state, out)
        else:
            assert tracked is not None
            self._apply(tracked, *result, out)
            self.stats.captured += 1
            out.rollouts.append(tracked.normaliser.transition("queuing"))
            if tracked.ctx.state in TERMINAL:
                ended = tracked.normaliser.transition()
                ended.metadata["capture"] = _capture(tracked, CAPTURED, complete=True)
                out.rollouts.append(ended)
        self._retry.pop(rid, None)
        self._ended_state.pop(rid, None)
        self._tracked.pop(rid, None)

    def _not_read_to_end(self, rid: str, tracked: _Tracked | None, reason: str,
                         state: str | None, out: Records | None) -> None:
        """A rollout that ended before we could read all of it: what was read is stored and
        counted; its terminal transition is stored when the log gave its state."""
        partial = tracked is not None and tracked.read_any
        self.stats.partial += int(partial)
        if tracked is not None:
            self.stats.decisions_unverified += tracked.decisions
            self.stats.rewards_unverified += tracked.rewards
        if state is not None and state in TERMINAL and out is not None:
            out.rollouts.append(self._inferred_end(rid, tracked, state, reason))
        else:
            self.stats.state_unknown += 1
        log.info("poller: rollout not read to its end", extra={"fields": {
            "rollout_id": rid, "reason": reason, "state": state, "partial": partial,
            "decisions": tracked.decisions if tracked else 0,
            "rewards": tracked.rewards if tracked else 0}})

    def _inferred_end(self, rid: str, tracked: _Tracked | None, state: str,
                      reason: str) -> RolloutTransition:
        """Its terminal transition, state from the terminal log: the end time is not known (we
        saw the entry now), so no duration is claimed."""
        normaliser = tracked.normaliser if tracked is not None else EventNormaliser(
            RolloutContext(rollout_id=rid, run_id=self.run_id), self.source,
            epoch=self.stats.epoch)
        ended = normaliser.transition(state)
        ended.ts = time.time()
        ended.duration_s = None
        ended.metadata["state_from"] = "terminal log"
        ended.metadata["capture"] = _capture(tracked, reason, complete=False)
        return ended

    def _vanish(self, rid: str, tracked: _Tracked) -> None:
        """A rollout deleted before we read its terminal entry: ended, state unknown."""
        self.stats.vanished += 1
        self.stats.ended += 1
        self._not_read_to_end(rid, tracked, VANISHED, None, None)
        self._tracked.pop(rid, None)

    def _give_up(self, rid: str, tracked: _Tracked | None, error: BadAnswer, attempts: int,
                 out: Records, state: str | None) -> None:
        """A rollout the gateway cannot serve us: missed, and named in the quarantine table."""
        partial = tracked is not None and tracked.read_any
        self.stats.unreadable += 1
        self._not_read_to_end(rid, tracked, UNREADABLE, state, out)
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
            self._settle(rid, tracked, result, out, self._ended_state.get(rid))
        self._deliver(out, sink)

    # --- the terminal log -------------------------------------------------------------------

    async def _follow_terminal(self, client: AsyncGetClient, sink: Sink) -> int:
        """Drain the terminal log from the cursor, then settle the rollouts that left the
        running listing without an entry; returns how many entries were consumed."""
        await self._retry_unreadable(client, sink)
        started = time.monotonic()
        consumed = 0
        while True:
            after = self.stats.after
            page = await self._terminal_page(client, after, self.page_limit)
            if await self._moved(client, after, page):
                fresh = await self._resync(client, sink)
                # What the page named lies after our place all the same (entries only move
                # down): the ones pruned since are rollouts that ended, their state given.
                named = {e.rollout_id for e in fresh}
                entries = [e for e in page.items if e.rollout_id not in named] + fresh
                more = False
            else:
                entries = page.items
                self._advance(after, page)
                more = page.next_after < page.total and page.next_after != after
            await self._consume(client, entries, sink)
            consumed += len(entries)
            if not more:
                break
        await self._settle_vanished(client, started, sink)
        self._check_identity = self._cut_off = self._reborn = False
        return consumed

    async def _terminal_page(self, client: AsyncGetClient, after: int, limit: int) -> _Page:
        path = "/api/rollouts/terminal"
        page = await self._get(client, path, {"after": after, "limit": limit})
        try:
            return _Page(total=int(page["total_terminal"]), next_after=int(page["next_after"]),
                         items=[_Entry(str(it["rollout_id"]), str(it.get("state") or ""))
                                for it in page["items"]])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadAnswer(path, 200, "a terminal page of an unknown shape") from None

    async def _moved(self, client: AsyncGetClient, after: int, page: _Page) -> bool:
        """Did the log change under the cursor (pruned, or a new gateway), so that `page`,
        read at `after`, cannot be trusted? Checked after the page was read: an anchor still in
        place now was in place then (entries are only ever removed, never put back)."""
        if page.total < after:
            return True
        if page.skipped_from(after) > 0:
            self._prunes = False  # it keeps deleted entries: positions are stable
        if self._last_entry is None:
            return await self._lost_everything(client)
        if self._prunes is False and not self._check_identity:
            return False
        position, rid = self._last_entry
        probe = await self._terminal_page(client, position, 1)
        if probe.total <= position:
            return True
        if not probe.items:
            self._prunes = False  # a deleted entry kept in its place: this gateway never prunes
            return await self._lost_everything(client)
        if probe.items[0].rollout_id != rid:
            return True
        if self._check_identity and await self._same_rollout(client, rid) is False:
            self._reborn = True
            return True
        return False

    async def _lost_everything(self, client: AsyncGetClient) -> bool:
        """After an outage, when the log holds nothing to compare (empty, or our place is a
        deleted entry): is every rollout we were following gone? Then it lost its memory."""
        return self._cut_off and bool(self._tracked) and not await self._tracked_alive(client)

    def _advance(self, after: int, page: _Page) -> None:
        skipped = page.skipped_from(after)
        if page.items and skipped == 0:  # positions are known only when nothing was skipped
            self._last_entry = (page.next_after - 1, page.items[-1].rollout_id)
        self.stats.skipped += skipped
        self.stats.after = page.next_after

    async def _resync(self, client: AsyncGetClient, sink: Sink) -> list[_Entry]:
        """The log moved: read it whole and return the entries after our place in it (all of
        them after a restart). Sets the cursor to its end."""
        whole = await self._terminal_page(client, 0, FULL_LOG_LIMIT)
        self.stats.resyncs += 1
        keeps_deleted = whole.skipped_from(0) > 0  # a log that never prunes cannot move back
        place = None if keeps_deleted else await self._place(client, whole.items)
        if place is not None:
            if not self._prunes:
                log.info("poller: the gateway prunes deleted rollouts from its terminal log; "
                         "following it by rollout id", extra={"fields": {"url": self.url}})
            self._prunes = True
            alive = {e.rollout_id for e in whole.items[:place]}
            self._known = OrderedDict((r, c) for r, c in self._known.items() if r in alive)
            fresh = whole.items[place:]
        else:
            # A resumed poller alone is no evidence: it has nothing left to compare, and a
            # new epoch would rename the rewards it reads again (stored twice).
            suspect = keeps_deleted or self._cut_off or self._reborn
            if suspect and not await self._tracked_alive(client):
                self._restarted(whole.total, sink)
            self._known.clear()  # nothing we consumed is left in the log
            fresh = whole.items
        if keeps_deleted:
            self._prunes = False
            self.stats.skipped += whole.skipped_from(0)
        self.stats.after = whole.next_after
        self._last_entry = (None if keeps_deleted or not whole.items
                            else (whole.next_after - 1, whole.items[-1].rollout_id))
        return fresh

    async def _place(self, client: AsyncGetClient, entries: list[_Entry]) -> int | None:
        """Index just after the newest entry we consumed before (the same rollout: its
        creation time is checked where we know it), or None when none is left."""
        checks = 0
        for i in range(len(entries) - 1, -1, -1):
            rid = entries[i].rollout_id
            if rid not in self._known:
                continue
            if checks < IDENTITY_CHECKS:
                checks += 1
                if await self._same_rollout(client, rid) is False:
                    self._reborn = True  # a new rollout under an id we consumed: it is new
                    continue
            return i + 1
        return None

    async def _same_rollout(self, client: AsyncGetClient, rid: str) -> bool | None:
        """Is the rollout now under `rid` the one we consumed? None when it cannot tell (we
        never read its creation time, or it is gone)."""
        created = self._known.get(rid)
        if created is None:
            return None
        try:
            detail = await self._get(client, self._rollout_path(rid))
        except (Consumed, BadAnswer):
            return None
        rollout = detail.get("rollout", detail) if isinstance(detail, dict) else {}
        now = RolloutContext.from_rollout(rollout if isinstance(rollout, dict) else {})
        return None if now.created_at is None else now.created_at == created

    async def _tracked_alive(self, client: AsyncGetClient) -> bool:
        """Is any rollout we follow still on the gateway (same id and creation time)? Then it
        kept its memory, whatever its log did."""
        if not self._tracked:
            return False
        listed = await self._list_running(client)
        for rollout in listed or []:
            tracked = self._tracked.get(str(rollout.get("rollout_id")))
            now = RolloutContext.from_rollout(rollout)
            if tracked is not None and not _other_incarnation(tracked.ctx.created_at,
                                                              now.created_at):
                return True
        return False

    async def _consume(self, client: AsyncGetClient, entries: list[_Entry], sink: Sink) -> None:
        """Final reads of newly ended rollouts, a page at a time (one delivery each)."""
        for start in range(0, max(1, len(entries)), self.page_limit):
            chunk = entries[start:start + self.page_limit]
            results = await asyncio.gather(*[self._final_read(client, e.rollout_id)
                                             for e in chunk])
            out = Records()
            for entry, (rid, tracked, result) in zip(chunk, results):
                self.stats.ended += 1
                self._remember(rid, tracked.ctx.created_at if tracked is not None else None)
                self._settle(rid, tracked, result, out, entry.state)
            self._deliver(out, sink)

    def _remember(self, rid: str, created_at: float | None) -> None:
        self._known[rid] = created_at
        self._known.move_to_end(rid)
        while len(self._known) > KNOWN_MAX:
            self._known.popitem(last=False)

    async def _settle_vanished(self, client: AsyncGetClient, started: float,
                               sink: Sink) -> None:
        """Rollouts that left the running listing before this drain of the terminal log began
        and were not in it: ended and deleted, or still there (read them once more)."""
        due = [rid for rid, t in self._tracked.items() if rid not in self._retry
               and t.absent_since is not None and t.absent_since < started]
        if not due:
            return
        out = Records()
        for rid, tracked, result in await asyncio.gather(*[self._final_read(client, rid)
                                                          for rid in due]):
            if isinstance(result, Consumed):
                if tracked is not None:
                    self._vanish(rid, tracked)
            elif isinstance(result, BadAnswer):
                if tracked is not None and tracked.absent_since is not None and \
                        time.monotonic() - tracked.absent_since > VANISH_AFTER_S:
                    self._vanish(rid, tracked)  # it never came back readable
            elif tracked is not None and tracked.ctx.state in TERMINAL:
                self.stats.ended += 1  # ended, alive, yet not in the log we read
                self._remember(rid, tracked.ctx.created_at)
                self._settle(rid, tracked, result, out, None)
            elif tracked is not None:
                tracked.absent_since = None  # still queuing or running
                self._apply(tracked, *result, out)
        self._deliver(out, sink)

    def _restarted(self, total: int, sink: Sink) -> None:
        # Terminal rollouts still being retried were counted as ended already; both kinds are
        # lost in the restart now.
        retrying = [(rid, self._tracked.get(rid)) for rid in self._retry]
        lost = [(rid, t) for rid, t in self._tracked.items() if rid not in self._retry]
        log.warning("poller: gateway restarted (its terminal log moved and nothing of what we "
                    "followed is left)", extra={"fields": {
                        "url": self.url, "cursor": self.stats.after, "total_terminal": total,
                        "lost_rollouts": len(lost), "lost_unreadable": len(retrying)}})
        self.stats.restarts += 1
        self.stats.epoch += 1
        self.stats.after = 0
        self._last_entry = None
        self._prunes = None  # a new gateway, maybe another version
        self.stats.lost_in_restart += len(lost) + len(retrying)
        self.stats.ended += len(lost)
        for rid, t in lost + retrying:
            self._not_read_to_end(rid, t, LOST, None, None)
        self._tracked.clear()
        self._retry.clear()
        self._ended_state.clear()
        self._deliver(Records(), sink)

    # --- the running rollouts ---------------------------------------------------------------

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
        now = time.monotonic()
        out = Records()
        running: list[_Tracked] = []
        named: set[str] = set()
        for rollout in listed:
            rid = str(rollout.get("rollout_id"))
            named.add(rid)
            before = self._tracked.get(rid)
            was_running = before is not None and before.ctx.state == "running"
            tracked = self._track(rollout)
            tracked.absent_since = None
            if tracked is not before:
                out.rollouts.append(tracked.normaliser.transition("queuing"))
            if tracked.ctx.state == "running":
                if not was_running or tracked is not before:
                    out.rollouts.append(tracked.normaliser.transition("running"))
                running.append(tracked)
        for rid, tracked in self._tracked.items():
            if rid not in named and tracked.absent_since is None:
                tracked.absent_since = now  # ended (or deleted): the next drain will tell
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
            elif result is not None and self._tracked.get(tracked.ctx.rollout_id) is tracked:
                tracked.failing = False
                self._apply(tracked, *result, out)
        self._deliver(out, sink)

    def _deliver(self, out: Records, sink: Sink) -> None:
        self.stats.retrying = len(self._retry)
        self.stats.recount()
        stats = asdict(self.stats)
        value: dict[str, Any] = dict(stats)
        value["last_entry"] = list(self._last_entry) if self._last_entry else None
        value["retry"] = dict(self._retry)
        value["known"] = [[rid, created] for rid, created in
                          list(self._known.items())[-KNOWN_IN_CURSOR:]]
        value["prunes"] = self._prunes
        cursor = json.dumps(value, sort_keys=True)
        if not len(out) and cursor == self._delivered:
            return  # an idle tick: no commit (each one costs the writer a transaction)
        self._delivered = cursor
        out.cursor = (self.source, cursor)
        out.stats = stats
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
                    # The gateway may come back as a new one.
                    self._check_identity = self._cut_off = True
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
        self.stats.recount()
        log.info(f"poller: {self.stats.summary()}", extra={"fields": {
            "url": self.url, "seen": self.stats.seen, "captured": self.stats.captured,
            "missed": self.stats.missed, "partial": self.stats.partial,
            "decisions": self.stats.decisions, "rewards": self.stats.rewards}})

    def run(self, sink: Sink, stop: threading.Event,
            get_cursor: Callable[[str], str | None] | None = None) -> None:
        """Blocking: poll until `stop` is set (raises AuthError on a refused key)."""
        if get_cursor is not None:
            self.resume(get_cursor(self.source))
        asyncio.run(self.run_async(sink, stop))


def _other_incarnation(before: float | None, now: float | None) -> bool:
    """Two creation times of one rollout id that say it was created twice."""
    return before is not None and now is not None and before != now


def _capture(tracked: _Tracked | None, reason: str, *, complete: bool) -> dict[str, Any]:
    """What a rollout's record says of its capture: read to its end or not, and what was read."""
    return {"complete": complete, "reason": reason,
            "decisions": tracked.decisions if tracked is not None else 0,
            "rewards": tracked.rewards if tracked is not None else 0}


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
