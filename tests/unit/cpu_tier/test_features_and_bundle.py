"""Feature-net export (read back by pdmd_eval) and the `cpu_tier` model kind for the trainer."""

from __future__ import annotations

import torch

from pdmd_core.cpu_tier.config import BenchmarkConfig, FeatureNetConfig
from pdmd_core.cpu_tier.data import build_dataset
from pdmd_core.cpu_tier.features import (
    DigitsFeatureNet,
    VideoFeatureNet,
    accuracy,
    export_feature_net,
    train_feature_net,
)
from pdmd_core.cpu_tier.teacher import build_velocity_net, load_teacher, save_teacher
from pdmd_core.models.registry import build_model


def test_digits_classifier_learns_and_exports_with_a_dynamic_batch(tmp_path):
    from pdmd_eval.features import load_feature_net

    data = build_dataset(BenchmarkConfig.model_validate({"data": {"kind": "digits"}}).data, seed=0)
    net = DigitsFeatureNet(feature_dim=32)
    train_feature_net(net, data.to_unit(data.train.x), data.train.labels,
                      FeatureNetConfig(epochs=20, batch_size=128, feature_dim=32), seed=0, progress=False)
    assert accuracy(net, data.to_unit(data.test.x), data.test.labels) > 0.95
    path = export_feature_net(net, data.to_unit(data.test.x[:2]), tmp_path / "f.pt2")
    loaded = load_feature_net(path)
    assert not loaded.video
    batch = data.to_unit(data.test.x[:7])
    features, logits = loaded.module(batch)
    assert features.shape == (7, 32) and logits.shape == (7, 10)
    assert torch.allclose(features, net(batch)[0], atol=1e-5)


def test_video_feature_net_exports_as_a_video_net(tmp_path):
    from pdmd_eval.features import load_feature_net

    net = VideoFeatureNet(feature_dim=16).eval()
    path = export_feature_net(net, torch.rand(2, 8, 1, 16, 16), tmp_path / "v.pt2")
    loaded = load_feature_net(path)
    assert loaded.video
    features, logits = loaded.module(torch.rand(3, 8, 1, 16, 16))
    assert features.shape == (3, 16) and logits.shape == (3, 10)


def _saved_teacher(tmp_path, data: dict) -> tuple[BenchmarkConfig, torch.nn.Module]:
    cfg = BenchmarkConfig.model_validate({"data": data, "model": {"hidden": 32, "depth": 1}})
    shape = build_dataset(cfg.data, cfg.seed).sample_shape
    net = build_velocity_net(cfg, shape)
    save_teacher(net, cfg, shape, tmp_path)
    return cfg, net


def test_teacher_round_trips_through_its_checkpoint(tmp_path):
    _, net = _saved_teacher(tmp_path, {"kind": "mog2d", "num_points": 100})
    loaded = load_teacher(tmp_path)
    x, t = torch.randn(4, 2), torch.rand(4)
    cond = loaded.encoder.encode(["a point in row 2"] * 4)
    assert torch.equal(loaded.model(x, t, cond), net(x, t, cond))
    assert (tmp_path / "config.yaml").exists()


def test_cpu_tier_bundle_samples_training_prompts_deterministically(tmp_path):
    _saved_teacher(tmp_path, {"kind": "mog2d", "num_points": 100})
    bundle = build_model("cpu_tier", {"teacher": str(tmp_path / "teacher.pt")})
    assert bundle.sample_shape == (2,) and bundle.lora_target_modules == ["fc1", "fc2"]
    names = {n.rsplit(".", 1)[-1] for n, m in bundle.teacher.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(bundle.lora_target_modules) <= names
    cond, null = bundle.prompt_source.sample(6, torch.Generator().manual_seed(0))
    again, _ = bundle.prompt_source.sample(6, torch.Generator().manual_seed(0))
    assert cond.embeds.shape == null.embeds.shape == (6, 8, 32)
    assert torch.equal(cond.embeds, again.embeds)
    assert not null.mask.any() and cond.mask.any(dim=1).all()
    table = bundle.extras["encoder"].encode(bundle.extras["prompts"]).embeds
    assert all(any(torch.equal(row, p) for p in table) for row in cond.embeds)


def test_unconditional_toy_bundle_has_no_conditioning(tmp_path):
    _saved_teacher(tmp_path, {"kind": "toy1d", "num_points": 40})
    bundle = build_model("cpu_tier", {"teacher": str(tmp_path)})
    assert bundle.prompt_source.sample(3, torch.Generator()) == (None, None)
