"""One module per DVC stage; `pdmd stage <name> <benchmark>` calls `<module>.run` (see dvc.yaml).

data → teacher → distill (arm × seed jobs through the executor) → sample → evaluate → tables → report
(`tables` and `report` live in pdmd_pipeline.report). Every stage reads the params file, writes only its own
outputs (pipeline.layout) and logs to the MLflow runs of the sweep through the spooled tracker.

Each stage module imports only what its stage runs, because dvc.yaml lists, as each stage's code deps, the
source files of the stage module's import closure (`scripts/stage_code_deps.py` prints and checks them): an
edit of a metric reruns `evaluate` and what follows, never the teachers. This package's `__init__` therefore
imports nothing.
"""
