"""Toy velocity nets and closed-form velocity fields for the engine's numeric tests (rectified flow)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def gaussian_velocity(x_t: Tensor, t: Tensor | float, mu: Tensor | float, var: Tensor | float) -> Tensor:
    """Exact marginal velocity E[eps − x_0 | x_t] for x_0 ~ N(mu, var) (per dim), x_t = (1−t)x_0 + t eps."""
    a = 1 - t
    total = a * a * var + t * t
    centred = x_t - a * mu
    e_eps = t / total * centred
    e_x0 = mu + a * var / total * centred
    return e_eps - e_x0


def gaussian_marginal(t: float, mu: float, var: float) -> tuple[float, float]:
    """Mean and variance of x_t for x_0 ~ N(mu, var)."""
    return (1 - t) * mu, (1 - t) ** 2 * var + t * t


def atoms_velocity(x_t: Tensor, t: Tensor, atoms: Tensor) -> Tensor:
    """Exact velocity for data uniform on point masses `atoms` (1-D): posterior over atoms is a softmax."""
    a = (1 - t)[:, None]
    sig = t[:, None]
    logits = -((x_t[:, None] - a * atoms[None]) ** 2) / (2 * sig**2)
    post = torch.softmax(logits, dim=1)
    e_x0 = (post * atoms[None]).sum(1)
    # eps = (x_t − (1−t) x_0)/t, so E[eps − x_0 | x_t] = (x_t − (1−t) E x_0)/t − E x_0 = (x_t − E x_0)/t
    return (x_t - e_x0) / t


class ToyVelocityMLP(nn.Module):
    """psi(x_t, t) for 1-D data: a 4-layer MLP on (x_t, sinusoidal t features)."""

    def __init__(self, hidden: int = 128, t_feats: int = 8) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.arange(1, t_feats + 1, dtype=torch.float32) * math.pi, requires_grad=False)
        self.net = nn.Sequential(
            nn.Linear(1 + 2 * t_feats, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ang = t[:, None] * self.freqs[None]
        return self.net(torch.cat([x[:, None], torch.sin(ang), torch.cos(ang)], dim=1)).squeeze(1)


def velocity_from_marginal(x_t: Tensor, t: Tensor | float, m_t: Tensor | float, v_t: Tensor | float) -> Tensor:
    """psi* = −x_t/α_t − (σ_t + σ_t²/α_t)∇log p_t (Eq. 5) for a Gaussian marginal p_t = N(m_t, v_t), RF."""
    a = 1 - t
    score = -(x_t - m_t) / v_t
    return -x_t / a - (t + t * t / a) * score


class GaussianFamilyVelocity(nn.Module):
    """Exact velocity of N(mu, exp(log_var)) data plus a learnable affine correction (a + b·x).

    With a = b = 0 it is the exact teacher for Gaussian data; as a generator its one-step output
    z − v(z, 1) = mu − a − b·z can represent any Gaussian, and as a fake score (a = b = 0 kept) it can
    represent the generator's distribution exactly — a closed family for end-to-end DMD checks.
    """

    def __init__(self, mu: list[float], var: list[float]) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu))
        self.log_var = nn.Parameter(torch.tensor(var).log())
        self.a = nn.Parameter(torch.zeros(len(mu)))
        self.b = nn.Parameter(torch.zeros(len(mu)))

    def forward(self, x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
        te = t[:, None]
        return gaussian_velocity(x_t, te, self.mu, self.log_var.exp()) + self.a + self.b * x_t


class NoPrompts:
    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[None, None]:
        return None, None


class ElementwiseVelocity(nn.Module):
    """v = a·x_t + b·t + c, elementwise: runs on samples of any shape (resolution-mixture tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(-0.25))
        self.c = nn.Parameter(torch.tensor(0.1))
        self.seen_shapes: list[tuple[int, ...]] = []

    def forward(self, x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.seen_shapes.append(tuple(x_t.shape[1:]))
        return self.a * x_t + self.b * t.reshape(-1, *([1] * (x_t.ndim - 1))) + self.c


# ---- model kinds for dry-run tests, reachable as "core_toy_nets:<builder>" (tests/support is on sys.path)
BUILD_DEVICES: list[str] = []
PLAN_CALLS: list[tuple[object, dict]] = []


def build_planned_mlp(params: dict, device: torch.device):
    """The `mlp` kind plus an `extras["memory_plan"]` callable (as the real-scale kinds provide)."""
    from pdmd_core.models.mlp import build_mlp

    BUILD_DEVICES.append(str(device))
    bundle = build_mlp(params, device)

    def plan(cfg, roles: dict) -> dict:
        PLAN_CALLS.append((cfg, roles))
        total = roles["teacher"]["params"] + roles["fake"]["params"] + roles["generator"]["params"]
        return {"gpus": 8, "device": cfg.device, "bf16_weights_per_gpu": total * 2 / 8}

    bundle.extras["memory_plan"] = plan
    return bundle


def build_weights_only(params: dict, device: torch.device):
    """A builder that must load weights, so it cannot build on meta."""
    if device.type == "meta":
        raise RuntimeError("teacher.pt cannot be loaded onto the meta device")
    from pdmd_core.models.mlp import build_mlp

    return build_mlp(params, device)
