"""Governance curves beside the training curves: per-round scalars (monitor/round_scalars.py)
written into TensorBoard event files and W&B runs, keyed by the training step (the round).

A round is written once it is complete: a later round of the same run and arm has data, or the
session closes (then everything left). Each (run, arm) keeps the last round written, so no
round is written twice. The gap of a round is written with the later of its two arms.

W&B takes steps in increasing order only (a lower step is dropped), so the W&B bridge logs a
step once every arm of the run has completed it, all of the step's values in one `log`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..records.files import make_dirs
from ..storage.absent import AbsentFinder
from ..storage.transaction import transaction
from .bridges import BridgeContext, PollingBridge
from .round_scalars import GAP_TAG, RunScalars, round_scalars

log = logging.getLogger("tractatus_watch.bridges")

GOVERNED, UNGOVERNED = "governed", "ungoverned"


class RoundTracker:
    """Which rounds of which (run, arm) are complete and not yet written."""

    def __init__(self, together: bool = False) -> None:
        # together: a step is ready only when every arm of the run completed it (W&B).
        self.together = together
        self.written: dict[tuple[str, str], int] = {}  # (run, arm) -> last round written
        self.gap_written: dict[str, int] = {}           # run -> last gap round written

    def ready(self, s: RunScalars, final: bool) -> dict[int, dict[str, float]]:
        """Step -> values to write now (ascending steps), marking them written."""
        def limit(arm: str) -> int:
            last = s.last_round(arm)
            if last is None:
                return -1
            return last if final else last - 1

        limits = {arm: limit(arm) for arm in s.arms}
        if self.together and limits:
            floor = min(limits.values())
            limits = {arm: floor for arm in limits}
        out: dict[int, dict[str, float]] = {}
        for arm, rounds in s.arms.items():
            done = self.written.get((s.run_id, arm), -1)
            upto = limits[arm]
            for rnd in sorted(r for r in rounds if done < r <= upto):
                out.setdefault(rnd, {}).update(rounds[rnd])
            if upto > done:
                self.written[(s.run_id, arm)] = upto
        if GOVERNED in limits and UNGOVERNED in limits:
            upto = min(limits[GOVERNED], limits[UNGOVERNED])
            done = self.gap_written.get(s.run_id, -1)
            for rnd in range(done + 1, upto + 1):
                if rnd not in s.gap and not final:
                    break  # its rewards are not all in yet (they follow the decisions)
                if rnd in s.gap:
                    out.setdefault(rnd, {})[GAP_TAG] = s.gap[rnd]
                self.gap_written[s.run_id] = rnd
        return dict(sorted(out.items()))


class TrackerBridge(PollingBridge):
    """Reads the session's runs each poll and hands complete rounds to `write`."""

    together = False

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.tracker = RoundTracker(together=self.together)

    def poll(self, con: Any) -> None:
        assert self.ctx is not None
        for run_id in sorted(self.ctx.runs()):
            with transaction(con):  # the run's figures from one snapshot
                scalars = round_scalars(con, run_id)
            steps = self.tracker.ready(scalars, self.final)  # the last poll writes the rest
            if steps:
                self.write(run_id, steps)

    def write(self, run_id: str, steps: dict[int, dict[str, float]]) -> None:
        raise NotImplementedError


# --- TensorBoard ---------------------------------------------------------------------------


def private_files(folder: Path) -> None:
    """The event files tensorboardX created, made 0600 (it creates them with the umask)."""
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


class TensorBoardWriter:
    """One event-file folder per run (DIR/<run_id>/), tensorboardX SummaryWriters."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._writers: dict[str, Any] = {}

    def folder(self, run_id: str) -> Path:
        return self.logdir / safe_name(run_id)

    def write(self, run_id: str, steps: dict[int, dict[str, float]]) -> None:
        from tensorboardX import SummaryWriter

        writer = self._writers.get(run_id)
        if writer is None:
            folder = self.folder(run_id)
            make_dirs(folder)
            # flush_secs: its worker thread writes queued events and flushes them this often
            # (its own flush() does not wait for the queue), so a live round shows within ~1 s.
            writer = self._writers[run_id] = SummaryWriter(logdir=str(folder), flush_secs=1,
                                                           max_queue=1000)
        for step, values in steps.items():
            for tag, value in values.items():
                writer.add_scalar(tag, value, global_step=step)
        writer.flush()
        private_files(self.folder(run_id))

    def close(self) -> None:
        for run_id, writer in self._writers.items():
            writer.close()
            private_files(self.folder(run_id))
        self._writers.clear()


def safe_name(run_id: str) -> str:
    """A run id as one path component (a run id is the user's text)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip(".")
    return name or "_"


class TensorBoardBridge(TrackerBridge):
    name = "tensorboard"

    def __init__(self, logdir: Path, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.out = TensorBoardWriter(logdir)

    def write(self, run_id: str, steps: dict[int, dict[str, float]]) -> None:
        self.out.write(run_id, steps)

    def finish(self) -> None:
        self.out.close()
        log.info("tensorboard: governance scalars written", extra={"fields": {
            "logdir": str(self.out.logdir)}})


def export_tensorboard(con: Any, run_id: str, logdir: Path) -> tuple[Path, int]:
    """Every round of a stored run into DIR/<run_id>/ (the bridge's writer and scalars);
    returns the folder and the number of steps written."""
    tracker = RoundTracker()
    steps = tracker.ready(round_scalars(con, run_id), final=True)
    out = TensorBoardWriter(logdir)
    try:
        if steps:
            out.write(run_id, steps)
    finally:
        out.close()
    return out.folder(run_id), len(steps)


# --- W&B -----------------------------------------------------------------------------------


def import_wandb() -> Any:
    """`import wandb`, with storage/absent.py's finder lifted meanwhile: wandb asks
    `importlib.util.find_spec("pandas")` at import, which that finder answers by raising."""
    if "wandb" in sys.modules:
        return sys.modules["wandb"]
    lifted = [f for f in sys.meta_path if isinstance(f, AbsentFinder)]
    for finder in lifted:
        sys.meta_path.remove(finder)
    try:
        import wandb
    finally:
        for finder in lifted:
            sys.meta_path.insert(0, finder)
    return wandb


def wandb_id(run_id: str) -> str:
    """A run id W&B accepts (no / \\ # ? % :, at most 128 characters)."""
    return re.sub(r"[/\\#?%:\s]+", "-", run_id)[:128] or "run"


class WandbBridge(TrackerBridge):
    """One W&B run per collected run (name and id = the run id), in `project`. Its files go
    under $WANDB_DIR, else beside the store, else the working folder."""

    name = "wandb"
    together = True

    def __init__(self, project: str, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.project = project
        self._runs: dict[str, Any] = {}

    def start(self, ctx: BridgeContext) -> None:
        # Before capture begins: importing W&B takes ~0.6 s of this process's CPU, which
        # would otherwise land in the middle of capture (at the first round written).
        import_wandb()
        super().start(ctx)

    def _dir(self) -> Path:
        if os.environ.get("WANDB_DIR"):
            return Path(os.environ["WANDB_DIR"])
        path = self.ctx.store.path if self.ctx is not None else None
        return path.parent if path is not None else Path.cwd()

    def _run(self, run_id: str) -> Any:
        run = self._runs.get(run_id)
        if run is None:
            wandb = import_wandb()
            folder = self._dir()
            make_dirs(folder)
            # console="off": W&B must not wrap our terminal (the dashboard of `live`); it
            # never sees a key of ours, and we never print one.
            run = self._runs[run_id] = wandb.init(
                project=self.project, name=run_id, id=wandb_id(run_id), dir=str(folder),
                resume="allow", reinit="create_new",
                settings=wandb.Settings(console="off", silent=True))
            log.info("wandb: logging governance scalars", extra={"fields": {
                "project": self.project, "run": run_id, "dir": str(run.dir)}})
        return run

    def write(self, run_id: str, steps: dict[int, dict[str, float]]) -> None:
        run = self._run(run_id)
        for step, values in steps.items():
            run.log(values, step=step)

    def finish(self) -> None:
        for run in self._runs.values():
            run.finish()
        self._runs.clear()


__all__ = ["RoundTracker", "TensorBoardBridge", "TrackerBridge", "WandbBridge",
           "export_tensorboard", "safe_name"]
