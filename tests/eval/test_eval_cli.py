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
