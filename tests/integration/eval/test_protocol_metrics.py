"""The paper-protocol metrics (Table 2: optical flow, VBench dynamic degree, FVD; Table 3: DINOv3 / CLIP
similarity, LPIPS distance) on media sample sets with random-weight networks of the real architectures."""

import numpy as np
import pytest
import torch
from eval_helpers import records, tiny_dino

from pdmd_eval.evaluate import evaluate
from pdmd_eval.functional.motion import (
    RaftFlow,
    flow_magnitude_maps,
    top_fraction_mean,
    vbench_dynamic_params,
    vbench_frame_indices,
    vbench_is_dynamic,
)
from pdmd_eval.reader import open_sample_set
from pdmd_eval.registry import DOWN, UP, get_metric
from pdmd_eval.samples import SampleSet, save_sample_set


def test_vbench_dynamic_degree_parameters_at_wan_resolution():
    idx = vbench_frame_indices(81, 16.0)  # interval round(16 / 8) = 2
    assert idx[:3] == [0, 2, 4] and len(idx) == 41
    threshold, count = vbench_dynamic_params(480, 832, len(idx))
    assert threshold == pytest.approx(6.0 * 480 / 256) and count == round(4 * 41 / 16) == 10
    assert vbench_frame_indices(16, 8.0) == list(range(16))  # 8 fps clips keep every frame


def test_top_fraction_and_dynamic_decision():
    mags = np.arange(100, dtype=np.float64)  # top 5 % = 95..99
    assert top_fraction_mean(mags) == pytest.approx(97.0)
    assert top_fraction_mean(np.array([3.0])) == 3.0  # at least one pixel
    assert vbench_is_dynamic(np.array([5, 12, 13, 1]), threshold=11.25, count=2)
    assert not vbench_is_dynamic(np.array([5, 12, 11.25, 1]), threshold=11.25, count=2)  # strictly above


def test_raft_sees_rgb_and_pair_stats_match_full_flows():
    torch.manual_seed(0)
    raft = RaftFlow(None, small=True, iters=2, pair_batch=2)
    seen = []
    forward = raft.model.forward
    raft.model.forward = lambda a, b, **kw: seen.append(a.detach().clone()) or forward(a, b, **kw)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)  # native size: no resize
    means, tops = raft.pair_stats(video)
    assert means.shape == tops.shape == (3,)
    assert not torch.equal(seen[0][:, 0], seen[0][:, 1])  # colour channels reach RAFT, not grey copies
    maps = flow_magnitude_maps(raft(video))
    np.testing.assert_allclose(means, maps.reshape(3, -1).mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(tops, [top_fraction_mean(m) for m in maps], rtol=1e-5)
    assert raft.working_size(480, 832) == (480, 832)
    assert RaftFlow(None, max_side=256).working_size(480, 832) == (152, 256)  # 147.7 → multiple of 8


class FakeRaft:
    """Flow stand-in: a pair's mean magnitude is ``speed · (j - i)``, its top-5 % score twice that."""

    name, iters, max_side = "fake", 20, None

    def __init__(self, speed: float):
        self.speed, self.pairs = speed, []

    def pair_stats(self, video, pairs):  # type: ignore[no-untyped-def]
        self.pairs.append(pairs)
        gaps = np.array([j - i for i, j in pairs], dtype=np.float64)
        return self.speed * gaps, 2 * self.speed * gaps


def _video_set(tmp_path, name: str, n: int = 2, t: int = 9, h: int = 16, w: int = 24):  # type: ignore[no-untyped-def]
    vids = np.random.default_rng(len(name)).random((n, t, 3, h, w)).astype(np.float32)
    save_sample_set(SampleSet(vids, records(range(n), [42], name), "video"), tmp_path / name, storage="media")
    return open_sample_set(tmp_path / name)


def test_flow_and_dynamic_degree_follow_the_protocol(tmp_path):
    clips = _video_set(tmp_path, "arm")
    fast, slow = FakeRaft(1.0), FakeRaft(0.05)
    res = evaluate(clips, metrics=["optical_flow_raft", "dynamic_degree_vbench"],
                   models={"raft_large": fast}, progress=False)
    assert fast.pairs[0] == [(i, i + 1) for i in range(8)]  # consecutive pairs for OF
    assert fast.pairs[2] == [(0, 2), (2, 4), (4, 6), (6, 8)]  # 16 fps → every 2nd frame for DD
    assert res["optical_flow_raft"].mean == pytest.approx(1.0) and res["optical_flow_raft"].direction == UP
    # 16×24 frames: threshold 6·16/256 = 0.375 px; 5 sampled frames → count round(1.25) = 1; scores 4.0 > 0.375
    assert res["dynamic_degree_vbench"].extras["threshold_px"] == [0.375]
    assert res["dynamic_degree_vbench"].extras["min_moving_pairs"] == [1]
    assert res["dynamic_degree_vbench"].mean == 1.0
    res_slow = evaluate(clips, metrics=["dynamic_degree_vbench"], models={"raft_large": slow}, progress=False)
    assert res_slow["dynamic_degree_vbench"].mean == 0.0  # scores 0.2 < 0.375


def test_temporal_flickering_formula(tmp_path):
    frames = np.stack([np.full((3, 8, 8), v, np.uint8) for v in (0, 51, 0, 51)])
    s = SampleSet(np.stack([frames, frames[:1].repeat(4, 0)]).astype(np.float32) / 255, records([0, 1], [0]), "video")
    res = evaluate(s, metrics=["temporal_flickering"], progress=False)["temporal_flickering"]
    np.testing.assert_allclose(res.values, [(255 - 51) / 255, 1.0])


@pytest.mark.parametrize("storage", ["array", "media"])
def test_similarity_and_lpips_distance_on_collapsed_and_diverse_seeds(tmp_path, storage, lpips_random, tiny_clip):
    rng = np.random.default_rng(0)
    base = rng.random((1, 3, 32, 32)).astype(np.float32)
    collapsed = np.repeat(base, 4, axis=0)
    diverse = rng.random((4, 3, 32, 32)).astype(np.float32)
    imgs = np.round(np.concatenate([collapsed, diverse]) * 255) / 255
    s = SampleSet(imgs.astype(np.float32), records(["same", "varied"], [0, 1, 2, 3]), "image")
    save_sample_set(s, tmp_path / "s", storage=storage)
    models = {"dinov3": tiny_dino(True), "clip": tiny_clip, "lpips": lpips_random}
    res = evaluate(open_sample_set(tmp_path / "s"), metrics=["table3"], models=models, batch_size=3, progress=False)
    assert list(res) == ["dino_similarity", "lpips_distance", "clip_similarity"]
    assert res["dino_similarity"].direction == DOWN and res["lpips_distance"].direction == UP
    assert res["dino_similarity"].keys == ["same", "varied"]
    np.testing.assert_allclose(res["dino_similarity"].values[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(res["clip_similarity"].values[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(res["lpips_distance"].values[0], 0.0, atol=1e-6)
    assert res["dino_similarity"].values[1] < 1.0 and res["clip_similarity"].values[1] < 1.0
    assert res["lpips_distance"].values[1] > 0.0
    # the streamed LPIPS equals the CPU tier's in-memory div_lpips on the same pixels (same pairs, same kernels)
    old = evaluate(s, metrics=["div_lpips"], models={"lpips": lpips_random}, progress=False)["div_lpips"]
    np.testing.assert_allclose(res["lpips_distance"].values, old.values, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # ~15 s: I3D at 224×224×16 on CPU for 6 clips plus cd-fvd's path for 2
def test_fvd_with_random_i3d_from_the_weights_folder(tmp_path, monkeypatch):
    from cdfvd.third_party.i3d.utils import preprocess_i3d as cdfvd_preprocess

    from pdmd_eval.standard import build_i3d, load_i3d, preprocess_i3d

    torch.manual_seed(0)
    (tmp_path / "w" / "i3d").mkdir(parents=True)
    torch.save(build_i3d().state_dict(), tmp_path / "w" / "i3d" / "i3d_pretrained_400.pt")
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path / "w"))
    ref = _video_set(tmp_path, "base", n=3, t=16, h=32, w=32)
    arm = _video_set(tmp_path, "student", n=3, t=16, h=32, w=32)
    same = evaluate(ref, reference=ref, metrics=["fvd_i3d_teacher"], progress=False)["fvd_i3d_teacher"]
    assert same.mean == pytest.approx(0.0, abs=1e-6) and same.direction == DOWN
    other = evaluate(arm, reference=ref, metrics=["fvd_i3d_teacher"], progress=False)["fvd_i3d_teacher"]
    assert other.mean > 0 and other.extras["frames_per_clip"] == 16
    # our preprocessing is cd-fvd's, bit for bit (same ops, same order, CPU)
    clips = np.stack([np.moveaxis(ref.read(i), 1, -1) for i in range(2)])  # B×T×H×W×C uint8
    torch.testing.assert_close(preprocess_i3d(torch.from_numpy(clips)), cdfvd_preprocess(clips), rtol=0, atol=0)
    net = load_i3d()
    with torch.no_grad():
        theirs = net.model(cdfvd_preprocess(clips))
    torch.testing.assert_close(net(np.stack([ref.read(0), ref.read(1)])), theirs, rtol=0, atol=0)


def test_registered_names_say_what_and_which_way():
    expected = {"optical_flow_raft": UP, "dynamic_degree_vbench": UP, "fid_teacher": DOWN,
                "fvd_i3d_teacher": DOWN, "dino_similarity": DOWN, "lpips_distance": UP, "clip_similarity": DOWN,
                "temporal_flickering": UP}
    for name, direction in expected.items():
        assert get_metric(name).direction == direction
