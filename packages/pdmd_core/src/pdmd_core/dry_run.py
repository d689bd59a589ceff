"""What a run would hold, without training: roles, parameter counts and a per-device memory plan.

`describe_run(cfg, bundle) -> dict` with `roles` (params / trainable / experts per role), `schedule`
(timesteps, phase step bounds, re-noise interval per phase) and `memory_bytes` — the persistent state only:
weights of every role, gradients + AdamW moments (2 tensors) + EMA of the trainable parameters. Activations
depend on resolution and checkpointing and are not estimated here (`pdmd bench step` measures them).
"""

from __future__ import annotations

from typing import Any

import torch

from pdmd_core.config import DistillConfig
from pdmd_core.models.registry import ModelBundle


def _bytes_per_param(module: torch.nn.Module) -> int:
    p = next(module.parameters(), None)
    return 4 if p is None else p.element_size()


def describe_run(cfg: DistillConfig, bundle: ModelBundle) -> dict[str, Any]:
    from pdmd_core.trainer import Trainer

    trainer = Trainer(cfg, bundle, run_dir="/nonexistent-dry-run", progress=False)
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
    return {
        "method": cfg.method,
        "roles": roles,
        "schedule": {"timesteps": cfg.timestep_schedule(), "phases": phases,
                     "expert_of_step": trainer.generator.expert_of_step},
        "memory_bytes": {"weights": weights, "gradients": grads, "optimiser": optimiser, "ema": ema,
                         "total_persistent": weights + grads + optimiser + ema},
    }
