"""The model registry: named builders that return a `ModelBundle` for the trainer.

API:
- `ModelBundle(teacher, prompt_source, sample_shape, moe_boundary=None, teacher_experts=None,
  lora_target_modules=None, name="")`:
    teacher: nn.Module velocity model v = teacher(x_t, t, cond) (pdmd_core.protocols.VelocityModel). For a
        two-expert MoE teacher also give `teacher_experts=[high_noise_expert, low_noise_expert]` and
        `moe_boundary` b: expert 0 serves t >= b, expert 1 serves t < b (Wan2.2 convention). The trainer then
        builds one fake score per expert and initialises generator experts from the matching teacher expert.
    prompt_source.sample(batch_size, generator) -> (cond, null_cond): training conditionings (either may be
        None for an unconditional model); `generator` is the trainer's torch.Generator (determinism).
    sample_shape: shape of one sample without the batch dim, e.g. (C, H, W) or (D,).
    lora_target_modules: default module names for LoRA generator experts.
    materialize(module, device): fills a role module whose parameters are still empty (meta device), after the
        trainer has built (and possibly sharded) it: a builder that defers its weights (real-scale
        `weights: sharded`) gives it; the trainer calls it on every role module that holds meta parameters.
- `@register_model("kind")` on a builder `fn(params: dict, device) -> ModelBundle`.
- `build_model(kind, params, device) -> ModelBundle`. Kinds are found in modules listed in MODEL_MODULES
  (imported in order until one registers the kind; other packages append their module path), in entry points
  of group `pdmd.models`, or given directly as "package.module:function".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pdmd_core.protocols import Conditioning

# Modules imported (if importable) before a kind is looked up; each registers its builders on import.
MODEL_MODULES: list[str] = [
    "pdmd_core.models.mlp",
    "pdmd_core.cpu_tier.models",
    "pdmd_core.realscale.models",
]


@runtime_checkable
class PromptSource(Protocol):
    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning | None,
                                                                           Conditioning | None]: ...


@dataclass
class ModelBundle:
    teacher: nn.Module
    prompt_source: PromptSource
    sample_shape: tuple[int, ...]
    moe_boundary: float | None = None
    teacher_experts: Sequence[nn.Module] | None = None
    lora_target_modules: list[str] | None = None
    name: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    materialize: Callable[[nn.Module, torch.device], None] | None = None

    def __post_init__(self) -> None:
        if self.teacher_experts is not None:
            if self.moe_boundary is None:
                raise ValueError("teacher_experts given without moe_boundary")
            if len(self.teacher_experts) != 2:
                raise ValueError(f"an MoE teacher needs exactly 2 experts (high, low), got "
                                 f"{len(self.teacher_experts)}")
        if self.moe_boundary is not None and not 0.0 < self.moe_boundary < 1.0:
            raise ValueError(f"moe_boundary must be in (0, 1), got {self.moe_boundary}")

    @property
    def is_moe(self) -> bool:
        return self.teacher_experts is not None


Builder = Callable[[dict[str, Any], torch.device], ModelBundle]
_BUILDERS: dict[str, Builder] = {}


def register_model(kind: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if kind in _BUILDERS and _BUILDERS[kind] is not fn:
            raise ValueError(f"model kind '{kind}' is already registered by {_BUILDERS[kind].__module__}")
        _BUILDERS[kind] = fn
        return fn

    return deco


def _load_known_modules(until: str | None = None) -> None:
    """Import the builder modules in order (all of them, or until one has registered `until`, so building a
    CPU-tier model never imports the real-scale adapters), then the `pdmd.models` entry points."""
    for name in MODEL_MODULES:
        if until is not None and until in _BUILDERS:
            return
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise  # a real missing dependency inside an existing module must not be hidden
    if until is not None and until in _BUILDERS:
        return
    for ep in entry_points(group="pdmd.models"):
        ep.load()


def available_models() -> list[str]:
    _load_known_modules()
    return sorted(_BUILDERS)


def build_model(kind: str, params: dict[str, Any] | None = None,
                device: torch.device | str = "cpu") -> ModelBundle:
    device = torch.device(device)
    if ":" in kind:
        module, _, attr = kind.partition(":")
        builder: Builder = getattr(importlib.import_module(module), attr)
    else:
        if kind not in _BUILDERS:
            _load_known_modules(until=kind)
        if kind not in _BUILDERS:
            raise ValueError(f"unknown model kind '{kind}'; registered: {sorted(_BUILDERS)}")
        builder = _BUILDERS[kind]
    bundle = builder(dict(params or {}), device)
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"builder for '{kind}' returned {type(bundle).__name__}, expected ModelBundle")
    return bundle
