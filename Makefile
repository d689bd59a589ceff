# The two commands of the quick start are `make repro` and `make test`; each sets itself up first.
VENV := .venv/bin
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONHASHSEED := 0

.PHONY: setup repro test lint typecheck pytest ui clean-services

setup:
	@bash scripts/setup.sh

repro: setup
	$(VENV)/dvc repro

lint: setup
	$(VENV)/ruff check .

typecheck: setup
	$(VENV)/mypy

pytest: setup
	$(VENV)/pytest

test: setup lint typecheck pytest

clean-services:
	-$(VENV)/pdmd mlflow stop
	-$(VENV)/pdmd cluster stop
