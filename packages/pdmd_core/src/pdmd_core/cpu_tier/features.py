"""Feature nets trained on real data, exported with torch.export to `.pt2` files returning (features, logits).

`DigitsFeatureNet` (a small CNN on N×1×8×8 in [0, 1]) classifies the digit; its penultimate layer is the
feature space for Fréchet distance, precision/recall and within-prompt diversity, and its logits give prompt
adherence. `VideoFeatureNet` (a small 3-D CNN on N×T×1×H×W) classifies the digit and, through an auxiliary head
that is not exported, regresses the clip's velocity, so that its features carry motion as well as appearance
(an FVD-like feature space).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pdmd_core.cpu_tier.config import FeatureNetConfig


class DigitsFeatureNet(nn.Module):
    def __init__(self, feature_dim: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * 4 * 4, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return features, self.head(features)


class VideoFeatureNet(nn.Module):
    def __init__(self, feature_dim: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            # Downsample space at once: full-resolution 3-D convs cost ~80 s of training on two cores.
            nn.Conv3d(1, 16, 3, stride=(1, 2, 2), padding=1), nn.SiLU(),
            nn.Conv3d(16, 32, 3, stride=(1, 2, 2), padding=1), nn.SiLU(),
            nn.Conv3d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, classes)
        self.velocity_head = nn.Linear(feature_dim, 2)  # training-only auxiliary target

    def embed(self, video: Tensor) -> Tensor:
        return self.body(video.permute(0, 2, 1, 3, 4))  # N×T×C×H×W → N×C×T×H×W for Conv3d

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        features = self.embed(video)
        return features, self.head(features)


def train_feature_net(net: nn.Module, x: Tensor, labels: Tensor, config: FeatureNetConfig, seed: int,
                      velocity: Tensor | None = None, progress: bool = True) -> float:
    """Train on (x in [0, 1], labels[, velocity]) with cross-entropy (+ velocity MSE); returns wall seconds."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(x) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
    net.train()
    start = time.perf_counter()
    for _ in tqdm(range(config.epochs), desc=f"{type(net).__name__}", disable=not progress):
        perm = torch.randperm(len(x), generator=gen)
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            if isinstance(net, VideoFeatureNet):
                features = net.embed(x[idx])
                logits = net.head(features)
                loss = nn.functional.cross_entropy(logits, labels[idx])
                if velocity is not None:
                    loss = loss + nn.functional.mse_loss(net.velocity_head(features), velocity[idx])
            else:
                loss = nn.functional.cross_entropy(net(x[idx])[1], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, labels: Tensor) -> float:
    return float((net(x)[1].argmax(dim=1) == labels).float().mean())


def export_feature_net(net: nn.Module, example: Tensor, path: Path) -> Path:
    """torch.export with a dynamic batch dimension, saved as `.pt2` (load: torch.export.load(p).module())."""
    net.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path
