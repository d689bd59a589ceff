#!/usr/bin/env bash
# Idempotent project set-up: system packages, then `.venv` with both packages editable and every Python
# dependency pinned by requirements/lock.txt. Takes seconds when nothing changed (a stamp of the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system_packages.sh
PY=${PYTHON:-python3}
stamp_inputs="requirements/lock.txt pyproject.toml packages/pdmd_core/pyproject.toml packages/pdmd_eval/pyproject.toml packages/pdmd_pipeline/pyproject.toml"
stamp=$(cat $stamp_inputs | sha256sum | cut -c1-16)
if [ -f .venv/.pdmd-setup-stamp ] && [ "$(cat .venv/.pdmd-setup-stamp)" = "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
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
