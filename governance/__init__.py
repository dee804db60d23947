"""The Governor SDK that governed training jobs install: the Governor, the governance services
and their rules, the background sender, the spool writer and the Agent Lightning hooks file.
It stands on `records/` and never imports the dashboard's dependencies (see pyproject's
import contracts)."""

from __future__ import annotations

from pathlib import Path


def hooks_path() -> Path:
    """The RolloutHooks file for the trainer's `agentlightning.hooks` setting (no import of
    Agent Lightning needed to print it)."""
    return Path(__file__).resolve().with_name("agl_hooks.py")
