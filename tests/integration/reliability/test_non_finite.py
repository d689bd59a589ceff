"""Non-finite guard with NaN/Inf produced for real (a corrupt conditioning batch; an exploding learning rate):
policy stop names role, phase and step and keeps the last good checkpoint, from which the run resumes exactly;
policy skip drops, counts (metric + checkpoint) and still stops past max_skipped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from pdmd_core.callbacks import OnIteration
from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_core.models.registry import build_model
from pdmd_core.trainer import NonFiniteError, Trainer
from pdmd_pipeline.reliability.faults import CorruptingPromptSource, rollout_index
from pdmd_pipeline.reliability.scenarios import FAULTY_KIND, SMALL_MODEL, all_finite, generator_state, run_config


def _faulty(corrupt: list[tuple[int, str]], value: str = "nan") -> dict[str, Any]:
    return {**SMALL_MODEL, "kind": FAULTY_KIND, "value": value,
            "corrupt_rollouts": [rollout_index(s, r, 2) for s, r in corrupt]}


def _trainer(data: dict[str, Any], run_dir: Path, log: list[dict[str, float]] | None = None, **kw: Any) -> Trainer:
    torch.set_num_threads(1)
    cfg = config_from_dict(data)
    assert cfg.model is not None
    callbacks = [] if log is None else [OnIteration(lambda step, phase, m: log.append({"step": step, "phase": phase,
                                                                                     **m}))]
    return Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), run_dir, callbacks=callbacks, progress=False,
                   **kw)


def test_rollout_index_matches_the_trainers_prompt_sampling(tmp_path: Path) -> None:
    assert [rollout_index(1, "fake", 2, i) for i in (0, 1)] + [rollout_index(1, "generator", 2)] == [0, 1, 2]
    assert rollout_index(3, "generator", 5) == 2 * 6 + 5
    with pytest.raises(ValueError, match="role='critic'"):
        rollout_index(1, "critic", 2)
    tr = _trainer(run_config(model=_faulty([(2, "generator")]), iterations=[2, 1], non_finite={"policy": "skip"}),
                  tmp_path)
    tr.fit()
    # 3 generator steps × (2 critic + 1 generator) rollouts; the corrupted one is step 2's generator rollout
    source = tr.bundle.prompt_source
    assert isinstance(source, CorruptingPromptSource) and source.calls == 9 and source.corrupted == [5]


@pytest.mark.parametrize(("step", "role", "value", "phase"), [(6, "generator", "inf", 1), (2, "fake", "nan", 0)])
def test_policy_stop_names_role_phase_step_and_resumes_exactly(tmp_path: Path, step: int, role: str, value: str,
                                                               phase: int) -> None:
    clean = _trainer(run_config(), tmp_path / "clean")
    clean.fit()
    faulty = _trainer(run_config(model=_faulty([(step, role)], value)), tmp_path / "run")
    with pytest.raises(NonFiniteError) as err:
        faulty.fit()
    assert (err.value.role, err.value.phase, err.value.step, err.value.quantity) == (role, phase, step, "loss")
    assert f"role '{role}' in phase {phase} at generator step {step}" in str(err.value)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and last.name == f"ckpt_{step - 1:08d}.pt"
    assert all_finite(load_checkpoint(last))
    _trainer(run_config(), tmp_path / "run").fit()  # the data is fixed: resume from the kept checkpoint
    for a, b in zip(generator_state(tmp_path / "run"), generator_state(tmp_path / "clean"), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_is_caught_before_a_non_finite_checkpoint(tmp_path: Path) -> None:
    tr = _trainer(run_config(optim={"lr_generator": 1e30, "grad_clip": None}), tmp_path)
    with pytest.raises(NonFiniteError) as err:
        tr.fit()
    assert (err.value.role, err.value.phase, err.value.step) == ("fake", 0, 2)
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))  # type: ignore[arg-type]
    assert state["global_step"] == 1 and all_finite(state)
    assert max(float(v.abs().max()) for sd in state["generator"] for v in sd.values()) > 1e20  # exploded, finite


def test_policy_skip_drops_counts_and_checkpoints_the_count(tmp_path: Path) -> None:
    log: list[dict[str, float]] = []
    guard = {"policy": "skip", "max_skipped": 2}
    tr = _trainer(run_config(model=_faulty([(2, "fake"), (5, "generator")]), non_finite=guard), tmp_path, log)
    tr.fit()
    assert [int(m["non_finite_skipped"]) for m in log] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert math.isnan(log[4]["generator_loss"]) and math.isnan(log[4]["generator_grad_norm"])
    assert all(math.isfinite(m["generator_loss"]) for i, m in enumerate(log) if i != 4)
    assert math.isfinite(log[1]["fake_loss"])  # 1 of its 2 critic updates kept
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))  # type: ignore[arg-type]
    assert state["non_finite_skipped"] == 2 and all_finite(state)
    # the count survives a resume: cut the same run in step 6 (before its checkpoint), resume from step 5's, and
    # one more corrupt batch (the first rollout of the resumed process, in the replayed step 6) is over the budget
    cut = _trainer(run_config(model=_faulty([(2, "fake"), (5, "generator")]), non_finite=guard), tmp_path / "cut")

    def stop_after_6(step: int, phase: int, metrics: dict[str, float]) -> None:
        if step == 6:
            raise KeyboardInterrupt

    cut.callbacks.append(OnIteration(stop_after_6))
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    more = _trainer(run_config(model=_faulty([(1, "fake")]), non_finite=guard), tmp_path / "cut")
    with pytest.raises(NonFiniteError) as err:
        more.fit()
    assert (err.value.role, err.value.step, err.value.skipped) == ("fake", 6, 2)
    assert "after skipping 2 non-finite updates (max_skipped=2)" in str(err.value)


def test_policy_skip_stops_past_max(tmp_path: Path) -> None:
    log: list[dict[str, float]] = []
    corrupt = [(2, "fake"), (3, "generator"), (6, "generator")]
    tr = _trainer(run_config(model=_faulty(corrupt), non_finite={"policy": "skip", "max_skipped": 2}), tmp_path, log)
    with pytest.raises(NonFiniteError) as err:
        tr.fit()
    assert (err.value.role, err.value.phase, err.value.step, err.value.skipped) == ("generator", 1, 6, 2)
    assert len(log) == 5


def test_skip_with_grad_sync_hands_nan_gradients_to_every_rank(tmp_path: Path) -> None:
    """Data parallel: a rank with a non-finite loss still joins the gradient reduction, with NaN gradients, so
    every rank sees a non-finite reduced norm and drops the same update (no rank waits in a collective alone)."""
    calls: list[tuple[int, bool]] = []

    def grad_sync(params: list[torch.nn.Parameter]) -> None:
        calls.append((len(params), all(p.grad is not None and bool(p.grad.isnan().all()) for p in params)))

    guard = {"policy": "skip", "max_skipped": 5}
    tr = _trainer(run_config(model=_faulty([(1, "generator")]), non_finite=guard, iterations=[1, 1]), tmp_path,
                  grad_sync=grad_sync)
    tr.fit()
    # per step: 2 critic syncs then 1 generator sync; step 1's generator sync carries NaN gradients only
    assert [nan for _, nan in calls] == [False, False, True, False, False, False]
    assert tr.guard.skipped == 1


def test_skip_policy_is_off_by_default_and_validated() -> None:
    cfg = config_from_dict({})
    assert cfg.non_finite.policy == "stop" and cfg.non_finite.max_skipped == 10
    with pytest.raises(ValueError, match="non_finite.max_skipped = -1"):
        config_from_dict({"non_finite": {"policy": "skip", "max_skipped": -1}})


def test_pdmd_train_reports_the_stop_and_exits_3(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pdmd_core.cli import app
    from pdmd_pipeline.reliability.scenarios import write_config

    cfg = write_config(tmp_path / "run.yaml", run_config(model=_faulty([(3, "generator")], "inf")))
    result = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 3, result.output
    assert "stopped: non-finite loss (nan) for role 'generator' in phase 0 at generator step 3" in result.output
    assert "Traceback" not in result.output
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and last.name == "ckpt_00000002.pt"
