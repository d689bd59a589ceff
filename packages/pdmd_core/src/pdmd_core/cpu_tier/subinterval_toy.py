"""The paper's Fig. 2 / claim C0 on the 1-D toy: score matching within a subinterval (s, 1].

Three MLPs (conditioned on t only) are trained from scratch:
  (a) `standard`: Eq. 4 on (0, 1], target ε − x_0;
  (b) `eq13`: Eq. 11's target on (s, 1] given only x_s, weighted as in Eq. 13 (min(1, clamp·σ²_{t|s}));
  (c) `naive`: the biased target ε − x_s on (s, 1], unweighted.
Each model then integrates the same noise from t = 1 down to t = s with Euler steps of the shared 100-step grid,
so (b) and (c) are compared with (a) on the x_s marginal they were all trained to reach; W1 is scipy's
`wasserstein_distance` between endpoint sets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pdmd_core.cpu_tier.config import SubintervalConfig
from pdmd_core.cpu_tier.data.toy1d import sample_atoms
from pdmd_core.cpu_tier.nets import VelocityMLP
from pdmd_core.cpu_tier.train import warmup_cosine
from pdmd_core.flow import (
    euler_step,
    flow_matching_loss_terms,
    naive_subinterval_target,
    subinterval_loss_weight,
    subinterval_velocity_target,
    transition,
)
from pdmd_core.sampling import uniform_timesteps

OBJECTIVES = ("standard", "eq13", "naive")


def objective_terms(objective: str, x_0: Tensor, gen: torch.Generator, s: float,
                    clamp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_t, t, target, weight) for one batch of clean points x_0 (B, 1)."""
    batch = x_0.shape[0]
    if objective == "standard":
        t = torch.rand(batch, generator=gen)
        x_t, target = flow_matching_loss_terms(x_0, torch.randn(x_0.shape, generator=gen), t)
        return x_t, t, target, torch.ones(batch, 1)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; allowed: {OBJECTIVES}")
    # Only x_s is available to the subinterval objectives, as in a phase of Phased DMD.
    x_s = transition(x_0, 0.0, s, torch.randn(x_0.shape, generator=gen))
    t = s + (1 - s) * torch.rand(batch, generator=gen)
    t = t.clamp_min(s + 1e-4)  # σ_{t|s} = 0 at t = s exactly
    te = t[:, None]
    noise = torch.randn(x_0.shape, generator=gen)
    x_t = transition(x_s, s, te, noise)
    if objective == "eq13":
        target = subinterval_velocity_target(x_s, noise, s, te)
        weight = subinterval_loss_weight(s, te, clamp)
        return x_t, t, target, torch.as_tensor(weight).expand(batch, 1)
    return x_t, t, naive_subinterval_target(x_s, noise), torch.ones(batch, 1)


def train_toy_model(objective: str, atoms: list[float], config: SubintervalConfig, seed: int,
                    progress: bool = True) -> tuple[VelocityMLP, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = VelocityMLP((1,), cond_dim=1, hidden=config.hidden, depth=config.depth)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: warmup_cosine(k, 100, config.iterations))
    start = time.perf_counter()
    for _ in tqdm(range(config.iterations), desc=f"toy1d {objective}", disable=not progress, mininterval=1.0):
        x_0 = sample_atoms(atoms, config.batch_size, gen)
        x_t, t, target, weight = objective_terms(objective, x_0, gen, config.s, config.clamp)
        loss = (weight * (model(x_t, t, None) - target).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model, time.perf_counter() - start


@torch.no_grad()
def integrate(model: nn.Module, z: Tensor, timesteps: list[float]) -> Tensor:
    """(len(timesteps), N, 1) Euler trajectory states starting from z at timesteps[0]."""
    states = [z]
    x = z
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:], strict=True):
        v = model(x, torch.full((len(x),), t_from), None)
        x = euler_step(x, v, t_from, t_to)
        states.append(x)
    return torch.stack(states)


def grid_until(euler_steps: int, s: float) -> list[float]:
    """The shared uniform grid from 1 down to s (s must be a grid point)."""
    grid = uniform_timesteps(euler_steps)
    keep = [t for t in grid if t >= s - 1e-9]
    if abs(keep[-1] - s) > 1e-9:
        raise ValueError(f"s={s} is not on the {euler_steps}-step grid; pick s = k/{euler_steps}")
    return keep


@dataclass
class ToyResult:
    models: dict[str, VelocityMLP]
    train_seconds: dict[str, float]
    timesteps: list[float]
    endpoints: dict[str, np.ndarray]
    trajectories: dict[str, np.ndarray]  # (steps+1, trajectories) each
    report: dict[str, float]


@torch.no_grad()
def velocity_field(model: nn.Module, ts: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(xs), len(ts)) model velocities on a grid."""
    tt, xx = np.meshgrid(ts, xs)
    v = model(torch.tensor(xx.reshape(-1, 1), dtype=torch.float32),
              torch.tensor(tt.reshape(-1), dtype=torch.float32), None)
    return v.numpy().reshape(xx.shape)


def run_subinterval_toy(atoms: list[float], config: SubintervalConfig, seed: int,
                        progress: bool = True) -> ToyResult:
    from scipy.stats import wasserstein_distance

    models, seconds = {}, {}
    for k, objective in enumerate(OBJECTIVES):
        models[objective], seconds[objective] = train_toy_model(objective, atoms, config, seed + k, progress)
    timesteps = grid_until(config.euler_steps, config.s)
    gen = torch.Generator().manual_seed(seed + 100)
    z = torch.randn(config.w1_samples, 1, generator=gen)
    paths = {name: integrate(m, z, timesteps)[:, :, 0].numpy() for name, m in models.items()}
    ends = {name: p[-1] for name, p in paths.items()}
    x_s_true = transition(sample_atoms(atoms, config.w1_samples, gen), 0.0, config.s,
                          torch.randn(config.w1_samples, 1, generator=gen))[:, 0].numpy()
    ts = np.linspace(config.s + 0.01, 1.0, 50)
    xs = np.linspace(-3, 4, 71)
    field = {name: velocity_field(m, ts, xs) for name, m in models.items()}
    report = {
        "s": config.s,
        "w1_eq13": float(wasserstein_distance(ends["eq13"], ends["standard"])),
        "w1_naive": float(wasserstein_distance(ends["naive"], ends["standard"])),
        "w1_standard_to_true_x_s": float(wasserstein_distance(ends["standard"], x_s_true)),
        "w1_eq13_to_true_x_s": float(wasserstein_distance(ends["eq13"], x_s_true)),
        "w1_naive_to_true_x_s": float(wasserstein_distance(ends["naive"], x_s_true)),
        "field_mae_eq13": float(np.abs(field["eq13"] - field["standard"]).mean()),
        "field_mae_naive": float(np.abs(field["naive"] - field["standard"]).mean()),
        "std_endpoints_standard": float(ends["standard"].std()),
        "std_endpoints_eq13": float(ends["eq13"].std()),
        "std_endpoints_naive": float(ends["naive"].std()),
        "w1_samples": config.w1_samples,
        "euler_steps": config.euler_steps,
        **{f"train_seconds_{k}": v for k, v in seconds.items()},
    }
    shown = {name: p[:, :config.trajectories] for name, p in paths.items()}
    return ToyResult(models, seconds, timesteps, ends, shown, report)


def plot_subinterval_toy(result: ToyResult, path: str, s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"standard": "(a) Eq. 4 on (0, 1]", "eq13": f"(b) Eq. 13 on ({s:g}, 1]",
              "naive": f"(c) naive ε − x_s on ({s:g}, 1]"}
    ts = np.linspace(s + 0.005, 1.0, 60)
    xs = np.linspace(-3, 4, 141)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    fields = {n: velocity_field(m, ts, xs) for n, m in result.models.items()}
    limit = float(np.percentile(np.abs(fields["standard"]), 99))
    for ax, name in zip(axes, result.models, strict=True):
        mesh = ax.pcolormesh(ts, xs, fields[name], cmap="coolwarm", vmin=-limit, vmax=limit, shading="auto")
        ax.plot(result.timesteps, result.trajectories[name], color="black", lw=0.4, alpha=0.35)
        ax.set_xlim(1.0, s)
        ax.set_title(titles[name])
        ax.set_xlabel("t (1 = noise)")
    axes[0].set_ylabel("x")
    fig.colorbar(mesh, ax=axes, label="velocity ψ(x, t)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
