"""`pdmd train --dry-run` builds the model on the meta device (no weights, no CUDA), describes the roles on a
cpu copy of the config, adds the bundle's `memory_plan` and injects LoRA adapters without allocating them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import core_toy_nets
import pytest
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.config import config_from_dict
from pdmd_core.dry_run import build_dry_run_bundle, describe_run
from pdmd_core.models import build_model
from pdmd_core.roles import GeneratorExperts

MLP = {"dim": 4, "hidden": 16, "depth": 1, "cond_dim": 4, "moe_boundary": 0.875}
CONFIG = """\
method: phased
num_steps: 4
shift: 5.0
phases: 2
batch_size: 16
device: cuda
generator: {kind: lora, rank: 2}
model: {kind: "core_toy_nets:build_planned_mlp", dim: 4, hidden: 16, depth: 1, cond_dim: 4, moe_boundary: 0.875}
"""


def _cfg(**over: Any):
    base = {"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "generator": {"kind": "lora", "rank": 2},
            "model": {"kind": "mlp", **MLP}}
    return config_from_dict(base | over)


def test_cli_dry_run_builds_on_meta_and_prints_the_bundles_memory_plan(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    core_toy_nets.BUILD_DEVICES.clear()
    core_toy_nets.PLAN_CALLS.clear()
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert core_toy_nets.BUILD_DEVICES == ["meta"]  # built once, on meta; "cuda" (absent here) never touched
    assert report["bundle_device"] == "meta" and report["device"] == "cuda"
    roles = report["roles"]
    # the same counts as a real (cpu) build of the model
    cpu_roles = describe_run(_cfg(), build_model("mlp", MLP))["roles"]
    assert roles == cpu_roles
    # memory_plan got the original config (device cuda) and exactly the printed roles
    (cfg, plan_roles), = core_toy_nets.PLAN_CALLS
    assert cfg.device == "cuda" and cfg.batch_size == 16 and plan_roles == roles
    total = roles["teacher"]["params"] + roles["fake"]["params"] + roles["generator"]["params"]
    assert report["memory_plan_per_gpu"] == {"gpus": 8, "device": "cuda", "bf16_weights_per_gpu": total * 2 / 8}


def test_dry_run_without_a_memory_plan_has_no_plan_key() -> None:
    report = describe_run(_cfg(), build_dry_run_bundle(_cfg()))
    assert report["bundle_device"] == "meta" and "memory_plan_per_gpu" not in report
    # 2 fake experts + 2 teacher experts + 2 LoRA'd backbones of the same size; LoRA r2 on fc1/fc2 of depth 1
    expert = sum(p.numel() for p in build_model("mlp", MLP).teacher_experts[0].parameters())  # type: ignore[index]
    assert report["roles"]["teacher"]["params"] == report["roles"]["fake"]["params"] == 2 * expert
    assert report["roles"]["generator"]["trainable"] == 2 * (2 * (16 + 16))  # fc1 + fc2: r·(in + out) each


def test_builder_that_cannot_build_on_meta_fails_with_exit_2_naming_the_kind(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.replace("build_planned_mlp", "build_weights_only"))
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "core_toy_nets:build_weights_only" in result.output and "meta" in result.output


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_lora_injection_uses_low_cpu_mem_usage_exactly_on_meta(monkeypatch: pytest.MonkeyPatch,
                                                                 device: str) -> None:
    import peft

    flags: list[bool] = []
    real = peft.inject_adapter_in_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        flags.append(kwargs.get("low_cpu_mem_usage", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(peft, "inject_adapter_in_model", spy)
    gen = GeneratorExperts(build_model("mlp", MLP, device), _cfg())
    assert flags == [device == "meta"] * 2  # one adapter per expert
    adapters = [p for e in range(2) for _, p in gen._owned(e)]
    assert adapters and all(p.is_meta == (device == "meta") for p in adapters)
