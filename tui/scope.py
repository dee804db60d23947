"""What the dashboard shows: a run (the latest while following) and its baseline run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """What is shown: a run (the latest while following) and its baseline run."""

    run_id: str | None = None
    baseline_run: str | None = None
    follow_latest: bool = True
