#!/usr/bin/env bash
# Re-resolve and pin the environment after changing a dependency: writes requirements/lock.txt from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' | sort > requirements/lock.txt
echo "pinned $(wc -l < requirements/lock.txt) packages in requirements/lock.txt"
