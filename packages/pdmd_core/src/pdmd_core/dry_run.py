"""What a run would hold, without training and without weights: roles, parameter counts and a memory plan.

- `build_dry_run_bundle(cfg) -> ModelBundle`: the config's model built on the meta device (shapes and
  parameter counts only: nothing is allocated or loaded, CUDA is never touched). Raises DryRunError naming the
  kind when its builder cannot build on meta.
- `describe_run(cfg, bundle) -> dict` with `roles` (params / trainable / experts per role), `schedule`
  (timesteps, phase step bounds, re-noise interval per phase), `memory_bytes` — the persistent state only:
  weights of every role, gradients + AdamW moments (2 tensors) + EMA of the trainable parameters — and, when
  the bundle provides `extras["memory_plan"]` (a callable `fn(cfg, roles) -> dict`, e.g. sharding over the
  run's GPUs plus an activation estimate), its result as `memory_plan_per_gpu`. The roles are built by a
  Trainer on a copy of `cfg` with device "cpu" (nothing runs on it); `memory_plan` gets the original `cfg`.
  Activations are not measured here (`pdmd bench step` measures them).
"""

from __future__ import annotations

from typing import Any

import torch

from pdmd_core.config import DistillConfig
from pdmd_core.models.registry import ModelBundle, build_model


class DryRunError(RuntimeError):
    pass


def build_dry_run_bundle(cfg: DistillConfig) -> ModelBundle:
    if cfg.model is None:
        raise DryRunError("the config has no `model: {kind: ...}` section")
    try:
        return build_model(cfg.model.kind, cfg.model.params, torch.device("meta"))
    except Exception as err:
        raise DryRunError(f"model kind '{cfg.model.kind}' could not be built on the meta device for a dry run "
                          f"(builders must accept device='meta'): {type(err).__name__}: {err}") from err


def _bytes_per_param(module: torch.nn.Module) -> int:
    p = next(module.parameters(), None)
    return 4 if p is None else p.element_size()


def _device_of(module: torch.nn.Module) -> str:
    p = next(module.parameters(), None)
    return "none" if p is None else str(p.device)


def describe_run(cfg: DistillConfig, bundle: ModelBundle) -> dict[str, Any]:
    from pdmd_core.trainer import Trainer

    plan_fn = bundle.extras.get("memory_plan")
    if plan_fn is not None and not callable(plan_fn):
        raise TypeError(f"bundle.extras['memory_plan'] must be callable fn(cfg, roles) -> dict, "
                        f"got {type(plan_fn).__name__}")
    # the trainer's torch.Generator cannot live on "meta" (nor on an absent "cuda"); nothing runs on it here
    cpu_cfg = cfg.model_copy(update={"device": "cpu"})
    trainer = Trainer(cpu_cfg, bundle, run_dir="/nonexistent-dry-run", progress=False)
    roles = trainer.role_summary()
    elt = _bytes_per_param(bundle.teacher)
    trainable = max(roles["generator"]["trainable"], 0)
    fake_trainable = roles["fake"]["trainable"]
    weights = (roles["teacher"]["params"] + roles["fake"]["params"] + roles["generator"]["params"]) * elt
    # AdamW keeps fp32 exp_avg and exp_avg_sq; grads match the parameter dtype
    optimiser = 2 * 4 * (trainable + fake_trainable)
    grads = elt * (trainable + fake_trainable)
    ema = 4 * trainable if cfg.optim.ema_decay else 0
    phases = [{"phase": k, "steps": [cfg.phase_step_bounds()[k], cfg.phase_step_bounds()[k + 1]],
               "renoise_interval": list(trainer.phase_interval(k)),
               "iterations": cfg.iterations_for_phase(k)} for k in range(cfg.num_phases)]
    report: dict[str, Any] = {
        "method": cfg.method,
        "device": cfg.device,
        "bundle_device": _device_of(bundle.teacher),
        "roles": roles,
        "schedule": {"timesteps": cfg.timestep_schedule(), "phases": phases,
                     "expert_of_step": trainer.generator.expert_of_step},
        "memory_bytes": {"weights": weights, "gradients": grads, "optimiser": optimiser, "ema": ema,
                         "total_persistent": weights + grads + optimiser + ema},
    }
    if plan_fn is not None:
        report["memory_plan_per_gpu"] = plan_fn(cfg, roles)
    return report
