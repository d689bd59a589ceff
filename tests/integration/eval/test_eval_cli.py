import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from eval_helpers import records
from typer.testing import CliRunner

from pdmd_core.cli import app
from pdmd_eval.samples import SampleSet, save_sample_set

runner = CliRunner()


def _arm(tmp_path: Path, name: str, scale: float) -> Path:
    rng = np.random.default_rng(len(name))
    imgs = np.clip(0.5 + scale * rng.normal(size=(6, 1, 8, 8)), 0, 1).astype(np.float32)
    return save_sample_set(SampleSet(imgs, records([0, 1], [0, 1, 2], name), "image", "tiny"), tmp_path / name)


def test_eval_and_tables_commands(tmp_path, image_net_path):
    teacher, student = _arm(tmp_path, "teacher", 0.2), _arm(tmp_path, "phased", 0.1)
    for arm in (teacher, student):
        result = runner.invoke(app, [
            "eval", str(arm), "--reference", str(teacher), "--feature-net", image_net_path,
            "--metrics", "featnet_similarity,vendi_feat,fd_teacher", "--out", str(tmp_path / f"out_{arm.name}"),
            "--no-progress",
        ])
        assert result.exit_code == 0, result.output
        assert "featnet_similarity ↓" in result.output
    data = json.loads((tmp_path / "out_phased" / "results.json").read_text())
    assert data["info"]["label"] == "phased"
    assert set(data["metrics"]) == {"featnet_similarity", "vendi_feat", "fd_teacher"}
    assert (tmp_path / "out_phased" / "eval.tex").is_file()

    result = runner.invoke(app, [
        "tables", str(tmp_path / "out_teacher"), str(tmp_path / "out_phased"), "--out", str(tmp_path / "tables"),
        "--stem", "div", "--baseline", "teacher",
    ])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "tables" / "div.md").read_text()
    assert "| teacher |" in md and "| phased |" in md
    cmp = (tmp_path / "tables" / "div_vs_teacher.md").read_text()
    assert "| phased | featnet_similarity ↓ | 2 |" in cmp and "fd_teacher" not in cmp


def test_eval_reports_missing_inputs(tmp_path):
    arm = _arm(tmp_path, "x", 0.1)
    result = runner.invoke(app, ["eval", str(arm), "--metrics", "featnet_similarity", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "feature net" in str(result.exception)


def test_console_script_lists_eval_commands():
    pdmd = str(Path(sys.executable).with_name("pdmd"))
    out = subprocess.run([pdmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert "eval" in out and "tables" in out
    listing = subprocess.run([pdmd, "metrics", "--kind", "points"], capture_output=True, text=True, check=True).stdout
    assert "modes_covered" in listing and "flow_mag" not in listing


def test_eval_media_video_set_with_table2_motion_metrics_resumes_from_its_cache(tmp_path, monkeypatch):
    import torch
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    (tmp_path / "w" / "raft").mkdir(parents=True)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "w" / "raft" / "raft_large.pth")
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path / "w"))
    vids = np.random.default_rng(0).random((2, 5, 3, 16, 16)).astype(np.float32)
    save_sample_set(SampleSet(vids, records([0, 1], [42], "phased"), "video", "wan"), tmp_path / "arm",
                    storage="media")
    args = ["eval", str(tmp_path / "arm"), "--metrics", "optical_flow_raft,dynamic_degree_vbench,temporal_flickering",
            "--out", str(tmp_path / "out"), "--raft-iters", "2", "--device", "cpu", "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "optical_flow_raft ↑" in first.output and "dynamic_degree_vbench ↑" in first.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    info = data["info"]
    assert info["storage"] == "media" and info["protocol"]["raft_iters"] == 2
    assert {v["computed"] for v in info["cache_stats"].values()} == {2} and (tmp_path / "out" / "cache").is_dir()
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    info2 = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {v["computed"] for v in info2["info"]["cache_stats"].values()} == {0}
    assert {v["reused"] for v in info2["info"]["cache_stats"].values()} == {2}
    for name in ("optical_flow_raft", "dynamic_degree_vbench", "temporal_flickering"):
        assert info2["metrics"][name]["values"] == data["metrics"][name]["values"]
