"""The one duration grammar of tractatus-watch: Prometheus durations, used by alert rules
(`for`, `keep_firing_for`), `--keep`, `--since` and the dashboard's `:silence` alike.

A duration is one or more `<number><unit>` parts, largest unit first or not (`90s`, `5m`,
`1h30m`, `1.5h`, `250ms`, `7d`, `2w`), or `0`. Units: ms, s, m, h, d, w. Spaces between parts
are allowed; nothing else is.
"""

from __future__ import annotations

import math
import re
from typing import Final

UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                       "w": 604800.0}
_PART: Final = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)"
_WHOLE: Final = re.compile(rf"^(?:{_PART}\s*)+$")
_PARTS: Final = re.compile(_PART)
EXAMPLES: Final = "30s, 5m, 1h30m or 7d"


class DurationError(ValueError):
    """Text that is not a duration; the message says what one looks like."""


def parse_seconds(text: str) -> float:
    """Seconds in a duration (see the module docstring); `0` is zero."""
    s = text.strip().lower()
    if s == "0":
        return 0.0
    if not _WHOLE.match(s):
        raise DurationError(f"expected a duration like {EXAMPLES}, got {text!r}")
    seconds = sum(float(v) * UNIT_SECONDS[u] for v, u in _PARTS.findall(s))
    if not math.isfinite(seconds):
        raise DurationError(f"duration {text!r} is too long")
    return seconds


def parse_positive_seconds(text: str) -> float:
    """A duration that must be longer than zero (silences, intervals)."""
    seconds = parse_seconds(text)
    if seconds <= 0:
        raise DurationError(f"a duration must be positive, got {text!r}")
    return seconds


__all__ = ["DurationError", "EXAMPLES", "UNIT_SECONDS", "parse_positive_seconds",
           "parse_seconds"]
