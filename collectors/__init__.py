"""Collectors: Agent Lightning taps, spool, Tractatus audit logs."""

from __future__ import annotations

from pathlib import Path


def hooks_path() -> Path:
    """The RolloutHooks file for the trainer's `agentlightning.hooks` setting (no import of
    Agent Lightning needed to print it)."""
    return Path(__file__).resolve().with_name("agl_hooks.py")
