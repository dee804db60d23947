#!/usr/bin/env bash
# Everything the tests need that is not a Python package (tmux for the terminal test).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tmux >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 || echo "warning: tmux unavailable; terminal tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
