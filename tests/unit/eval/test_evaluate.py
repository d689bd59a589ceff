import numpy as np
import pytest
from eval_helpers import records, tiny_dino, translating_video

from pdmd_eval.evaluate import compare, default_metrics, evaluate, load_results, save_results
from pdmd_eval.features import load_feature_net
from pdmd_eval.registry import DOWN, UP, available_metrics, get_metric
from pdmd_eval.samples import SampleSet
from pdmd_eval.weights import MissingWeightsError

BRIGHTNESS = {0: 0.1, 1: 0.5, 2: 0.9}  # TinyImageNet's class centres are 0, 0.5, 1.0


def digits_like(method: str, noise: float, collapsed: bool = False, seed: int = 0) -> SampleSet:
    rng = np.random.default_rng(seed)
    prompts, seeds = [0, 1, 2], [0, 1, 2, 3]
    imgs = []
    for pid in prompts:
        base = rng.normal(0, noise, size=(1, 8, 8))
        for _ in seeds:
            pattern = base if collapsed else rng.normal(0, noise, size=(1, 8, 8))
            imgs.append(np.clip(BRIGHTNESS[pid] + pattern, 0, 1))
    return SampleSet(np.asarray(imgs, dtype=np.float32), records(prompts, seeds, method), "image", "tiny")


def moving_set(d: int, method: str) -> SampleSet:
    vids = [translating_video(d, frames=4, size=16, seed=s)[:, None] for s in range(4)]
    return SampleSet(np.asarray(vids, dtype=np.float32), records([0, 1], [0, 1], method), "video", "moving")


@pytest.fixture(scope="module")
def net(image_net_path):
    return load_feature_net(image_net_path)


def test_every_metric_declares_direction_unit_and_description():
    metrics = available_metrics()
    assert len(metrics) >= 20
    for m in metrics:
        assert m.direction in (UP, DOWN) and m.description
    assert get_metric("div_lpips").direction == UP and get_metric("div_dino").direction == DOWN
    with pytest.raises(KeyError, match="unknown metric"):
        get_metric("nope")


def test_feature_net_loader_infers_image_or_video(image_net_path, video_net_path):
    assert not load_feature_net(image_net_path).video
    assert load_feature_net(video_net_path).video
    with pytest.raises(FileNotFoundError, match="pt2"):
        load_feature_net("/no/such.pt2")


def test_image_set_end_to_end_with_feature_net(net):
    teacher = digits_like("teacher", 0.1, seed=1)
    diverse = digits_like("phased", 0.1, seed=2)
    collapsed = digits_like("sgts", 0.1, collapsed=True, seed=3)
    assert set(default_metrics("image", True, False, True)) == {
        "class_acc", "featnet_similarity", "vendi_feat", "fd_teacher", "precision_teacher", "recall_teacher",
        "precision_teacher_prompt", "recall_teacher_prompt",
    }
    res_d = evaluate(diverse, reference=teacher, feature_net=net, progress=False)
    res_c = evaluate(collapsed, reference=teacher, feature_net=net, progress=False)
    assert res_d["class_acc"].mean == 1.0 and res_c["class_acc"].mean == 1.0
    # collapsed arm: identical seeds -> cosine 1 and Vendi 1 for every prompt
    np.testing.assert_allclose(res_c["featnet_similarity"].values, 1.0, atol=1e-6)
    np.testing.assert_allclose(res_c["vendi_feat"].values, 1.0, atol=1e-6)
    assert res_d["featnet_similarity"].mean < res_c["featnet_similarity"].mean
    assert res_d["featnet_similarity"].keys == [0, 1, 2] and res_d["featnet_similarity"].unit == "prompt"
    assert res_d["fd_teacher"].mean < res_c["fd_teacher"].mean
    cmp = compare(res_d["vendi_feat"], res_c["vendi_feat"])
    assert cmp.n == 3 and cmp.mean_diff > 0


def test_teacher_against_itself_has_zero_fd_and_full_precision(net):
    teacher = digits_like("teacher", 0.1)
    res = evaluate(teacher, reference=teacher, metrics=["fd_teacher", "precision_teacher", "recall_teacher"],
                   feature_net=net, progress=False)
    assert res["fd_teacher"].mean == pytest.approx(0.0, abs=1e-8)
    assert np.isnan(res["fd_teacher"].low)
    assert res["precision_teacher"].mean == 1.0 and res["recall_teacher"].mean == 1.0


def test_real_data_array_is_accepted(net):
    s = digits_like("x", 0.1)
    res = evaluate(s, real=digits_like("real", 0.1, seed=5).samples, metrics=["fd_real", "recall_real"],
                   feature_net=net, progress=False)
    assert res["fd_real"].mean >= 0 and 0 <= res["recall_real"].mean <= 1


def test_pretrained_metrics_with_random_networks(lpips_random, tiny_clip):
    s = digits_like("x", 0.1, collapsed=True)
    res = evaluate(s, metrics=["div_lpips", "div_clip", "div_dino", "clip_score"],
                   models={"lpips": lpips_random, "clip": tiny_clip, "dino": tiny_dino(False)}, progress=False)
    np.testing.assert_allclose(res["div_lpips"].values, 0.0, atol=1e-6)
    np.testing.assert_allclose(res["div_clip"].values, 1.0, atol=1e-5)
    np.testing.assert_allclose(res["div_dino"].values, 1.0, atol=1e-5)
    assert len(res["clip_score"].values) == 12 and (res["clip_score"].values >= 0).all()


def test_video_motion_metrics_and_ratio_to_teacher(video_net_path, lpips_random):
    teacher, student = moving_set(2, "teacher"), moving_set(1, "sgts")
    res = evaluate(student, reference=teacher, feature_net=load_feature_net(video_net_path),
                   metrics=["flow_mag", "dynamic_degree", "flow_ratio_teacher", "fvd_teacher", "fd_teacher",
                            "div_lpips"],
                   models={"lpips": lpips_random}, progress=False)
    assert res["flow_mag"].mean == pytest.approx(1.0, rel=0.1)
    assert res["flow_ratio_teacher"].mean == pytest.approx(0.5, rel=0.1)
    assert res["flow_ratio_teacher"].low <= res["flow_ratio_teacher"].mean <= res["flow_ratio_teacher"].high
    assert res["dynamic_degree"].mean == 1.0
    assert res["fvd_teacher"].mean > 0 and res["div_lpips"].mean > 0
    same = evaluate(teacher, reference=teacher, metrics=["fvd_teacher", "flow_ratio_teacher"],
                    fd_extractor="raw", progress=False)
    assert same["fvd_teacher"].mean == pytest.approx(0.0, abs=1e-8)
    assert same["flow_ratio_teacher"].mean == pytest.approx(1.0)


def test_video_fvd_with_image_net_uses_frame_features(image_net_path):
    teacher, student = moving_set(2, "teacher"), moving_set(0, "frozen")
    res = evaluate(student, reference=teacher, metrics=["fvd_teacher"],
                   feature_net=load_feature_net(image_net_path), progress=False)
    assert res["fvd_teacher"].mean > 0


def test_points_metrics_from_meta_extras():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    extras = {"mode_centers": centers.tolist(), "mode_prompt": [0, 0, 1, 1], "mode_std": 0.2}
    pts = []
    for pid in (0, 1):
        for seed in range(8):
            pts.append(centers[2 * pid + seed % 2] + rng.normal(0, 0.2, 2))
    s = SampleSet(np.asarray(pts, dtype=np.float32), records([0, 1], range(8)), "points", "mog2d", extras)
    res = evaluate(s, reference=s, progress=False)
    expected = {"modes_covered", "mode_balance", "near_mode", "mode_adherence", "pairwise_distance", "fd_teacher"}
    assert expected <= set(res)
    assert res["modes_covered"].mean == 1.0 and res["mode_balance"].mean == pytest.approx(1.0)
    assert res["mode_adherence"].mean == 1.0 and res["near_mode"].mean > 0.9
    assert res["fd_teacher"].mean == pytest.approx(0.0, abs=1e-9)


def _two_prompt_points(centres, method, seeds=8, spread=0.1, seed=0):
    """Points: prompt p's seeds scattered around centres[p]."""
    rng = np.random.default_rng(seed)
    pts = [np.asarray(centres[p]) + rng.normal(0, spread, 2) for p in (0, 1) for _ in range(seeds)]
    return SampleSet(np.asarray(pts, dtype=np.float32), records([0, 1], range(seeds), method), "points", "two")


def test_per_prompt_knn_counts_a_sample_of_the_wrong_prompt_as_a_miss():
    """A student that draws prompt 0's samples where the teacher puts prompt 1's (and vice versa) lies on the
    teacher's pooled manifold (pooled precision and recall 1) but on neither prompt's own (per-prompt 0)."""
    teacher = _two_prompt_points([[0.0, 0.0], [10.0, 0.0]], "teacher", seed=1)
    # the teacher's own points with the prompts exchanged: the pooled sets are identical
    swapped = SampleSet(np.concatenate([teacher.samples[8:], teacher.samples[:8]]), teacher.records, "points", "two")
    names = ["precision_teacher", "recall_teacher", "precision_teacher_prompt", "recall_teacher_prompt"]
    res = evaluate(swapped, reference=teacher, metrics=names, progress=False)
    assert res["precision_teacher"].mean == 1.0 and res["recall_teacher"].mean == 1.0
    assert res["precision_teacher_prompt"].values.tolist() == [0.0, 0.0]
    assert res["recall_teacher_prompt"].values.tolist() == [0.0, 0.0]
    assert res["recall_teacher_prompt"].keys == [0, 1] and res["recall_teacher_prompt"].unit == "prompt"
    same = evaluate(teacher, reference=teacher, metrics=names[2:], progress=False)
    assert same["precision_teacher_prompt"].mean == 1.0 and same["recall_teacher_prompt"].mean == 1.0
    # half of one prompt's samples collapse onto one point far from the teacher: precision 0.5 there, and the
    # student's own manifold (k = 3 of 8 points) still reaches every teacher sample of that prompt
    pts = teacher.samples.copy()
    pts[:4] = [30.0, 30.0]
    partial = SampleSet(pts, records([0, 1], range(8), "partial"), "points", "two")
    res = evaluate(partial, reference=teacher, metrics=names[2:], progress=False)
    assert res["precision_teacher_prompt"].values.tolist() == [0.5, 1.0]
    few = _two_prompt_points([[0.0, 0.0], [10.0, 0.0]], "few", seeds=3)
    with pytest.raises(ValueError, match="k=3 need more than k"):
        evaluate(few, reference=teacher, metrics=["recall_teacher_prompt"], progress=False)


def test_missing_weights_raise_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = digits_like("x", 0.1)
    with pytest.raises(MissingWeightsError, match=r"LPIPS AlexNet backbone.*lpips/alexnet.pth"):
        evaluate(s, metrics=["div_lpips"], progress=False)
    with pytest.raises(MissingWeightsError, match=r"open_clip ViT-B-32"):
        evaluate(s, metrics=["clip_score"], progress=False)
    with pytest.raises(MissingWeightsError, match=r"facebook/dinov2-small.*hf/facebook--dinov2-small"):
        evaluate(s, metrics=["div_dino"], progress=False)
    with pytest.raises(MissingWeightsError, match="RAFT"):
        evaluate(moving_set(1, "x"), metrics=["flow_mag_raft"], progress=False)


def test_dinov3_without_support_names_the_requirement(monkeypatch):
    from pdmd_eval import backbones

    assert backbones.dinov3_supported()  # transformers 5.x ships DINOv3
    monkeypatch.setattr(backbones, "dinov3_supported", lambda: False)
    with pytest.raises(ImportError, match="DINOv3ViTModel"):
        backbones.load_dino("facebook/dinov3-vits16-pretrain-lvd1689m")


def test_dino_loads_from_the_weights_folder(tmp_path, monkeypatch):
    from pdmd_eval.backbones import load_dino

    tiny_dino(False).model.save_pretrained(tmp_path / "hf" / "facebook--dinov2-small")
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path))
    emb = load_dino(image_size=32)(__import__("torch").rand(2, 3, 16, 16))
    assert emb.shape == (2, 32)


def test_missing_inputs_and_wrong_kinds_are_errors(net):
    s = digits_like("x", 0.1)
    with pytest.raises(ValueError, match="feature net"):
        evaluate(s, metrics=["featnet_similarity"], progress=False)
    with pytest.raises(ValueError, match="reference"):
        evaluate(s, metrics=["fd_teacher"], feature_net=net, progress=False)
    with pytest.raises(ValueError, match="do not apply"):
        evaluate(s, metrics=["flow_mag"], progress=False)
    with pytest.raises(ValueError, match="fd_extractor"):
        evaluate(s, metrics=["fd_teacher"], reference=s, fd_extractor="vgg", progress=False)


def test_results_round_trip_through_json(tmp_path, net):
    res = evaluate(digits_like("x", 0.1), feature_net=net, metrics=["featnet_similarity", "class_acc"], progress=False)
    save_results(res, tmp_path / "r.json", label="x")
    info, back = load_results(tmp_path / "r.json")
    assert info == {"label": "x"}
    assert back["featnet_similarity"].mean == res["featnet_similarity"].mean
    assert back["class_acc"].keys == res["class_acc"].keys
