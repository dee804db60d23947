"""The hooks file stamps each rollout's round, group and is_train from what Agent Lightning's
hooks are given (the count of training enqueue batches, `request.is_train`, runs of equal
inputs), and reads the rollout manager's private `_step` behind one function, which wins while it
exists (a resumed trainer) and is missing in a later release without breaking the stamp.

Driven by Agent Lightning's own AglRolloutManager (validation and training) and
AglAsyncRolloutManager (training, with a group carried over into the next step) against a real
gateway, as the verl trainer drives them: one manager per step, validation at the step it follows.
The oracle is Agent Lightning's own record of each rollout: `CompletedRollout.step` and
`.data_id` (the group of a sample's n rollouts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agentlightning.hooks import load_hooks
from agentlightning.verl.agl_rollout_manager import (
    AglAsyncRolloutManager, AglRolloutManager, CompletedRollout, EnqueuedRollout)
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.governance import hooks_path

from .test_hooks_tap import Agents

N = 2  # rollouts per training sample (actor_rollout_ref.rollout.n)
HOOKS_LOGGER = "tractatus_watch.governance.agl_hooks"


class StepHidden:
    """Hands the manager's calls to our hooks with the manager's `_step` absent meanwhile, as in
    a later Agent Lightning without that private attribute (its own code reads `_step` only
    after the hook returns, so it runs unchanged)."""

    def __init__(self, hooks: Any) -> None:
        self.hooks = hooks
        self.manager: Any = None

    def on_enqueue(self, request: Any) -> Any:
        step = self.manager.__dict__.pop("_step")
        try:
            assert not hasattr(self.manager, "_step")
            return self.hooks.on_enqueue(request)
        finally:
            self.manager._step = step

    def on_succeeded(self, rollout: Any, events: Any, store: Any) -> None:
        self.hooks.on_succeeded(rollout, events, store)

    def on_failed(self, rollout: Any, store: Any) -> None:
        self.hooks.on_failed(rollout, store)


def drive(url: str, key: str, hooks: Any, first: int,
          hide_step: bool = False) -> list[tuple[CompletedRollout, bool]]:
    """A trainer's sequence from step `first - 1`: validation, a sync training step, an async
    one that carries a group over, validation at that step, an async step that finishes it."""
    def manager(cls: type[Any], step: int) -> Any:
        calls = StepHidden(hooks) if hide_step else hooks
        made = cls(agl_base_url=url, agl_key=key, model="qwen", step=step, train_rollout_n=N,
                   poll_interval_seconds=0.05, rollout_timeout_seconds=60, hooks=calls)
        if hide_step:
            calls.manager = made
        return made

    def validate(step: int) -> list[tuple[CompletedRollout, bool]]:
        done = manager(AglRolloutManager, step).enqueue_and_wait_until_completed(
            {"prompt": [f"v{step}-{i}" for i in range(2)]}, is_train=False)
        return [(c, False) for c in done]

    out = validate(first - 1)
    done = manager(AglRolloutManager, first).enqueue_and_wait_until_completed(
        {"prompt": [f"t{first}-{i}" for i in range(2)]}, is_train=True)
    out += [(c, True) for c in done]
    carry: list[EnqueuedRollout] = []
    for step, samples in ((first + 1, 3), (first + 2, 1)):
        done, carry = manager(AglAsyncRolloutManager, step).enqueue_and_wait_until_group_completed(
            {"prompt": [f"t{step}-{i}" for i in range(samples)]}, carry, is_train=True,
            target_finished_group_num=2)
        out += [(c, True) for c in done]
        if step == first + 1:
            assert len({e.data_id for e in carry}) == 1  # a group left for the next step
            out += validate(step)
    assert carry == []
    return out


@pytest.mark.parametrize("private, first", [(True, 1), (False, 1), (True, 7)],
                         ids=["with-step", "without-step", "resumed-with-step"])
def test_round_stamp(private: bool, first: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     caplog: pytest.LogCaptureFixture, agl_server, agl_key, writer, q) -> None:
    spool = tmp_path / "spool"
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(spool))
    monkeypatch.setenv("TRACTATUS_WATCH_RUN_ID", "round-run")
    for name in ("TRACTATUS_WATCH_USER_HOOKS", "TRACTATUS_WATCH_ROUND"):
        monkeypatch.delenv(name, raising=False)
    hooks = load_hooks(str(hooks_path()))  # exactly what the trainer does
    hooks.on_startup()
    agents = Agents(agl_server.url, agl_key)
    agents.thread.start()
    caplog.set_level(logging.WARNING, logger=HOOKS_LOGGER)
    try:
        done = drive(agl_server.url, agl_key, hooks, first, hide_step=not private)
    finally:
        agents.stop.set()
        agents.thread.join(10)
    hooks.close()

    # 2 + 2 validation, 2*N sync, (3 + 1)*N async rollouts, each once.
    assert len(done) == len({c.rollout_id for c, _ in done}) == len(agents.posted) == 16
    stamps = {rid: p["meta"]["tractatus_watch"] for rid, p in agents.posted.items()}
    by_rollout = {c.rollout_id: (c, train) for c, train in done}
    # The round is Agent Lightning's own step of each rollout: carried-over ones keep theirs.
    assert {rid: s["round"] for rid, s in stamps.items()} == {
        rid: c.step for rid, (c, _) in by_rollout.items()}
    assert sorted({c.step for c, _ in done}) == [first - 1, first, first + 1, first + 2]
    assert {rid: s["is_train"] for rid, s in stamps.items()} == {
        rid: train for rid, (_, train) in by_rollout.items()}
    # Our groups are Agent Lightning's: the same partition of the rollouts.
    ours: dict[str, set[str]] = {}
    theirs: dict[str, set[str]] = {}
    for rid, s in stamps.items():
        ours.setdefault(s["group"], set()).add(rid)
        theirs.setdefault(by_rollout[rid][0].data_id, set()).add(rid)
    assert sorted(map(sorted, ours.values())) == sorted(map(sorted, theirs.values()))
    assert len(ours) == 2 + 2 + 2 + 4 and {len(g) for g in ours.values()} == {1, N}

    warnings = [r.getMessage() for r in caplog.records if r.name == HOOKS_LOGGER]
    if private:
        assert warnings == [] and hooks.counts["warnings"] == 0
    else:
        # Once, however many rollouts: it names what is missing and what the round is now.
        assert len(warnings) == 1 and hooks.counts["warnings"] == 1
        assert "'_step'" in warnings[0]
        assert "count of training batches" in warnings[0]
    assert hooks.counts["errors"] == 0

    # What the collector stores: every decision under its rollout's step.
    SpoolReader(spool, settle_s=0).poll_once(writer_sink(writer, "default"))
    writer.flush()
    assert q("SELECT rollout_id, min(round), max(round), count(*) FROM decisions "
             "GROUP BY 1 ORDER BY 1") == sorted(
        (rid, c.step, c.step, agents.decisions) for rid, (c, _) in by_rollout.items())


def test_without_the_step_a_resumed_trainer_is_counted_from_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agl_server, agl_key) -> None:
    """The fallback's documented limit, pinned: the count cannot know a resumed trainer's first
    step, so it numbers the batches of this process from 1 (validation before training 0)."""
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(tmp_path / "spool"))
    for name in ("TRACTATUS_WATCH_USER_HOOKS", "TRACTATUS_WATCH_ROUND"):
        monkeypatch.delenv(name, raising=False)
    hooks = load_hooks(str(hooks_path()))
    agents = Agents(agl_server.url, agl_key)
    agents.thread.start()
    try:
        done = drive(agl_server.url, agl_key, hooks, 7, hide_step=True)
    finally:
        agents.stop.set()
        agents.thread.join(10)
    hooks.close()
    counted = {6: 0, 7: 1, 8: 2, 9: 3}
    assert {rid: p["meta"]["tractatus_watch"]["round"] for rid, p in agents.posted.items()} == {
        c.rollout_id: counted[c.step] for c, _ in done}
