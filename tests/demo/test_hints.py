"""How the demo's trainer waits for the controller (demo/job.py `_Hints`): by the ids of its own
rollouts, and never twice in a row on the same finishes (a read of the log that found some
missing is repeated only after a new finish or the idle poll, not in a tight loop)."""

from __future__ import annotations

import threading
import time

from tractatus_watch.demo.job import _Hints


def no_failure() -> BaseException | None:
    return None


def timed_wait(hints: _Hints, ids: set[str], after: int, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    count = hints.wait_finished(ids, after, timeout, no_failure)
    return count, time.monotonic() - started


def test_another_rollouts_finish_does_not_end_the_wait() -> None:
    hints = _Hints()
    hints.finished("someone-elses")
    count, waited = timed_wait(hints, {"a", "b"}, 0, 0.3)
    assert count == 1 and waited >= 0.25  # the whole timeout: a count would have sufficed
    hints.finished("a")
    hints.finished("b")
    count, waited = timed_wait(hints, {"a", "b"}, 0, 10.0)
    assert count == 3 and waited < 5.0


def test_the_same_finishes_do_not_end_the_next_wait() -> None:
    hints = _Hints()
    hints.finished("a")
    count, _ = timed_wait(hints, {"a"}, 0, 10.0)
    assert count == 1
    # The log did not show "a" yet: the next wait needs a later finish, or times out.
    count, waited = timed_wait(hints, {"a"}, count, 0.3)
    assert count == 1 and waited >= 0.25
    later = threading.Timer(0.05, hints.finished, args=("b",))
    later.start()
    count, waited = timed_wait(hints, {"a"}, 1, 10.0)
    later.join()
    assert count == 2 and waited < 5.0


def test_a_failure_ends_the_wait_at_once() -> None:
    hints = _Hints()
    started = time.monotonic()
    hints.wait_finished({"a"}, 0, 10.0, lambda: RuntimeError("controller failed"))
    assert time.monotonic() - started < 5.0


def test_forgotten_rollouts_are_no_longer_finished() -> None:
    hints = _Hints()
    hints.finished("a")
    hints.forget(["a"])
    count, waited = timed_wait(hints, {"a"}, 0, 0.3)
    assert count == 1 and waited >= 0.25
