# The two commands of the quick start are `make repro` and `make test`; each sets itself up first.
VENV := .venv/bin
# dvc.yaml's stage commands call `pdmd`: put the project's environment first on PATH for every target.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONHASHSEED := 0

.PHONY: setup system-packages repro test test-fast lint typecheck pytest ui smoke clean-services

# Python only, for any user (no root): the main job needs nothing else.
setup:
	@bash scripts/setup.sh

# What the test suite needs beyond Python: a local SLURM cluster's packages and headless Chromium (root when
# something is missing; a no-op otherwise).
system-packages:
	@bash scripts/install_system_packages.sh slurm browser

repro: setup
	$(VENV)/dvc repro

# ruff, the package dependency contract (pipeline -> core, eval; core and eval independent, see pyproject.toml),
# and dvc.yaml's code deps against the code each stage runs (scripts/stage_code_deps.py)
lint: setup
	$(VENV)/ruff check .
	$(VENV)/lint-imports
	$(VENV)/python scripts/stage_code_deps.py --check

typecheck: setup
	$(VENV)/mypy

# Two xdist workers (the CI box has 2 cores), a test module at a time (`loadfile`), so module-scoped fixtures are
# built once. (xdist_group marks are not used: with pytest 9 they never reached xdist's node ids here.)
# Modules are handed out in collection order, longest first (tests/conftest.py), not xdist's default of the
# modules with the most tests first, which queued the one-test end-to-end modules last.
# The 30 slowest tests are printed at the end.
PYTEST_WORKERS ?= 2
PYTEST_ARGS := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

# pytest exits 5 when it collected no tests: for this project that is a broken suite, not a pass.
pytest: setup
	@$(VENV)/pytest $(PYTEST_ARGS) $(LAYERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; exit $$rc

test: setup system-packages lint typecheck pytest

# The inner loop: unit + integration layers only (no SLURM, no services, no system packages), minutes.
test-fast: setup
	@$(MAKE) --no-print-directory pytest LAYERS="tests/unit tests/integration"

clean-services:
	-$(VENV)/pdmd mlflow stop
	-$(VENV)/pdmd cluster stop

# MLflow UI on the project's tracking store (local sqlite store unless tracking_uri / MLFLOW_TRACKING_URI say otherwise)
ui: setup
	$(VENV)/pdmd mlflow ui

# `dvc repro` of the smoke preset in a fresh temporary git + DVC repository (the project's dvc.lock is untouched)
smoke: setup
	$(VENV)/pdmd pipeline sandbox --preset experiments/presets/smoke.yaml
