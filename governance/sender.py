"""Background sender of governance events to Agent Lightning.

The Agent Lightning 1.0.2 event API (agentlightning/server/routes/events.py): an agent posts
`POST {AGL_EVENT_URL}` where `AGL_EVENT_URL` is
`{base}/api/rollouts/{rollout_id}/attempt/{attempt_id}/events` (the controllers set it, attempt
"0"), with the JSON body `{"event_type": str, "data": {...}}` (`data` must be an object) and the
header `Authorization: Bearer <AGL_KEY>` (`x-api-key` also works). The gateway answers 200 with
the stored event; 404 if the rollout does not exist; 401 on a bad key; 422 on a bad body.

What we post:
- one decision: `event_type = "tractatus.decision"`, `data` = the `tractatus.decision/1` payload;
- several decisions of one rollout queued together: `event_type = "tractatus.decisions"`,
  `data = {"schema": "tractatus.decisions/1", "decisions": [payload, ...]}` (the gateway only
  accepts an object as `data`, so the list is wrapped);
- a reward: `event_type = "reward"`, `data = {"value": float, "source": "agent", ...}`, the shape
  of `agentlightning.schemas.RewardData` (the trainer reads the last reward event's `value`),
  plus our reward fields.

The agent's thread only puts items on a bounded queue (`put_nowait`): it never waits for the
network and never sees an exception. When the queue is full the newest (default) or oldest
item is dropped and counted. One background thread drains the queue after letting a batch
gather for `linger_s` (50 ms by default), packs what it found (up to `max_per_event` decisions
per event, per rollout; other events one post each, before the batch's decisions), and posts
with a plain `httpx.Client`, one post at a time, so a rollout's events keep their order.

`flush()` ends the linger at once and waits until every item queued before the call is
handled (sent, given up or dropped), not for what is queued meanwhile: an agent that flushes at
the end of each rollout posts that rollout's decisions as one event and its reward as another,
while the decisions of a rollout another thread runs meanwhile linger for their own flush.
Encoding a batch nobody waits for yields the GIL between decisions, so the agent's thread is
never held up for long; a batch a flush waits for is encoded straight through. 5xx, 408, 429
and connection errors are retried with exponential backoff and full jitter; other answers are
counted as failed. `close(timeout)` (also run at exit) flushes what is queued.
The key lives only in the client's headers: it is never logged, printed, or shown by `repr`.
"""

from __future__ import annotations

import atexit
import json
import queue
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from ..records.events import DECISION_EVENT, DECISIONS_EVENT, REWARD_EVENT, Decision, Reward

DECISIONS_SCHEMA: Final = "tractatus.decisions/1"
EVENT_URL_RE: Final = re.compile(
    r"^(?P<base>https?://.+?)/api/rollouts/(?P<rollout>[^/]+)/attempt/(?P<attempt>[^/]+)/events/?$")
_RETRY_STATUS: Final = frozenset({408, 429})
_STOP: Final = object()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _encode(obj: Any) -> bytes | None:
    try:
        return _dumps(obj)
    except (TypeError, ValueError):
        return None


def _encode_decisions(chunk: list[Decision], pause: bool = True) -> bytes:
    """The event body for a chunk of decisions. Each decision is encoded on its own and, with
    `pause`, the GIL offered to other threads in between: one `json.dumps` of a hundred
    decisions is a single C call that holds the GIL for milliseconds, and a Python loop keeps
    it for up to the switch interval (5 ms) once the agent's thread asks for it; either stalls
    the agent. Without `pause` (a flush waits for this batch) nobody is better served by the
    pauses: each costs a wait for the GIL, with every other thread ahead."""
    if len(chunk) == 1:
        return (b'{"event_type":"' + DECISION_EVENT.encode() + b'","data":'
                + _dumps(chunk[0].to_payload()) + b"}")
    parts = []
    for d in chunk:
        parts.append(_dumps(d.to_payload()))
        if pause:
            time.sleep(0)  # hand the GIL to the agent's thread if it is waiting (it usually is)
    return (b'{"event_type":"' + DECISIONS_EVENT.encode() + b'","data":{"schema":"'
            + DECISIONS_SCHEMA.encode() + b'","decisions":[' + b",".join(parts) + b"]}}")


def parse_event_url(url: str) -> tuple[str, str, str]:
    """(base URL, rollout id, attempt id) of an `AGL_EVENT_URL`."""
    m = EVENT_URL_RE.match(url.strip())
    if m is None:
        raise ValueError(
            "AGL_EVENT_URL: expected {base}/api/rollouts/{id}/attempt/{attempt}/events")
    return m.group("base"), m.group("rollout"), m.group("attempt")


@dataclass(slots=True)
class SenderStats:
    queued: int = 0     # items accepted onto the queue
    sent: int = 0       # items (decisions, rewards, events) the gateway accepted
    posts: int = 0      # successful HTTP requests (one may carry many decisions)
    retries: int = 0    # HTTP attempts repeated after a 5xx/408/429 or a connection error
    dropped: int = 0    # items never attempted: queue full, or still queued at close timeout
    failed: int = 0     # items given up on: retries exhausted or a non-retryable answer


class Sender:
    """Posts decisions, rewards and other events to Agent Lightning off the agent's thread."""

    def __init__(self, event_url: str | None = None, *, key: str | None = None,
                 base_url: str | None = None, attempt_id: str = "0",
                 max_queue: int = 10_000, drop: Literal["newest", "oldest"] = "newest",
                 max_per_event: int = 100, max_retries: int = 5, backoff_base_s: float = 0.05,
                 backoff_max_s: float = 2.0, timeout_s: float = 5.0, exit_timeout_s: float = 5.0,
                 linger_s: float = 0.05, seed: int | None = None) -> None:
        if event_url:
            base, rollout, attempt = parse_event_url(event_url)
            self.base_url = (base_url or base).rstrip("/")
            self.default_rollout = rollout
            self.attempt_id = attempt
        elif base_url:
            self.base_url = base_url.rstrip("/")
            self.default_rollout = ""
            self.attempt_id = attempt_id
        else:
            raise ValueError("Sender needs an event_url (AGL_EVENT_URL) or a base_url")
        if drop not in ("newest", "oldest"):
            raise ValueError("drop must be 'newest' or 'oldest'")
        if max_queue < 1 or max_per_event < 1 or max_retries < 0:
            raise ValueError("max_queue and max_per_event must be >= 1, max_retries >= 0")
        self.drop = drop
        self.max_per_event = max_per_event
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.exit_timeout_s = exit_timeout_s
        self.linger_s = linger_s
        self._closing = threading.Event()   # close() was called: stop lingering
        self._kick = threading.Event()      # flush() was called: send what is queued now
        # Items ever put on the queue, and those taken off it and done with (sent, given up,
        # dropped): a flush waits until the second reaches what the first was when it began.
        self._accepted = 0
        self._handled = 0
        self.stats = SenderStats()
        self._stats_lock = threading.Lock()
        self._progress = threading.Condition(self._stats_lock)  # stats changed: flush looks
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._rng = random.Random(seed)
        self._abandon = threading.Event()   # close timed out: stop retrying, count the rest
        self._closed = False
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # The key goes straight into the client the thread owns; the Sender keeps no copy.
        client = httpx.Client(headers=headers, timeout=timeout_s)
        self._thread = threading.Thread(target=self._run, args=(client,), name="agl-sender",
                                        daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def __repr__(self) -> str:
        s = self.stats
        return (f"Sender(base_url={self.base_url!r}, sent={s.sent}, dropped={s.dropped}, "
                f"failed={s.failed}, retries={s.retries})")

    __str__ = __repr__

    # --- the agent's side: never blocks, never raises ---------------------------------------------

    def url_for(self, rollout_id: str | None) -> str:
        rollout = rollout_id or self.default_rollout
        if not rollout:
            raise ValueError("no rollout id: pass one or use an AGL_EVENT_URL")
        return f"{self.base_url}/api/rollouts/{rollout}/attempt/{self.attempt_id}/events"

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._closed:
            self._count(dropped=1)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            pass
        else:
            with self._stats_lock:
                self.stats.queued += 1
                self._accepted += 1
            return
        if self.drop == "newest":
            self._count(dropped=1)
            return
        try:  # drop the oldest to make room for this one; it no longer counts as queued
            self._queue.get_nowait()
            self._count(dropped=1, queued=-1, handled=1)
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(item)
            self._count(queued=1, accepted=1)
        except queue.Full:
            self._count(dropped=1)

    def emit_decision(self, decision: Decision) -> None:
        self._put(("decision", decision.rollout_id or self.default_rollout, decision))

    def emit_reward(self, reward: Reward) -> None:
        data = {"value": reward.value, "source": "agent", "reward_id": reward.reward_id,
                "agent_id": reward.agent_id, "round": reward.round, "arm": reward.arm,
                "ts": reward.ts, "run_id": reward.run_id}
        self._put(("event", reward.rollout_id or self.default_rollout, REWARD_EVENT, data))

    def emit_event(self, event_type: str, data: dict[str, Any], *,
                   rollout_id: str | None = None) -> None:
        self._put(("event", rollout_id or self.default_rollout, event_type, data))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _count(self, accepted: int = 0, handled: int = 0, **deltas: int) -> None:
        with self._progress:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            self._accepted += accepted
            self._handled += handled
            self._progress.notify_all()

    # --- the sender thread ------------------------------------------------------------------------

    def _run(self, client: httpx.Client) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is not _STOP and self.linger_s > 0 and \
                        self._queue.qsize() < self.max_per_event:
                    # Let a batch gather: fewer, fuller posts mean fewer bursts of work that
                    # compete with the agent's thread for the GIL. A flush (or close) ends it.
                    self._kick.wait(self.linger_s)
                waited_for = self._kick.is_set()  # a flush (or close) waits for this batch
                if not self._closing.is_set():
                    # Before the queue is read: a flush from here on is in this batch or
                    # ends the next linger.
                    self._kick.clear()
                batch = [item]
                while len(batch) < 10 * self.max_per_event:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(i is _STOP for i in batch)
                items = [i for i in batch if i is not _STOP]
                self._send_batch(client, items, pause=not waited_for)
                # Counted per batch: within one, rewards go before decisions.
                self._count(handled=len(items))
                if stop:
                    break
        finally:
            client.close()

    def _send_batch(self, client: httpx.Client, batch: list[tuple[Any, ...]],
                    pause: bool = True) -> None:
        # Decisions are packed per rollout; other events keep their own post. Order within a
        # rollout is kept, which is what the gateway's list position (its event identity) needs.
        decisions: dict[str, list[Decision]] = {}
        for item in batch:
            if item[0] == "decision":
                decisions.setdefault(item[1], []).append(item[2])
            else:
                self._post(client, item[1], 1, _encode({"event_type": item[2], "data": item[3]}))
        for rollout, items in decisions.items():
            for i in range(0, len(items), self.max_per_event):
                chunk = items[i:i + self.max_per_event]
                try:
                    body = _encode_decisions(chunk, pause)
                except (TypeError, ValueError):
                    self._count(failed=len(chunk))
                    continue
                self._post(client, rollout, len(chunk), body)

    def _post(self, client: httpx.Client, rollout: str, n: int, body: bytes | None) -> None:
        if self._abandon.is_set():
            self._count(dropped=n)
            return
        try:
            url = self.url_for(rollout)
        except ValueError:
            body = None
        if body is None:
            self._count(failed=n)
            return
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count(retries=1)
            try:
                response = client.post(url, content=body)
            except httpx.HTTPError:
                retry = True
            else:
                if response.is_success:
                    self._count(sent=n, posts=1)
                    return
                retry = response.status_code >= 500 or response.status_code in _RETRY_STATUS
            if not retry or attempt == self.max_retries:
                break
            delay = self._rng.uniform(
                0, min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))
            if self._abandon.wait(delay):
                break
        self._count(failed=n)

    # --- closing ----------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Send what is queued without waiting for the linger, and wait until everything
        queued before the call was handled (sent, given up or dropped); True if so. What is
        queued meanwhile (another rollout's decisions, by another thread) is not waited for:
        it lingers for its own flush, as one event."""
        deadline = time.monotonic() + timeout
        with self._progress:
            target = self._accepted
        self._kick.set()
        with self._progress:
            while True:
                if self._handled >= target:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(left)  # every change of _handled notifies

    def close(self, timeout: float | None = 5.0) -> SenderStats:
        """Send what is queued, then stop; after `timeout` seconds stop retrying and count what
        is left as dropped. Returns the final stats."""
        if not self._closed:
            self._closed = True
            self._closing.set()
            self._kick.set()
            atexit.unregister(self._at_exit)
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                self._abandon.set()
                self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._abandon.set()
                self._thread.join(max(1.0, self.backoff_max_s + 1.0))
        return self.stats

    def _at_exit(self) -> None:
        self.close(self.exit_timeout_s)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DECISIONS_SCHEMA", "Sender", "SenderStats", "parse_event_url"]
