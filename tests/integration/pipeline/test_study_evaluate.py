"""The study's sample/evaluate I/O on pdmd_eval's "evaluation at scale" API: the sample stage's sink streams uint8
media sets (PNG / MP4) and resumes, the evaluate job reads them lazily and computes the table presets with
random-weight networks of the real architectures (RAFT-large, torch-fidelity's FID Inception, cd-fvd's I3D,
DINOv3, CLIP, LPIPS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pdmd_pipeline.study.evaluation import METRICS, UNITS, EvalJob, metric_names, run_eval_job
from pdmd_pipeline.study.sampling import TIMINGS, SampleSink, read_samples


def _write(folder: Path, kind: str, method: str, prompts: int, seeds: list[int], shape: tuple[int, ...],
           rng: np.random.Generator) -> Path:
    sink = SampleSink(folder, kind, "bench", {"method": method}, fps=16.0)
    for p in range(prompts):
        for s in seeds:
            pixels = torch.from_numpy(rng.random(shape).astype(np.float32))
            sink.add(pixels, method, p, f"prompt {p}", s, 4, 4, "ckpt", {"denoise_seconds": 0.1, "decode_seconds": 0.0})
    return sink.close()


def test_sink_streams_media_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    folder = _write(tmp_path / "set", "video", "arm", 1, [42], (9, 3, 16, 16), rng)
    assert sorted(p.name for p in (folder / "media").iterdir()) == ["000000.mp4"]
    sink = SampleSink(folder, "video", "bench", {"method": "arm"}, fps=16.0)  # a requeued job opens it again
    assert sink.done(0, 42) and not sink.done(0, 43)
    sink.close()
    reader = read_samples(folder)
    clip = reader.read(0)
    assert clip.dtype == np.uint8 and clip.shape == (9, 3, 16, 16)
    assert len((folder / TIMINGS).read_text().splitlines()) == 1


@pytest.mark.parametrize("task", [pytest.param("t2v", marks=pytest.mark.slow), "t2i"])  # t2v: ~20 s
def test_eval_job_computes_the_table_presets_on_media_sets(tmp_path, task):
    rng = np.random.default_rng(1)
    video = task != "t2i"
    kind, shape, seeds = ("video", (9, 3, 16, 16), [42]) if video else ("image", (3, 16, 16), [0, 1, 2])
    teacher = _write(tmp_path / "teacher", kind, "teacher_40", 2, seeds, shape, rng)
    arm = _write(tmp_path / "arm", kind, "arm", 2, seeds, shape, rng)
    job = EvalJob("m", task, str(teacher), [("teacher_40", -1, str(teacher)), ("arm", 0, str(arm))],
                  str(tmp_path / "eval"), str(tmp_path / "cache"), "random", {"raft_iters": 2}, "cpu", 4)
    means = run_eval_job(job)
    expected = set(METRICS["video" if video else "t2i"].values())
    assert set(metric_names(task)) == expected
    assert set(means["teacher_40"]) == set(means["arm/seed0"]) == expected
    units = [json.loads(line) for line in (tmp_path / "eval" / UNITS).read_text().splitlines()]
    assert {u["metric"] for u in units} == expected and {u["seed"] for u in units} == {-1, 0}
    if video:
        # the reference against itself: identical features, Fréchet distance 0 up to sqrtm round-off
        assert means["teacher_40"]["fid_teacher"] == pytest.approx(0.0, abs=1e-3)
        assert means["teacher_40"]["fvd_i3d_teacher"] == pytest.approx(0.0, abs=1e-3)
        assert means["arm/seed0"]["fid_teacher"] > 1e-3  # different clips, different features
        assert all(0.0 <= u["value"] <= 1.0 for u in units if u["metric"] == "dynamic_degree_vbench")
    else:
        # per-prompt units: 2 prompts per set; cosine similarities lie in [-1, 1], LPIPS distances are positive
        assert sum(u["metric"] == "dino_similarity" and u["seed"] == 0 for u in units) == 2
        assert all(-1.0 <= u["value"] <= 1.0 for u in units if u["metric"].endswith("_similarity"))
        assert all(u["value"] > 0 for u in units if u["metric"] == "lpips_distance")
    assert any((tmp_path / "cache").rglob("*.safetensors"))  # per-sample features cached (resume)
