"""The refresh loop: two fetch lanes between the store and the views.

Fetch lane: one thread worker fetches the common state (freshness, alerts) and the current
view's data through its own cursor, then posts `Fetched` to the app; the app renders it on the
main thread and hands it back with `landed()`, and only then is the timer armed for the next
refresh, so fetches never overlap and nothing blocks the UI. When neither the view's parameters
nor the store's version changed since the view last showed them, the worker skips the view's
query and hands back UNCHANGED ("nothing changed").
In `live`, the writer's commits wake the loop (`wake`): new data is fetched as soon as it is
committed, but fetches that find new data start at least `interval` apart; without commits,
the timer refreshes every `interval` after the last refresh landed, as before.
Slow lane: work that scans raw tables (build_report, latency percentiles) runs in a second,
throttled worker that posts `SlowFetched`, so it never delays the charts.

The app asks the loop to refresh, pause, change the interval or start over for a new scope; it
never touches the tokens, timers or lanes itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Final

from textual.app import App
from textual.timer import Timer

from ..storage.store import Store
from . import data as D
from .messages import Committed, Fetched, SlowFetched
from .scope import Scope
from .views.base import Fetch, View

# While data flows, slow-lane work reruns at most every SLOW_FACTOR times its own duration, so
# a 2 s report over 10M rows takes at most a fifth of a core and a 20 ms one follows every poll.
SLOW_FACTOR: Final = 5.0

# What to fetch now: the view shown and the scope (None while starting, mounting the view or
# shutting down: the view refreshes itself once it is mounted).
Request = Callable[[], tuple[View, Scope] | None]


class _Unchanged:
    """The view's parameters and the data are as last fetched: nothing to render."""


UNCHANGED: Final = _Unchanged()


class RefreshLoop:
    def __init__(self, host: App[Any], store: Store, request: Request, interval: float) -> None:
        self._host = host            # runs the workers and timers, receives the messages
        self._store = store
        self._request = request
        self.interval = interval
        self.paused = False
        self.last_refresh_s = 0.0   # worker time of the last refresh (bench)
        self.token = 0              # one per fetch started
        self._started_at = 0.0      # when the last fetch started (monotonic)
        self._data_at = -interval   # when the last fetch that found new data started
        self._woken = False         # data was committed while a fetch was in flight
        self._wake_posted = threading.Event()  # a Committed message is on its way
        self._due = 0.0             # when the armed timer fires (monotonic)
        self._scope_token = 0       # results of fetches up to this one were for another scope
        self.busy = False           # a fetch is in flight (or its result not yet shown)
        self._again = False         # refresh as soon as the fetch in flight has been shown
        self._timer: Timer | None = None
        self._version: int | None = None  # the store version of the last result shown
        self._latest: str | None = None   # the latest run, as last looked up
        self._asked: Scope | None = None  # the scope of the fetch in flight
        self._shown: dict[str, tuple[Hashable, int, str | None]] = {}
        self.slow_busy = False
        self._slow_shown: dict[str, Hashable] = {}
        self._slow_started: dict[str, tuple[Hashable, float, float]] = {}

    @property
    def idle(self) -> bool:
        """No fetch in flight or asked for, in either lane."""
        return not (self.busy or self._again or self.slow_busy)

    @property
    def armed(self) -> bool:
        """A timer is waiting to start the next refresh."""
        return self._timer is not None

    # --- what the app asks ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the current view now (or right after the fetch in flight: never two)."""
        if self.busy:
            self._again = True
            return
        self._disarm()
        request = self._request()
        if request is None:
            return
        view, scope = request
        self.busy = True
        self._started_at = time.monotonic()
        self.token += 1
        self._asked = scope
        key, fn = view.fetch()
        view_id = view.id or ""
        self._fetch(self.token, view_id, key, fn, scope, self._version, self._latest,
                    self._shown.get(view_id))

    def wake(self) -> None:
        """New data was committed (main thread): fetch it now, or while data flows an
        interval after the last fetch that found new data started (so at most one such fetch
        per interval), instead of a whole interval after the last fetch landed."""
        if self.paused:
            return
        if self.busy:
            self._woken = True  # that fetch may have missed it: again when it has landed
            return
        if self._timer is not None:
            self._arm(self._data_at + self.interval - time.monotonic())

    def follow(self, writer: Any) -> None:
        """Wake on the commits of this writer (live: the dashboard's own process writes).
        Its listener runs on the writer thread and only posts a message (never waits); one
        message at a time is in flight."""
        def committed(_stats: object) -> None:
            if not self._wake_posted.is_set():
                self._wake_posted.set()
                self._host.post_message(Committed())

        writer.listen(committed)

    def committed(self) -> None:
        """The Committed message arrived (main thread)."""
        self._wake_posted.clear()
        self.wake()

    def pause(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self._disarm()
        else:
            self.refresh()

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds
        if self._timer is not None:  # re-arm with the new interval
            self._disarm()
            self._arm()

    def new_scope(self) -> None:
        """Another run or baseline is shown: results in flight are for the old one, and
        nothing shown so far can be kept."""
        self._scope_token = self.token
        self._latest = None
        self._shown.clear()
        self._slow_shown.clear()

    def forget_shown(self) -> None:
        """Fetch everything again at the next refresh (the benchmark times full refreshes)."""
        self._shown.clear()

    # --- the fetch lane --------------------------------------------------------------------------

    def _fetch(self, token: int, view_id: str, key: Hashable, fn: Fetch, scope: Scope,
               known_version: int | None, known_run: str | None,
               shown: tuple[Hashable, int, str | None] | None) -> None:
        self._host.run_worker(
            lambda: self._fetch_in_thread(token, view_id, key, fn, scope, known_version,
                                          known_run, shown),
            thread=True, group="refresh", exit_on_error=False)

    def _fetch_in_thread(self, token: int, view_id: str, key: Hashable, fn: Fetch,
                         scope: Scope, known_version: int | None, known_run: str | None,
                         shown: tuple[Hashable, int, str | None] | None) -> None:
        started = time.perf_counter()
        common, data, error = None, None, None
        try:
            con = self._store.cursor()
            try:
                common = D.fetch_common(con, scope.run_id, follow_latest=scope.follow_latest,
                                        known_version=known_version, known_run=known_run,
                                        lake=self._store.is_lake)
                if common.run_id is not None:
                    if shown == (key, common.version, common.run_id):
                        data = UNCHANGED
                    else:
                        data = fn(con, common.run_id)
            finally:
                con.close()
        except Exception as exc:  # shown in the status line; the next refresh retries
            error = exc
        version = common.version if common else -1
        self._host.post_message(Fetched(token, view_id,
                                        (key, version, common.run_id if common else None),
                                        common, data, error, time.perf_counter() - started))

    def arrived(self, msg: Fetched) -> bool:
        """A fetch came back (main thread): the lane is free. True when it is for the scope
        shown now (the app shows it); an error or a result for an older scope is not."""
        self.busy = False
        self.last_refresh_s = msg.seconds
        scope, self._asked = self._asked, None
        if msg.error is not None:
            return False
        if msg.token <= self._scope_token:
            self._again = True  # fetched for a run that is no longer shown
            return False
        assert msg.common is not None
        if msg.common.version != self._version:
            self._data_at = self._started_at  # timer polls that found nothing do not count
        self._version = msg.common.version
        if scope is not None and scope.follow_latest:
            self._latest = msg.common.run_id
        return True

    def shown(self, msg: Fetched) -> None:
        """The view now shows this result: the same key and version need no fetch."""
        self._shown[msg.view_id] = msg.key

    def landed(self) -> None:
        """The result has been shown: refresh again now if asked meanwhile, else arm the
        timer (not while paused)."""
        woken, self._woken = self._woken, False
        if self._again:
            self._again = False
            self.refresh()
        elif not self.paused:
            self._arm()
            if woken:
                self._arm(self._data_at + self.interval - time.monotonic())

    def _arm(self, delay: float | None = None) -> None:
        """Refresh after `delay` (default: the interval); sooner than a timer armed already,
        never later."""
        # Not 0: a Textual timer of interval 0 divides by it and never fires.
        delay = self.interval if delay is None else max(0.001, delay)
        due = time.monotonic() + delay
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.stop()
        self._due = due
        self._timer = self._host.set_timer(delay, self.refresh)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    # --- the slow lane ---------------------------------------------------------------------------

    def slow(self, view: View, run_id: str, version: int) -> None:
        """Start the view's slow work for this run and version, unless it is running, shown
        already, or (same question, newer data) was computed too recently."""
        request = view.slow(run_id)
        if request is None or self.slow_busy:
            return
        key, fn = request
        vid = view.id or ""
        full_key = (key, version)
        if self._slow_shown.get(vid) == full_key:
            return
        started = self._slow_started.get(vid)
        if started is not None and started[0] == key:
            # Same question, newer data: recompute, but not continuously while data flows.
            _, at, seconds = started
            if time.monotonic() - at < max(self.interval, SLOW_FACTOR * seconds):
                return
        self.slow_busy = True
        self._slow_started[vid] = (key, time.monotonic(), started[2] if started else 0.0)
        token = self.token
        self._host.run_worker(lambda: self._slow_in_thread(token, vid, full_key, fn, run_id),
                              thread=True, group="slow", exit_on_error=False)

    def _slow_in_thread(self, token: int, view_id: str, key: Hashable, fn: Fetch,
                        run_id: str) -> None:
        started = time.perf_counter()
        data, error = None, None
        try:
            con = self._store.cursor()
            try:
                data = fn(con, run_id)
            finally:
                con.close()
        except Exception as exc:
            error = exc
        self._host.post_message(SlowFetched(token, view_id, key, data, error,
                                            time.perf_counter() - started))

    def slow_arrived(self, msg: SlowFetched) -> bool:
        """Slow work came back (main thread): the lane is free. True when it is for the scope
        shown now (the app shows it, and it counts as shown)."""
        self.slow_busy = False
        key, at, _ = self._slow_started.get(msg.view_id, (None, 0.0, 0.0))
        self._slow_started[msg.view_id] = (key, at, msg.seconds)
        if msg.error is not None or msg.token <= self._scope_token:
            return False
        self._slow_shown[msg.view_id] = msg.key
        return True
