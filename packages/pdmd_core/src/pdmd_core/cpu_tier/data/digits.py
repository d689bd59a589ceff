"""scikit-learn's bundled 8×8 handwritten digits (no download) with a fixed seeded train/val/test split."""

from __future__ import annotations

import torch

from pdmd_core.cpu_tier.data.base import LabelledData, Split, split_indices


def digit_prompt(digit: int) -> str:
    return f"a handwritten {digit}"


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 1, 8, 8) in [0, 1], labels (1797,)) from sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.long)


def make_digits(val_fraction: float, test_fraction: float, seed: int) -> LabelledData:
    images, labels = load_digit_images()
    train_idx, val_idx, test_idx = split_indices(len(images), val_fraction, test_fraction, seed)
    to_model = images * 2 - 1
    splits = [Split(to_model[i], labels[i]) for i in (train_idx, val_idx, test_idx)]
    return LabelledData("digits", "image", [digit_prompt(d) for d in range(10)], train=splits[0],
                        val=splits[1], test=splits[2], meta={"image_size": 8})
