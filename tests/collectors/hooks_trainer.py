"""A trainer process for the run-end tests: loads the hooks file as Agent Lightning's trainer does,
trains one step of `rollouts` rollouts through the real AglRolloutManager against the gateway
at URL (key from $AGL_KEY, never on the command line) and exits normally, without calling the
hooks' close(): the interpreter's exit (atexit) must record the run's end."""

from __future__ import annotations

import os
import sys

from agentlightning.hooks import load_hooks
from agentlightning.verl.agl_rollout_manager import AglRolloutManager

from tractatus_watch.governance import hooks_path


def main(url: str, rollouts: int) -> int:
    hooks = load_hooks(str(hooks_path()))
    hooks.on_startup()
    manager = AglRolloutManager(agl_base_url=url, agl_key=os.environ["AGL_KEY"], model="qwen",
                                step=1, train_rollout_n=rollouts, poll_interval_seconds=0.05,
                                rollout_timeout_seconds=60, hooks=hooks)
    done = manager.enqueue_and_wait_until_completed({"prompt": ["p0"]}, is_train=True)
    print(f"completed {len(done)} errors {hooks.counts['errors']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
