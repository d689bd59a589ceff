#!/usr/bin/env bash
# Idempotent project set-up for any user (no root): `.venv` with the three packages editable and every Python
# dependency pinned by requirements/lock.txt. Takes seconds when nothing changed (a stamp of the inputs).
# System packages are not installed here: only the test suite and `pdmd cluster start` need some
# (scripts/install_system_packages.sh, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp_inputs="requirements/lock.txt pyproject.toml packages/pdmd_core/pyproject.toml packages/pdmd_eval/pyproject.toml packages/pdmd_pipeline/pyproject.toml"
stamp=$(cat $stamp_inputs | sha256sum | cut -c1-16)
if [ -f .venv/.pdmd-setup-stamp ] && [ "$(cat .venv/.pdmd-setup-stamp)" = "$stamp" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ] && ! "$PY" -m venv .venv; then
  echo "setup: '$PY -m venv' failed: Python 3.11+ with the venv module is needed (Debian: python3-venv);" >&2
  echo "       set PYTHON=/path/to/python3.11 to use another interpreter" >&2
  exit 1
fi
echo "installing the Python environment into .venv (first time: several minutes)"
log=$(mktemp)
if ! .venv/bin/python -m pip install --upgrade-strategy only-if-needed -c requirements/lock.txt \
    -e packages/pdmd_core -e packages/pdmd_eval -e packages/pdmd_pipeline -e '.[dev]' >"$log" 2>&1; then
  grep -v "is ignored: it is neither" "$log" | tail -n 40 >&2
  echo "setup: pip install failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/python -m pip check
echo "$stamp" > .venv/.pdmd-setup-stamp
