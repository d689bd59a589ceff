"""Helpers and fixtures for pdmd_eval tests: tiny exported feature nets and synthetic sample sets.

A module of its own (not conftest) so that test files can import its helpers unambiguously: several test
folders have a conftest.py, and `from conftest import ...` would pick whichever was imported first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdmd_eval.backbones import ClipEmbedder, DinoEmbedder, LpipsDistance, build_lpips
from pdmd_eval.samples import SampleRecord, SampleSet

N_CLASSES = 3


class TinyImageNet(torch.nn.Module):
    """features = pooled 2×2 quadrant means (+ global std); logits[k] = -|mean(x) - k/2| (class from brightness)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), 2).flatten(1)
        feats = torch.cat([pooled, x.flatten(1).std(dim=1, keepdim=True) + 0.1], dim=1)
        centers = torch.arange(N_CLASSES, dtype=x.dtype) / 2
        logits = -(x.flatten(1).mean(dim=1, keepdim=True) - centers).abs()
        return feats, logits


class TinyVideoNet(torch.nn.Module):
    """N×T×C×H×W → features [mean, mean |frame diff|], logits from brightness like TinyImageNet."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.flatten(1).mean(dim=1, keepdim=True)
        motion = (x[:, 1:] - x[:, :-1]).abs().flatten(1).mean(dim=1, keepdim=True)
        centers = torch.arange(N_CLASSES, dtype=x.dtype) / 2
        return torch.cat([mean, motion], dim=1), -(mean - centers).abs()


def _export(module: torch.nn.Module, example: torch.Tensor, path, spatial: bool = False) -> str:  # type: ignore[no-untyped-def]
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if spatial:  # image net accepting any even size (TinyImageNet pools to 2×2)
        dims.update({2: 2 * torch.export.Dim("h", min=1, max=64), 3: 2 * torch.export.Dim("w", min=1, max=64)})
    program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
    torch.export.save(program, str(path))
    return str(path)


@pytest.fixture(scope="session")
def image_net_path(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return _export(TinyImageNet(), torch.rand(2, 1, 8, 8), tmp_path_factory.mktemp("nets") / "img.pt2", spatial=True)


@pytest.fixture(scope="session")
def video_net_path(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return _export(TinyVideoNet(), torch.rand(2, 4, 1, 16, 16), tmp_path_factory.mktemp("nets") / "vid.pt2")


def records(prompt_ids, seeds, method: str = "student", steps: int = 4) -> list[SampleRecord]:  # type: ignore[no-untyped-def]
    return [
        SampleRecord(method, pid, f"class {pid}", seed, steps, steps, "ckpt")
        for pid in prompt_ids
        for seed in seeds
    ]


def image_set(values: np.ndarray, prompt_ids, seeds, method: str = "student", size: int = 8) -> SampleSet:  # type: ignore[no-untyped-def]
    """Images of constant brightness plus given per-sample noise ``values`` (N×1×size×size)."""
    return SampleSet(values.astype(np.float32), records(prompt_ids, seeds, method), "image", "tiny")


def translating_video(d: int, frames: int = 5, size: int = 16, seed: int = 0) -> np.ndarray:
    """T×H×W crop of a blurred random texture moving left by ``d`` px/frame, in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((3 * size, 3 * size + d * frames)).astype(np.float32), (0, 0), 1.5)
    big = (big - big.min()) / (big.max() - big.min())
    return np.stack([big[size : 2 * size, size + d * t : 2 * size + d * t] for t in range(frames)])


@pytest.fixture(scope="session")
def lpips_random() -> LpipsDistance:
    torch.manual_seed(0)
    return LpipsDistance(build_lpips(None))


@pytest.fixture(scope="session")
def tiny_clip() -> ClipEmbedder:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=16, head_width=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=16, heads=2, layers=1),
    )
    return ClipEmbedder(model, open_clip.get_tokenizer("ViT-B-32"))


def tiny_dino(v3: bool) -> DinoEmbedder:
    import transformers as tf

    torch.manual_seed(0)
    cfg = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    model = tf.DINOv3ViTModel(tf.DINOv3ViTConfig(**cfg)) if v3 else tf.Dinov2Model(tf.Dinov2Config(**cfg))
    return DinoEmbedder(model, image_size=32)




def random_fid_inception_weights(path, seed: int = 0):  # type: ignore[no-untyped-def]
    """Save a random state dict of torch-fidelity's FID Inception architecture to ``path``.

    Conv weights use He-normal init so activations keep an O(1) scale through the 90-odd layers (PyTorch's
    default init shrinks them layer by layer towards float32 round-off). Both our FID and the reference
    implementations load this one file, so they run the same network.
    """
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path


def digits_uint8(lo: int, hi: int, n: int, size: int = 32) -> np.ndarray:
    """``n`` scikit-learn digits with labels in [lo, hi] as ``N×3×size×size`` uint8 (nearest upscaling)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pick = np.flatnonzero((data.target >= lo) & (data.target <= hi))[:n]
    imgs = np.round(data.images[pick] / 16.0 * 255.0).astype(np.uint8)
    big = np.kron(imgs, np.ones((size // 8, size // 8), dtype=np.uint8))
    return np.repeat(big[:, None], 3, axis=1)


class CountingEmbedder:
    """Embedder stand-in (e.g. for ``clip``): per-channel mean and std of each image, 6-d. Counts the images it
    embeds; ``sleep`` seconds per call make a run slow enough to kill; ``fail_after`` calls raise."""

    name = "counting"

    def __init__(self, sleep: float = 0.0, fail_after: int | None = None):
        self.sleep, self.fail_after = sleep, fail_after
        self.calls = self.images = 0

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        import time

        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError(f"injected failure after {self.calls} batches")
        self.calls += 1
        self.images += len(batch)
        time.sleep(self.sleep)
        x = torch.as_tensor(np.asarray(batch), dtype=torch.float64) / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
