"""Loading a checkpoint never executes code from it. A crafted pickle payload (an object whose `__reduce__`
creates a marker file) is planted where each loader looks: inside a single-file checkpoint, as a DCP folder's
`.metadata`, as a non-tensor item of a DCP folder's data. Every loader (`Trainer.resume`, `Student.from_checkpoint`,
`pdmd train`, `pdmd export`) refuses it with an error naming the file, and the marker never appears. The payload
is live: unpickled the unsafe way it does create its marker."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from typer.testing import CliRunner

from pdmd_core.checkpoint import UnsafeCheckpointError, latest_checkpoint, load_checkpoint
from pdmd_core.config import config_from_dict
from pdmd_core.distributed_checkpoint import load_tensors, read_metadata_safely
from pdmd_core.models import build_model
from pdmd_core.student import Student
from pdmd_core.trainer import Trainer

MLP = {"dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}
RAW = {"method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 4, "ttur_ratio": 1,
       "iterations": [1, 1], "checkpoint": {"every": 1, "keep_last": 3}, "model": {"kind": "mlp", **MLP}}


class Payload:
    """Unpickling this object calls Path.touch(marker): what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _run(run_dir: Path, **kw: Any) -> Trainer:
    torch.set_num_threads(1)
    trainer = Trainer(config_from_dict(RAW), build_model("mlp", MLP), run_dir, progress=False, **kw)
    trainer.fit()
    return trainer


def _fresh(run_dir: Path, **kw: Any) -> Trainer:
    return Trainer(config_from_dict(RAW), build_model("mlp", MLP), run_dir, progress=False, **kw)


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(1), "x": Payload(marker)}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)  # what pdmd used to do
    assert marker.exists()


def test_single_file_checkpoint_with_a_payload_is_refused(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    good = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert good is not None and good.suffix == ".pt"
    assert load_checkpoint(good)["global_step"] == 2  # a real checkpoint loads with weights_only=True
    marker = tmp_path / "ran"
    state = load_checkpoint(good)
    state["callbacks"] = {"Evil": {"state": Payload(marker)}}
    crafted = good.parent / "ckpt_00000009.pt"
    torch.save(state, crafted)
    with pytest.raises(UnsafeCheckpointError, match="refused to load .*ckpt_00000009.pt.*would call `getattr`") as err:
        load_checkpoint(crafted)
    assert "Nothing from the file was executed" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        _fresh(tmp_path / "run").resume()
    with pytest.raises(UnsafeCheckpointError):
        Student.from_checkpoint(crafted)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(json.dumps(RAW))
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    from pdmd_core.cli import app

    result = CliRunner().invoke(app, ["train", str(cfg_path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "refused to load" in result.output, result.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing written
    assert not marker.exists()


def _dcp_run(tmp_path: Path) -> Path:
    _run(tmp_path / "run", world_size=1)
    latest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert latest is not None and latest.name == "ckpt_00000002.dcp"
    return latest


def test_dcp_metadata_with_a_payload_is_refused(tmp_path: Path) -> None:
    good = _dcp_run(tmp_path)
    marker = tmp_path / "ran"
    crafted = good.parent / "ckpt_00000009.dcp"
    shutil.copytree(good, crafted)
    (crafted / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    refused = "refused to load .*ckpt_00000009.dcp/.metadata.*would call `pathlib.Path.touch`"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        read_metadata_safely(crafted / ".metadata")
    with pytest.raises(UnsafeCheckpointError, match="ckpt_00000009.dcp"):
        _fresh(tmp_path / "run", world_size=1).resume()
    with pytest.raises(UnsafeCheckpointError):
        Student.from_checkpoint(crafted)
    assert not marker.exists()
    # the metadata allow-list still reads DCP's own records
    assert read_metadata_safely(good / ".metadata").state_dict_metadata


def test_dcp_item_with_a_payload_is_refused(tmp_path: Path) -> None:
    """A data item that DCP reads with torch.load(weights_only=False) by default (non-tensor values)."""
    good = _dcp_run(tmp_path)
    marker = tmp_path / "ran"
    crafted = good.parent / "ckpt_00000009.dcp"
    shutil.copytree(good, crafted)
    trainer = _fresh(tmp_path / "other", world_size=1)
    template = {"generator": {str(e): trainer.generator.expert_state(e) for e in range(2)}}
    load_tensors(good, template)
    name = next(iter(template["generator"]["0"]))
    template["generator"]["0"][name] = Payload(marker)  # written by DCP as a pickled bytes item
    for stale in crafted.glob("*.distcp"):
        stale.unlink()
    dcp.save(template, checkpoint_id=str(crafted), no_dist=True)
    with pytest.raises(UnsafeCheckpointError, match="ckpt_00000009.dcp"):
        _fresh(tmp_path / "run", world_size=1).resume()
    with pytest.raises(UnsafeCheckpointError):
        Student.from_checkpoint(crafted)
    assert not marker.exists()


def test_a_model_kind_that_is_an_import_path_is_not_built_from_a_checkpoint(tmp_path: Path) -> None:
    good = _dcp_run(tmp_path)
    marker = tmp_path / "ran"
    shared = json.loads((good / "trainer.json").read_text())
    shared["config"]["model"] = {"kind": "pathlib:Path.touch", "path": str(marker)}
    (good / "trainer.json").write_text(json.dumps(shared))
    with pytest.raises(UnsafeCheckpointError, match="pathlib:Path.touch.*import path"):
        Student.from_checkpoint(good)
    from pdmd_core.cli import app

    result = CliRunner().invoke(app, ["export", str(good), "--out", str(tmp_path / "export")])
    assert result.exit_code == 2 and "import path" in result.output, result.output
    assert not marker.exists() and not (tmp_path / "export").exists()
