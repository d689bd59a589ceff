"""Session fixture (a pytest plugin of the root conftest): the smoke preset reproduced once per session in a
sandbox git + DVC repository (`dvc repro`, every stage, two benchmarks), shared by the DVC, experiment and
MLflow-UI tests, which leave it as they found it (built once per xdist worker that runs one of them)."""

from __future__ import annotations

import pytest
from pipeline_smoke import ROOT, SMOKE

from pdmd_pipeline.sandbox import make_sandbox, repro


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    root = make_sandbox(SMOKE, tmp_path_factory.mktemp("smoke"), source=ROOT)
    return root, repro(root, timeout=1200)
