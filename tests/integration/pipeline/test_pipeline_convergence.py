"""The convergence stage's building blocks: student snapshots inside one long run equal the students of shorter
runs, the budgets and the run plan, the budget-direction summary and the figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdmd_core.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_core.student import Student
from pdmd_pipeline.jobs import SNAPSHOT_DIR, DistillJob, TrackingTarget, run_distill

ROOT = Path(__file__).resolve().parents[3]


def _job(tmp_path: Path, name: str, iterations: int, snapshots: tuple[int, ...] = (), **over) -> DistillJob:
    config = config_from_dict({
        "method": "sgts", "num_steps": 4, "iterations": iterations, "batch_size": 16, "ttur_ratio": 2, "seed": 5,
        "checkpoint": {"every": 3, "keep_last": 1}, "model": {"kind": "mlp", "dim": 4, "hidden": 32, "depth": 1},
        **over,
    })
    target = TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="pdmd/conv", run_key=f"c/{name}",
                            parent_key=None, spool_root=str(tmp_path / "spool"), run_name=name, enabled=False)
    return DistillJob("toy", "sgts", 5, str(tmp_path / name), config, target, snapshots=snapshots)


def _generator(path: Path) -> list[dict[str, torch.Tensor]]:
    return load_checkpoint(path, "cpu")["generator"]


def _equal(a, b) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def test_snapshot_of_a_long_run_is_the_student_of_a_shorter_run(tmp_path):
    """Same kernels in the same order: the student at iteration 4 and 8 of a 12-iteration run is bit-identical to
    the final student of a 4- and an 8-iteration run (constant learning rate; checkpoints draw no random numbers)."""
    long = _job(tmp_path, "long", 12, snapshots=(4, 8, 12))
    run_distill(long)
    folder = Path(long.run_dir) / SNAPSHOT_DIR
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint_name(s) for s in (4, 8, 12)]
    for steps in (4, 8):
        short = _job(tmp_path, f"short{steps}", steps)
        run_distill(short)
        final = latest_checkpoint(Path(short.run_dir) / "checkpoints")
        assert _equal(_generator(folder / checkpoint_name(steps)), _generator(final))
    assert _equal(_generator(folder / checkpoint_name(12)), _generator(latest_checkpoint(Path(long.run_dir) /
                                                                                         "checkpoints")))
    snapshot = load_checkpoint(folder / checkpoint_name(8), "cpu")
    assert "fake" not in snapshot and "opt_generator" not in snapshot  # the student only
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    a = Student.from_checkpoint(folder / checkpoint_name(8)).sample(z)
    b = Student.from_checkpoint(latest_checkpoint(Path(tmp_path / "short8" / "checkpoints"))).sample(z)
    assert torch.equal(a, b)


def test_convergence_budgets_and_plan_follow_the_phase_counts():
    from pdmd_pipeline.convergence import plan
    from pdmd_pipeline.params import load_params

    params = load_params(ROOT / "params.yaml")
    # 0.25 × 120 = 30 is not divisible by 4 phases: the nearest multiple of lcm(1, 2, 4) = 4 is 32
    assert params.convergence_budgets("digits") == [32, 60, 120, 240, 480]
    runs = plan(params, "digits")
    single = [r for r in runs if r.arm in ("dmd", "dmd_full", "sgts")]
    assert [(r.total, r.budgets) for r in single] == [(480, (32, 60, 120, 240, 480))] * 3
    phased = [r for r in runs if r.arm == "phased_k4"]
    assert [(r.total, r.budgets) for r in phased] == [(b, (b,)) for b in (32, 60, 120, 240, 480)]
    assert sum(r.total for r in runs) == 3 * 480 + 2 * (32 + 60 + 120 + 240 + 480)


def test_convergence_params_are_validated():
    from pdmd_pipeline.params import PipelineParams

    base = {"arms": {"dmd": {"method": "dmd", "num_steps": 1}},
            "benchmarks": {"b": {"config": "x", "teacher": {}, "enforce_bar": False, "arms": ["dmd"]}}}
    with pytest.raises(ValueError, match="include 1"):
        PipelineParams.model_validate({**base, "convergence": {"multiples": [0.5, 2]}})
    with pytest.raises(ValueError, match="convergence.arms lists"):
        PipelineParams.model_validate({**base, "convergence": {"arms": ["nope"]}})
    with pytest.raises(ValueError, match="extra_seeds.arms lists"):
        PipelineParams.model_validate({**base, "extra_seeds": {"seeds": [3], "arms": ["nope"]}})
    with pytest.raises(ValueError, match="not in seeds"):
        PipelineParams.model_validate({**base, "seeds": [0, 1], "extra_seeds": {"seeds": [1], "arms": ["dmd"]}})
    p = PipelineParams.model_validate({**base, "seeds": [0, 1], "extra_seeds": {"seeds": [7], "arms": ["dmd"]}})
    assert p.seeds_for("dmd") == [0, 1, 7]
