#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs the project with the dashboard and the test tools
# (`.[dashboard,test]`; the base install alone is the light SDK of training environments).
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed since the last
# install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP="$VENV/.installed"

is_py312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  for cand in python3.13 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && is_py312 "$cand"; then command -v "$cand"; return 0; fi
  done
  # pyenv installs versions that its shims hide unless selected; look at them directly.
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  for cand in "$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3 \
              /usr/bin/python3.13 /usr/bin/python3.12 /usr/local/bin/python3.13 /usr/local/bin/python3.12; do
    if [ -x "$cand" ] && is_py312 "$cand"; then echo "$cand"; return 0; fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! is_py312 "$VENV/bin/python"; then
  PY="$(find_python)" || { echo "error: tractatus-watch needs Python >= 3.12 (agentlightning 1.0.x); install python3.12 or python3.13" >&2; exit 1; }
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dashboard,test]"
  touch "$STAMP"
fi
