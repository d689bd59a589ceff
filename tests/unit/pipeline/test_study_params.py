"""Real-scale study params: validated at load, every arm resolves with the same generator budget, the study's
arms are the presets (DMD2 arm = the *_dmd2_sgts preset), and bad values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pdmd_core.config import load_config
from pdmd_pipeline.params import ParamsError
from pdmd_pipeline.study.params import generator_budget, load_study, resolve_run_config

ROOT = Path(__file__).resolve().parents[3]
REAL = ROOT / "experiments" / "realscale" / "params.yaml"
SMOKE = ROOT / "experiments" / "presets" / "realscale_smoke.yaml"
DMD2_PRESET = {"wan22_t2v": "wan22_t2v_a14b_dmd2_sgts.yaml", "wan22_i2v": "wan22_i2v_a14b_dmd2_sgts.yaml",
               "qwen_t2i": "qwen_image_dmd2_sgts.yaml"}
RUN_SPECIFIC = ("iterations", "seed", "device", "model")  # what the study sets per run (paths, budget)


@pytest.mark.parametrize("path", [REAL, SMOKE], ids=["real", "smoke"])
def test_every_arm_of_every_model_gets_the_study_budget(path):
    study = load_study(path, root=ROOT)
    for model, params in study.models.items():
        for arm in params.arms:
            cfg = resolve_run_config(study, model, arm, study.seeds[0], ROOT)
            assert generator_budget(cfg) == study.iterations, (model, arm)
            assert cfg.iterations == study.iterations // cfg.num_phases
            assert cfg.device == study.device and cfg.seed == study.seeds[0]


@pytest.mark.parametrize("model", sorted(DMD2_PRESET))
def test_the_studys_dmd2_arm_is_the_dmd2_preset(model):
    """The study builds every arm on the model's Phased preset; its `sgts` arm must be the released DMD2/SGTS
    preset (re-noise transport, no MoE clamp, same CFG, LoRA, optimiser) up to the study's run-specific fields."""
    study = load_study(REAL, root=ROOT)
    arm = resolve_run_config(study, model, "sgts", 0, ROOT).model_dump(mode="json")
    preset = load_config(ROOT / "experiments" / "realscale" / DMD2_PRESET[model]).model_dump(mode="json")
    differ = sorted(k for k in arm if arm[k] != preset[k] and k not in RUN_SPECIFIC)
    assert differ == []
    assert arm["transport"] == "renoise" and arm["method"] == "sgts"


def _write(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(SMOKE.read_text())
    edit(raw)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["arms"]["sgts"].update(iterations=8), "arms.sgts sets 'iterations'"),
    (lambda r: r["models"]["qwen_t2i"]["distill"].update(iterations=[2, 2]), "models.qwen_t2i.distill sets"),
    (lambda r: r.update(iterations=6), "not divisible by the 4 phases of arm 'phased_k4'"),
    (lambda r: r["models"]["qwen_t2i"]["arms"].append("dmd_full"), "not defined under `arms`"),
    (lambda r: r["tables"]["table2"].update(t2v="qwen_t2i"), "tables.table2.t2v = 'qwen_t2i' is a t2i model"),
    (lambda r: r["models"]["qwen_t2i"]["distill"].update(ttur_ratio=0), "ttur_ratio"),
    (lambda r: r["models"]["wan22_i2v"].update(train_images=None), "an i2v model needs train_images"),
    (lambda r: r.pop("seeds"), "seeds"),
    (lambda r: r["models"]["wan22_t2v"]["eval"].update(resolution=[5, 16, 16]), "FVD's I3D needs clips of at least 9"),
    (lambda r: r["evaluation"].update(raft_iter=6), "raft_iter"),
])
def test_bad_study_values_fail_naming_the_key(tmp_path, edit, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study(_write(tmp_path, edit), root=ROOT)


def test_table6_shows_the_papers_base_and_dmd2_rows_beside_its_phase_rows(tmp_path):
    """Table 6 (4 phases vs 2 phases + SGTS, T2V) also shows the base model and DMD2, paper and ours: the paper's
    numbers for those two are its Table 2 T2V rows (the same evaluation; the 2-phase row is Table 2's Phased row).
    No T2V model here, so our cells read 'not run' and no evaluation is needed."""
    from pdmd_pipeline.study.layout import StudyLayout
    from pdmd_pipeline.study.tables import Cells, table6

    study = load_study(_write(tmp_path, lambda r: r["tables"]["table6"].update(t2v=None)), root=ROOT)
    layout = StudyLayout(tmp_path)
    text = table6(study, layout, Cells(study, layout))
    assert [line for line in text.splitlines() if "| paper |" in line] == [
        "| Base (40 steps, CFG 4) | paper | 10.26 | 79.55 | 0.00 | 0.0 |",
        "| DMD2 (SGTS) | paper | 3.23 | 65.45 | 55.70 | 763.1 |",
        "| 4-step/2-phase (with SGTS inside phases) | paper | 9.30 | 82.27 | 47.24 | 700.9 |",
        "| 4-step/4-phase (no SGTS) | paper | 9.43 | 83.18 | 45.40 | 578.2 |"]
    assert text.count("| this study |") == 4
