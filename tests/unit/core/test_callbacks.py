"""Trainer callbacks: the events and their order, state kept in checkpoints, and the metrics file that a resumed
run leaves with each step exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pdmd_core.callbacks import Callback, MetricsJsonl, OnIteration
from pdmd_core.config import config_from_dict
from pdmd_core.models import build_model
from pdmd_core.trainer import Trainer

MODEL = {"kind": "mlp", "dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}


def _cfg(**over: Any):
    base = {"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
            "iterations": [3, 3], "checkpoint": {"every": 2, "keep_last": 3}, "model": MODEL}
    base.update(over)
    return config_from_dict(base)


def _trainer(run_dir: Path, callbacks: list[Callback], **over: Any) -> Trainer:
    torch.set_num_threads(1)
    cfg = _cfg(**over)
    assert cfg.model is not None
    return Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), run_dir, callbacks=callbacks, progress=False)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_fit_begin(self, trainer):
        self.events.append(("fit_begin",))

    def on_phase_begin(self, trainer, phase):
        self.events.append(("phase_begin", phase))

    def on_iteration_end(self, trainer, step, phase, metrics):
        self.events.append(("iteration", step, phase))

    def on_phase_end(self, trainer, phase):
        self.events.append(("phase_end", phase))

    def on_before_save(self, trainer):
        self.events.append(("before_save", trainer.global_step))

    def on_after_save(self, trainer, path):
        assert path.is_file()  # durable when announced
        self.events.append(("after_save", path.name))

    def on_fit_end(self, trainer):
        self.events.append(("fit_end",))


def test_events_fire_in_loop_order(tmp_path):
    rec = _Recorder()
    _trainer(tmp_path, [rec]).fit()
    assert rec.events == [
        ("fit_begin",), ("phase_begin", 0),
        ("iteration", 1, 0), ("iteration", 2, 0), ("before_save", 2), ("after_save", "ckpt_00000002.pt"),
        ("iteration", 3, 0), ("phase_end", 0), ("before_save", 3), ("after_save", "ckpt_00000003.pt"),
        ("phase_begin", 1),
        ("iteration", 4, 1), ("iteration", 5, 1), ("before_save", 5), ("after_save", "ckpt_00000005.pt"),
        ("iteration", 6, 1), ("phase_end", 1), ("before_save", 6), ("after_save", "ckpt_00000006.pt"),
        ("fit_end",)]


class _Counter(Callback):
    """Counts iterations; its count travels in checkpoints."""

    def __init__(self) -> None:
        self.count = 0

    def on_iteration_end(self, trainer, step, phase, metrics):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class _Stop(Exception):
    pass


def _stop_at(step: int) -> OnIteration:
    def fn(s: int, phase: int, metrics: dict[str, float]) -> None:
        if s == step:
            raise _Stop

    return OnIteration(fn)


def test_callback_state_is_checkpointed_and_restored_on_resume(tmp_path):
    first = _Counter()
    with pytest.raises(_Stop):
        _trainer(tmp_path, [first, _stop_at(5)]).fit()  # last checkpoint: step 3 (phase end)
    assert first.count == 5
    resumed = _Counter()
    tr = _trainer(tmp_path, [resumed])
    assert tr.resume() is not None and tr.global_step == 3
    assert resumed.count == 3  # the count as of the checkpoint, not the 5 the killed run reached
    tr.fit()
    assert resumed.count == 6
    # a run resumed in the middle of a phase does not announce that phase's beginning again
    rec = _Recorder()
    with pytest.raises(_Stop):
        _trainer(tmp_path / "b", [_stop_at(6)]).fit()  # last checkpoint: step 5, inside phase 1
    _trainer(tmp_path / "b", [rec]).fit()
    assert rec.events == [("fit_begin",), ("iteration", 6, 1), ("phase_end", 1), ("before_save", 6),
                          ("after_save", "ckpt_00000006.pt"), ("fit_end",)]


def test_metrics_file_after_a_crash_and_resume_repeats_recomputed_steps_with_identical_values(tmp_path):
    whole = tmp_path / "whole" / "metrics.jsonl"
    _trainer(tmp_path / "whole", [MetricsJsonl(whole)]).fit()
    cut = tmp_path / "cut" / "metrics.jsonl"
    with pytest.raises(_Stop):
        _trainer(tmp_path / "cut", [MetricsJsonl(cut), _stop_at(5)]).fit()
    assert [json.loads(line)["step"] for line in cut.read_text().splitlines()] == [1, 2, 3, 4, 5]
    _trainer(tmp_path / "cut", [MetricsJsonl(cut)]).fit()  # resumes from step 3: steps 4-5 are computed again
    rows = [json.loads(line) for line in cut.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 4, 5, 6]
    assert rows[3:5] == rows[5:7]  # same kernels, same order: the recomputed steps are bit-identical
    by_step = {r["step"]: r for r in rows}
    assert list(by_step.values()) == [json.loads(line) for line in whole.read_text().splitlines()]


def test_plain_functions_are_refused_with_the_adapter_named(tmp_path):
    with pytest.raises(TypeError, match="OnIteration"):
        _trainer(tmp_path, [lambda step, phase, metrics: None])  # type: ignore[list-item]
