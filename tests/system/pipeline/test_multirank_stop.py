"""A stop signal that reaches only one rank stops every rank after the same iteration (2 gloo processes): the
ranks agree at each iteration boundary (an all-reduce), write one committed checkpoint together, and all of them
adopt the signal (so the first task requeues on USR2 even when its own copy has not arrived yet). The run then
resumes from that checkpoint and ends bit-identical to an uninterrupted run. When the ranks got different signals
(USR2 on one, TERM on another), the requeue signal USR2 wins on every rank."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from pdmd_pipeline.infra.mlflow_server import free_port

WORLD = 2
RAW: dict[str, Any] = {
    "method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
    "iterations": [3, 3], "seed": 4, "optim": {"ema_decay": 0.9}, "checkpoint": {"every": 100, "keep_last": 3},
    "model": {"kind": "mlp", "dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}}
SIGNAL_AT = {1: 4}  # rank -> step after which its signal arrives (rank 0 never gets one)


def _rank_main(rank: int, ports: list[int], root: str) -> None:
    from pdmd_core.callbacks import Callback
    from pdmd_core.config import config_from_dict
    from pdmd_pipeline.jobs import Preempted, StopFlag
    from pdmd_pipeline.realscale.launch import run_training

    torch.set_num_threads(1)
    out = Path(root)
    cfg = config_from_dict(RAW)
    flag = StopFlag()

    class SignalArrives(Callback):
        def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
            if SIGNAL_AT.get(rank) == step:
                flag.set(signal.SIGUSR2)

    def env(port: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                          LOCAL_RANK=str(rank))

    env(ports[0])
    record: dict[str, Any] = {}
    try:
        run_training(cfg, out / "stopped", stop_requested=flag, callbacks=[SignalArrives()])
        record["stopped"] = False
    except Preempted as err:
        record.update(stopped=True, message=str(err), signum=flag.signum)
    env(ports[1])
    record["resumed"] = run_training(cfg, out / "stopped")["resumed_from"]
    env(ports[2])
    run_training(cfg, out / "whole")
    (out / f"rank{rank}.json").write_text(json.dumps(record))


def test_a_signal_on_one_rank_stops_all_ranks_at_the_same_iteration(tmp_path: Path) -> None:
    from pdmd_core.checkpoint import latest_checkpoint
    from pdmd_core.distributed_checkpoint import read_tensors

    mp.spawn(_rank_main, args=([free_port() for _ in range(3)], str(tmp_path)), nprocs=WORLD, join=True)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for rank, record in enumerate(records):
        assert record["stopped"], record
        assert "checkpoint written at step 4" in record["message"]
        assert record["signum"] == signal.SIGUSR2  # rank 0 adopted rank 1's signal
        assert record["resumed"].endswith("ckpt_00000004.dcp"), (rank, record)
    metrics = [json.loads(line)["step"] for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1, 2, 3, 4, 5, 6]  # rank 0 stopped after step 4 too, nothing replayed
    a = read_tensors(latest_checkpoint(tmp_path / "stopped" / "checkpoints"), "generator.")  # type: ignore[arg-type]
    b = read_tensors(latest_checkpoint(tmp_path / "whole" / "checkpoints"), "generator.")  # type: ignore[arg-type]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stop_precedence_lets_the_requeue_signal_win() -> None:
    from pdmd_pipeline.realscale.launch import STOP_PRECEDENCE, stop_rank

    assert stop_rank(None) == 0 and stop_rank(signal.SIGUSR2) > stop_rank(signal.SIGTERM) > 0
    assert STOP_PRECEDENCE[max(stop_rank(signal.SIGUSR2), stop_rank(signal.SIGTERM)) - 1] == signal.SIGUSR2
    with pytest.raises(ValueError, match="signal 2 is not a stop signal"):
        stop_rank(signal.SIGINT)


@pytest.mark.slow
def test_usr2_on_one_rank_and_term_on_the_other_in_one_step_take_the_requeue_path(tmp_path: Path) -> None:
    """Two gloo processes, real SIGUSR2 to rank 0 and SIGTERM to rank 1 during step 3: both stop after step 3
    with one committed checkpoint and both adopt USR2 (exit 128 + 12: the path where submitit's handler
    requeues), and the next job resumes from that checkpoint."""
    from pdmd_pipeline.reliability.edges import REQUEUE_EXIT, ranks_disagree_on_signal

    [outcome] = ranks_disagree_on_signal(tmp_path, step=3)
    assert outcome.ok, outcome.happened
    assert outcome.details["codes"] == [REQUEUE_EXIT, REQUEUE_EXIT]
    assert outcome.details["adopted"] == [signal.SIGUSR2, signal.SIGUSR2]
    assert outcome.details["committed"] == ["ckpt_00000003.dcp"]
    assert outcome.details["resumed_from"] == ["ckpt_00000003.dcp"]
