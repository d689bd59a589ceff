"""Every real-scale preset passes `pdmd train PRESET --dry-run` without weights (meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_core.config import load_config
from pdmd_core.realscale.architectures import get_architecture

# the run configs beside the study's own files (its DVC pipeline and params)
STUDY_FILES = {"dvc.yaml", "params.yaml"}
PRESETS = sorted(p for p in (Path(__file__).resolve().parents[3] / "experiments" / "realscale").glob("*.yaml")
                 if p.name not in STUDY_FILES)
EXPECTED_BASES = {"wan22_t2v_a14b", "wan22_i2v_a14b", "qwen_image", "wan21_t2v_1p3b"}

pytestmark = pytest.mark.slow


def test_four_models_each_have_a_phased_preset_and_a_dmd2_sgts_baseline():
    names = {p.stem for p in PRESETS}
    assert names == {f"{b}_{m}" for b in EXPECTED_BASES for m in ("phased", "dmd2_sgts")}
    for path in PRESETS:
        cfg = load_config(path)
        assert cfg.timestep_schedule()[:4] == pytest.approx(
            [1.0, 0.9, 0.75, 0.5] if "qwen" in path.stem else [1.0, 0.9375, 0.8333333, 0.625])
        assert (cfg.generator.kind, cfg.generator.rank, cfg.generator.alpha) == ("lora", 64, 8.0)
        assert (cfg.optim.lr_generator, cfg.optim.lr_fake, cfg.optim.betas) == (5e-5, 4e-7, (0.0, 0.999))
        assert cfg.ttur_ratio == 5 and cfg.batch_size == 64 and cfg.num_steps == 4
        assert cfg.method == ("phased" if path.stem.endswith("phased") else "sgts")
        if cfg.method == "phased":
            assert cfg.num_phases == 2 and cfg.in_phase == "sgts"


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_dry_run_prints_roles_parameter_counts_and_a_memory_plan(preset):
    result = CliRunner().invoke(app, ["train", str(preset), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    roles = report["roles"]
    teacher = roles["teacher"]["params"]
    if "a14b" in preset.stem:
        assert 28.4e9 < teacher < 28.8e9 and roles["fake"]["experts"] == 2  # two 14B experts
    elif "qwen" in preset.stem:
        assert 20.3e9 < teacher < 20.6e9
    else:
        assert 1.3e9 < teacher < 1.5e9
    # phased: one expert per phase; SGTS: one per teacher expert (2 for the A14B MoE, else 1)
    assert roles["generator"]["experts"] == (2 if preset.stem.endswith("phased") or "a14b" in preset.stem else 1)
    # LoRA r64 on every attention and FFN linear, in closed form: rank x (in + out) per adapted linear
    arch = get_architecture(load_config(preset).model.params["architecture"]).transformer
    d, layers = arch["num_attention_heads"] * arch["attention_head_dim"], arch["num_layers"]
    if "qwen" in preset.stem:  # 8 attention linears (image + text streams) + two 4x MLPs
        per_expert = 64 * (8 * 2 * d + 2 * 2 * (d + 4 * d)) * layers
    else:  # self- and cross-attention q, k, v, o + the FFN's two linears
        per_expert = 64 * (8 * 2 * d + 2 * (d + arch["ffn_dim"])) * layers
    trained_experts = 1 if preset.stem.endswith("phased") else roles["generator"]["experts"]
    assert roles["generator"]["trainable"] == trained_experts * per_expert
    plan = report["memory_plan_per_gpu"]
    assert plan["gpus"] in (8, 64) and plan["per_gpu_gib"]["total"] < 80  # fits an 80 GB GPU
