"""The student alone (`Student.save_export` / `from_export`): the experts' trainable weights and a manifest turn
back into the sampler the checkpoint gives, bit for bit (same weights in the same modules, same kernels in the
same order); a LoRA student's export holds only its adapter tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pdmd_core.checkpoint import list_checkpoints
from pdmd_core.config import config_from_dict
from pdmd_core.models import build_model
from pdmd_core.student import EXPORT_MANIFEST, EXPORT_WEIGHTS, Student
from pdmd_core.trainer import Trainer

MODEL = {"kind": "mlp", "dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}


@pytest.mark.parametrize("generator", [{"kind": "full"}, {"kind": "lora", "rank": 2}], ids=["full", "lora"])
def test_export_samples_exactly_like_the_checkpoint(tmp_path: Path, generator: dict) -> None:
    torch.set_num_threads(1)
    cfg = config_from_dict({"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8,
                            "ttur_ratio": 2, "iterations": [2, 2], "teacher_cfg": {"scale": 2.0},
                            "optim": {"ema_decay": 0.5}, "generator": generator, "model": MODEL})
    bundle = build_model("mlp", {k: v for k, v in MODEL.items() if k != "kind"})
    Trainer(cfg, bundle, tmp_path / "run", progress=False).fit()
    ckpt = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    student = Student.from_checkpoint(ckpt, bundle=bundle)
    folder = student.save_export(tmp_path / "student")
    again = Student.from_export(folder, bundle=bundle)
    z = torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.sample(z), student.sample(z))
    assert again.timesteps == student.timesteps and again.expert_of_step == student.expert_of_step == [0, 0, 1, 1]
    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    assert manifest["experts"] == 2 and manifest["config"]["method"] == "phased"
    tensors = load_file(str(folder / EXPORT_WEIGHTS))
    assert {k.split("/")[0] for k in tensors} == {"expert0", "expert1"}
    if generator["kind"] == "lora":
        assert all("lora_" in k for k in tensors)  # the frozen backbone stays with the teacher
        assert (folder / EXPORT_WEIGHTS).stat().st_size < ckpt.stat().st_size / 4


def test_export_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="student.json is missing"):
        Student.from_export(tmp_path)
    bundle = build_model("mlp", {k: v for k, v in MODEL.items() if k != "kind"})
    cfg = config_from_dict({"method": "dmd", "num_steps": 1, "batch_size": 4, "iterations": 1, "model": MODEL})
    from pdmd_core.roles import GeneratorExperts

    with pytest.raises(ValueError, match="no run config"):
        Student(GeneratorExperts(bundle, cfg)).save_export(tmp_path / "x")
