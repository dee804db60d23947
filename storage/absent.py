"""Optional modules DuckDB looks for on every query, recorded once as absent.

DuckDB's Python client imports pandas on each query that binds parameters or returns rows (to
convert pandas values): without pandas installed, each attempt is a failed import that searches
the whole sys.path, a dozen per dashboard refresh (~7 ms of a 50 ms budget at 10M checks). A
finder at the front of `sys.meta_path` answers "not found" at once for a module known to be
absent. Putting None into sys.modules instead would not do: polars reads a name in sys.modules
as "installed"."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

PROBED: tuple[str, ...] = ("pandas",)


class AbsentFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def record_absent(names: Sequence[str] = PROBED) -> None:
    """Install the finder for those of `names` that are not installed (once per process)."""
    if any(isinstance(f, AbsentFinder) for f in sys.meta_path):
        return
    missing = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is None]
    if missing:
        sys.meta_path.insert(0, AbsentFinder(missing))
