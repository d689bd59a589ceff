"""Multi-rank faults on the real local SLURM cluster (2-task gloo jobs, FSDP2, tiny Wan2.2; the scenarios of
`pdmd reliability report --services`, pdmd_pipeline.reliability.distributed):

- one rank SIGKILLed half-way through writing its shard of a distributed save: the uncommitted files are ignored,
  a resubmitted job resumes from the last committed step on both ranks and ends bit-identical to an
  uninterrupted run;
- a time limit expiring mid-run (`--signal=USR2@90`; the running job's limit is set with `scontrol update` to
  expire ~1 minute after step 2, so the signal lands mid-run whatever the machine's load): submitit takes it as
  a time-out, all ranks stop after the same iteration with a committed checkpoint, submitit requeues (the job
  restarts after ~30 s here), the job finishes bit-identical to an uninterrupted run and each step's metrics are
  on a real MLflow server exactly once.

The uninterrupted reference run and the tiny model are built once per session (shared folder)."""

from __future__ import annotations

import pytest

from pdmd_pipeline.reliability.distributed import CHECKPOINT_EVERY, ITERATIONS, SAVE_STALLED_AT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_sigkill_of_one_rank_during_a_distributed_save_resumes_from_the_last_committed_step(slurm_cluster,
                                                                                            tmp_path):
    from pdmd_pipeline.reliability.distributed import kill_rank_during_save

    [outcome] = kill_rank_during_save(tmp_path)
    assert outcome.ok, outcome.happened
    committed = SAVE_STALLED_AT - CHECKPOINT_EVERY
    assert outcome.details["committed"][-1] == f"ckpt_{committed:08d}.dcp"
    # the killed save left both ranks' shard files, never committed, never read
    assert set(outcome.details["staging"]) == {f".tmp_ckpt_{SAVE_STALLED_AT:08d}.dcp"}
    [left] = outcome.details["staging"].values()
    assert {"__0_0.distcp", "__1_0.distcp", "trainer.json"} <= set(left) and "COMMITTED" not in left
    assert outcome.details["resumed_from"] == [f"ckpt_{committed:08d}.dcp"]


def test_time_limit_mid_run_requeues_and_finishes_like_an_uninterrupted_run(slurm_cluster, tmp_path):
    from pdmd_pipeline.reliability.distributed import time_limit_requeue

    [outcome] = time_limit_requeue(tmp_path)
    assert outcome.ok, outcome.happened
    assert outcome.details["restarts"] >= 1 and outcome.details["timeouts"] >= 1
    assert 2 <= outcome.details["stopped_at"] < sum(ITERATIONS)  # stopped mid-run
    assert outcome.details["server_steps"] == {step: 1 for step in range(1, sum(ITERATIONS) + 1)}
