#!/usr/bin/env bash
# Everything the tests need that is not a Python package: tmux for the terminal test,
# PostgreSQL's server binaries for the DuckLake tests (they start their own server on loopback),
# Chromium, which opens the research command's HTML report, and Prometheus (prometheus and
# promtool), which scrapes `collect --metrics` in tests/test_prometheus_live.py (each test
# starts its own server on loopback; the package's service is not used).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tmux >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 || echo "warning: tmux unavailable; terminal tests will be skipped" >&2
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1 || echo "warning: PostgreSQL unavailable; lake tests will fail under CI" >&2
fi
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: Chromium unavailable; the HTML report's browser test will be skipped" >&2
fi
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 || echo "warning: Prometheus unavailable; the Prometheus tests will be skipped" >&2
  # The package may start its own service on :9090; the tests need none of it.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
# The static checks run before the tests, in this order; the first that fails stops the run.
check() {
  local what="$1"; shift
  if ! "$@"; then
    echo "error: $what failed (its output is above); the tests were not run" >&2
    exit 1
  fi
}
check "the import contracts (lint-imports)" .venv/bin/lint-imports
check "ruff (ruff check .)" .venv/bin/ruff check .
check "mypy" .venv/bin/mypy
# Two workers, a test file each at a time: most tests wait on subprocesses, gateways and
# servers, and a file's module fixtures (the demo runs) are then built once.
# TEST_WORKERS=0 runs them in this process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
