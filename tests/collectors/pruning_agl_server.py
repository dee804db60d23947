"""`agl-server` (Agent Lightning 1.0.2) with the open upstream change applied: deleting a rollout
also removes its entry from the terminal log. Upstream adds, at the end of `delete_rollout`,

    _terminal_order[:] = [rid for rid in _terminal_order if rid != rollout_id]

(in place, same list). 1.0.2's `delete_rollout` pops the rollout and then its events, and nothing
else pops the events dict, so an events dict whose `pop` then prunes the log does exactly that,
in the same request, with no await in between. Run as a script it takes `agl-server`'s arguments
(the events dict is replaced before the routes import the store's names); importing it changes
nothing."""

from __future__ import annotations

import sys
from typing import Any


class PruningEvents(dict[str, Any]):
    """Agent Lightning's events container, pruning `terminal_order` when a rollout is deleted."""

    def __init__(self, terminal_order: list[str]) -> None:
        super().__init__()
        self.terminal_order = terminal_order

    def pop(self, key: str, *default: Any) -> Any:
        out = super().pop(key, *default)
        self.terminal_order[:] = [rid for rid in self.terminal_order if rid != key]
        return out


def main() -> None:
    from agentlightning.server import store

    store._events = PruningEvents(store._terminal_order)
    from agentlightning.server.__main__ import main as agl_server

    sys.argv[0] = "agl-server"
    agl_server()


if __name__ == "__main__":
    main()
