"""One sweep-id scheme for both studies: time-ordered and unique for sweeps started in the same millisecond (two
models' distill stages of `dvc repro -j 2`, or `dvc exp run --run-all -j 2`). The study's former scheme
(second + millisecond) gave equal ids to sweeps started in the same millisecond."""

from __future__ import annotations

import time

from pdmd_pipeline.stages import distill as cpu_distill
from pdmd_pipeline.study import distill as study_distill


def test_the_study_and_the_cpu_tier_share_one_sweep_id_scheme():
    assert study_distill.new_sweep_id is cpu_distill.new_sweep_id


def test_two_sweeps_started_in_the_same_millisecond_get_different_ids():
    """The suffix is 16 random bits: two ids started together collide with probability 2^-16 (the old study
    scheme: always, within one millisecond)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    first, second = cpu_distill.new_sweep_id(), cpu_distill.new_sweep_id()
    assert first != second
    assert first[:15] >= stamp and second[:15] >= first[:15]  # YYYYmmdd-HHMMSS prefix: time-ordered
