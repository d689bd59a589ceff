"""Training roles: frozen teacher (optionally a two-expert MoE), fake score(s), generator experts, EMA.

- `Teacher(bundle, cfg)`: frozen; `.velocity(x_t, t, cond, null_cond)` applies the configured CFG.
- `FakeScore(bundle)`: one copy of each teacher expert (MoE: routed by the re-noise t); `.reset_from_teacher()`
  at every phase start; `.parameters_for(lo, hi)` = parameters of the fake experts serving times in (lo, hi].
  The fake never uses CFG.
- `GeneratorExperts(bundle, cfg)`: the student. Expert e runs the sampling steps mapped to it
  (`expert_of_step`): phased → the step's phase; otherwise one expert per teacher expert (by the step's t).
  kind `full`: each expert is a copy of the teacher expert serving its first step. kind `lora`: peft LoRA
  adapters (one per expert) injected into one frozen backbone per teacher expert; base weights never get grads.
  `.set_trainable(experts)` freezes everything else; `.trainable_parameters()`; `.expert_state(e)` /
  `.load_expert_state(e, sd)` hold only what training changes (full weights, or the adapter tensors).
- `EMA(named_params, decay)`: shadow copies of the trainable parameters.

Mixed precision: when `bundle.extras["autocast_dtype"]` is set (a torch dtype such as torch.bfloat16, or its
name) every model forward of the three roles runs under `torch.autocast("cuda", dtype)` if its input lives on
CUDA, and its output is cast back to the input's dtype (fp32), so CFG combination, transports and all losses
stay fp32. On CPU (and with no `autocast_dtype`) forwards are untouched: CPU runs stay bit-reproducible.
On a meta backbone LoRA adapters are injected with peft's `low_cpu_mem_usage` (created on meta, no allocation).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from pdmd_core.config import DistillConfig
from pdmd_core.dtensor_state import copy_into, shard_state_like
from pdmd_core.guidance import guided_velocity
from pdmd_core.models.moe import MoEVelocity, expert_index
from pdmd_core.models.registry import ModelBundle
from pdmd_core.protocols import Conditioning, VelocityModel
from pdmd_core.schedules import phase_of_step


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def count_parameters(params: Iterator[nn.Parameter] | Sequence[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def autocast_dtype_of(bundle: ModelBundle) -> torch.dtype | None:
    """The bundle's `extras["autocast_dtype"]` (torch.bfloat16 / torch.float16 or their names), or None."""
    value = bundle.extras.get("autocast_dtype")
    if value is None:
        return None
    dtype = getattr(torch, value, None) if isinstance(value, str) else value
    if dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"bundle.extras['autocast_dtype'] = {value!r}: allowed are torch.bfloat16, "
                         f"torch.float16 (or 'bfloat16', 'float16') or None")
    assert isinstance(dtype, torch.dtype)
    return dtype


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """`torch.autocast("cuda", dtype)` for CUDA inputs when a dtype is set; otherwise a no-op."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def autocast_forward(module: Callable[..., Tensor], dtype: torch.dtype | None) -> VelocityModel:
    """v = module(x_t, t, cond) under CUDA autocast (when set), returned in x_t's dtype (fp32 downstream)."""
    if dtype is None:
        return cast(VelocityModel, module)

    def forward(x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        with autocast_context(x_t.device, dtype):
            out = module(x_t, t, cond)
        return out.to(x_t.dtype)

    return forward


class Teacher:
    def __init__(self, bundle: ModelBundle, cfg: DistillConfig) -> None:
        self.module = _freeze(bundle.teacher).eval()
        self.cfg = cfg.teacher_cfg
        self._autocast = autocast_dtype_of(bundle)
        self._token_patch = tuple(bundle.extras.get("cfg_token_patch", ()))  # the model's latent token (true_cfg)

    @torch.no_grad()
    def velocity(self, x_t: Tensor, t: Tensor, cond: Conditioning | None,
                 null_cond: Conditioning | None) -> Tensor:
        forward = autocast_forward(self.module, self._autocast)
        return guided_velocity(forward, x_t, t, cond, null_cond, self.cfg.scale, self.cfg.form, self.cfg.rescale,
                               self._token_patch)


def teacher_experts(bundle: ModelBundle) -> list[nn.Module]:
    return list(bundle.teacher_experts) if bundle.teacher_experts is not None else [bundle.teacher]


def boundary_of(bundle: ModelBundle, cfg: DistillConfig) -> float | None:
    return cfg.moe_boundary if cfg.moe_boundary is not None else bundle.moe_boundary


class FakeScore:
    def __init__(self, bundle: ModelBundle, cfg: DistillConfig) -> None:
        self._sources = teacher_experts(bundle)
        self.boundary = boundary_of(bundle, cfg)
        self.experts = [copy.deepcopy(m) for m in self._sources]
        for m in self.experts:
            m.train()
            for p in m.parameters():
                p.requires_grad_(True)
        if len(self.experts) == 1:
            self.module: nn.Module = self.experts[0]
        else:
            assert self.boundary is not None, "ModelBundle guarantees a boundary for an MoE teacher"
            self.module = MoEVelocity(self.experts, self.boundary)
        self._autocast = autocast_dtype_of(bundle)

    def __call__(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        return autocast_forward(self.module, self._autocast)(x_t, t, cond)

    @torch.no_grad()
    def reset_from_teacher(self) -> None:
        """Phase start: F_k ← T (not F_{k−1}), paper §3.5."""
        for fake, src in zip(self.experts, self._sources, strict=True):
            fake.load_state_dict(src.state_dict())

    def experts_for(self, lo: float, hi: float) -> list[int]:
        """Indices of the fake experts serving some t in (lo, hi]."""
        if len(self.experts) == 1 or self.boundary is None:
            return [0]
        out = []
        if hi >= self.boundary:
            out.append(0)
        if lo < self.boundary:
            out.append(1)
        return out

    def parameters_for(self, lo: float, hi: float) -> list[nn.Parameter]:
        return [p for e in self.experts_for(lo, hi) for p in self.experts[e].parameters()]

    def state_dict(self) -> list[dict[str, Tensor]]:
        return [m.state_dict() for m in self.experts]

    def load_state_dict(self, states: list[dict[str, Tensor]]) -> None:
        for m, sd in zip(self.experts, states, strict=True):
            m.load_state_dict(shard_state_like(sd, m.state_dict()))  # unchanged unless m is sharded


class _LoRAExpert(nn.Module):
    """Expert `name` = its adapter on a shared frozen backbone; activates the adapter before each call."""

    backbone: nn.Module

    def __init__(self, backbone: nn.Module, name: str, on_activate: Callable[[], None]) -> None:
        super().__init__()
        self.__dict__["backbone"] = backbone  # not a submodule: the backbone is shared by several experts
        self.adapter = name
        self._on_activate = on_activate

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        from peft.tuners.lora import LoraLayer

        for mod in self.backbone.modules():
            if isinstance(mod, LoraLayer):
                mod.set_adapter(self.adapter)
        self._on_activate()  # peft's set_adapter flips requires_grad; restore the trainer's choice
        return self.backbone(x_t, t, cond)


class GeneratorExperts:
    def __init__(self, bundle: ModelBundle, cfg: DistillConfig) -> None:
        self.kind = cfg.generator.kind
        self.timesteps = cfg.timestep_schedule()
        self.bounds = cfg.phase_step_bounds()
        sources = teacher_experts(bundle)
        boundary = boundary_of(bundle, cfg)
        n_steps = len(self.timesteps) - 1
        if cfg.method == "phased":
            self.expert_of_step = [phase_of_step(self.bounds, i) for i in range(n_steps)]
        elif len(sources) == 2 and boundary is not None:
            self.expert_of_step = [expert_index(self.timesteps[i], boundary) for i in range(n_steps)]
        else:
            self.expert_of_step = [0] * n_steps
        n_experts = max(self.expert_of_step) + 1
        first_t = [self.timesteps[self.expert_of_step.index(e)] for e in range(n_experts)]
        # expert e starts from the teacher expert that serves its first step's time
        self.source_of_expert = [0 if len(sources) == 1 or boundary is None else expert_index(t, boundary)
                                 for t in first_t]
        self._trainable: set[int] = set()
        self._autocast = autocast_dtype_of(bundle)
        self.experts: list[nn.Module]
        if self.kind == "full":
            self.experts = [_freeze(copy.deepcopy(sources[src])).train() for src in self.source_of_expert]
            self.backbones: list[nn.Module] = []
        else:
            self.experts, self.backbones = self._build_lora(sources, cfg, bundle)
        self.set_trainable([])

    def _build_lora(self, sources: list[nn.Module], cfg: DistillConfig,
                    bundle: ModelBundle) -> tuple[list[nn.Module], list[nn.Module]]:
        from peft import LoraConfig, inject_adapter_in_model

        targets = cfg.generator.target_modules or bundle.lora_target_modules
        if not targets:
            raise ValueError("generator.kind 'lora' needs generator.target_modules or the bundle's "
                             "lora_target_modules")
        lora_cfg = LoraConfig(r=cfg.generator.rank, lora_alpha=cfg.generator.alpha, target_modules=targets,
                              lora_dropout=cfg.generator.dropout)
        backbones: dict[int, nn.Module] = {}
        experts: list[nn.Module] = []
        for e, src in enumerate(self.source_of_expert):
            if src not in backbones:
                backbones[src] = _freeze(copy.deepcopy(sources[src])).train()
            # a meta backbone (dry run) gets meta adapters: nothing is allocated or initialised
            on_meta = any(p.is_meta for p in backbones[src].parameters())
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(lora_cfg, backbones[src], adapter_name=self.adapter_name(e),
                                        low_cpu_mem_usage=on_meta)
            experts.append(_LoRAExpert(backbones[src], self.adapter_name(e), self._apply_trainable))
        return experts, [backbones[k] for k in sorted(backbones)]

    @staticmethod
    def adapter_name(e: int) -> str:
        return f"expert{e}"

    @torch.no_grad()
    def initialise_adapters(self, seed: int) -> None:
        """peft's default LoRA init (A ~ kaiming-uniform(a=√5), B = 0), drawn from a generator seeded per tensor
        name: the same values whether the backbone was built whole, sharded, or empty and filled later (meta
        tensors of a dry run are left alone)."""
        if self.kind == "full":
            return
        for e in range(len(self.experts)):
            for name, param in self._owned(e):
                if param.is_meta:
                    continue
                value = torch.zeros(param.shape, dtype=param.dtype)
                if ".lora_A." in name:
                    draw = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                    nn.init.kaiming_uniform_(value, a=math.sqrt(5), generator=draw)
                elif ".lora_B." not in name:
                    raise ValueError(f"no initialisation rule for adapter tensor {name!r} (LoRA A/B only)")
                copy_into(param, value)

    # ---- which parameters train
    def _owned(self, e: int) -> list[tuple[str, nn.Parameter]]:
        """The parameters that belong to expert e alone (full weights, or its adapter tensors)."""
        if self.kind == "full":
            return list(self.experts[e].named_parameters())
        tag = f".{self.adapter_name(e)}."
        expert = self.experts[e]
        assert isinstance(expert, _LoRAExpert)
        return [(n, p) for n, p in expert.backbone.named_parameters() if tag in n]

    def _apply_trainable(self) -> None:
        for e in range(len(self.experts)):
            for _, p in self._owned(e):
                p.requires_grad_(e in self._trainable)

    def set_trainable(self, experts: Sequence[int]) -> None:
        self._trainable = set(experts)
        for b in self.backbones:
            _freeze(b)
        self._apply_trainable()

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"{e}.{n}", p) for e in sorted(self._trainable) for n, p in self._owned(e)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.trainable_named_parameters()]

    def experts_for_phase(self, phase: int, method: str) -> list[int]:
        """Experts trained in this phase: phased → expert k only; other methods → every expert."""
        return [phase] if method == "phased" else list(range(len(self.experts)))

    # ---- calls and state
    def step_velocity(self, step: int, x: Tensor, t: Tensor, cond: Conditioning | None) -> Tensor:
        return autocast_forward(self.experts[self.expert_of_step[step]], self._autocast)(x, t, cond)

    def expert_tensors(self, e: int) -> dict[str, Tensor]:
        """What training changes in expert e (full weights + buffers, or the adapter tensors), as detached views
        of the live tensors (DTensors when sharded): what a distributed checkpoint writes and loads in place."""
        return {n: p.detach() for n, p in self._owned(e)} | (
            {f"buffer:{n}": b.detach() for n, b in self.experts[e].named_buffers()} if self.kind == "full" else {})

    def expert_state(self, e: int) -> dict[str, Tensor]:
        return {n: t.clone() for n, t in self.expert_tensors(e).items()}

    @torch.no_grad()
    def load_expert_state(self, e: int, state: dict[str, Tensor]) -> None:
        owned = dict(self._owned(e))
        buffers = dict(self.experts[e].named_buffers()) if self.kind == "full" else {}
        for name, value in state.items():
            if name.startswith("buffer:"):
                buffers[name[len("buffer:"):]].copy_(value)
            elif name in owned:
                copy_into(owned[name], value)  # a DTensor parameter takes a full tensor or its shard
            else:
                raise KeyError(f"checkpoint holds '{name}', which expert {e} does not have")

    def modules(self) -> list[nn.Module]:
        """The modules holding the experts' weights: the full experts, or the LoRA-carrying backbones."""
        return list(self.experts if self.kind == "full" else self.backbones)

    def total_parameters(self) -> int:
        mods = self.modules()
        return sum(count_parameters(list(m.parameters())) for m in mods)


class EMA:
    """Exponential moving average of named parameters: shadow ← d·shadow + (1 − d)·param."""

    def __init__(self, named: list[tuple[str, nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.params = dict(named)
        self.shadow = {n: p.detach().clone() for n, p in named}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for n, p in self.params.items():
            p.copy_(self.shadow[n])

    def state_dict(self) -> dict[str, Tensor]:
        return {n: s.clone() for n, s in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for n in self.shadow:
            copy_into(self.shadow[n], state[n])
