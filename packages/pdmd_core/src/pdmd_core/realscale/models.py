"""Model kinds `wan` and `qwen_image` for the trainer's registry (`model: {kind: wan, ...}` in a config).

Builder params (validated; unknown keys are rejected):
  architecture   name in `realscale.architectures.ARCHITECTURES` (e.g. wan2.2-t2v-a14b, qwen-image, tiny-wan2.2)
  model_path     diffusers-format folder (or hub id) holding the weights; default: the architecture's repo id
  prompt_cache   safetensors written by `pdmd embed-prompts` (required to train; not for --dry-run)
  i2v_cache      safetensors with per-prompt first-frame conditions (`pdmd embed-images`), I2V/TI2V only;
                 one table per training resolution (all entries of a mixture), checked when the model is built
  resolution     [frames, height, width] in pixels of the training samples
  resolutions    optional mixture [[frames, height, width, probability], ...] (paper §3.7): each batch's
                 shape is drawn from it (bundle extra `sample_shape_sampler`); the memory plan takes its
                 largest entry; `sample_shape` is `resolution` or else the mixture's most probable entry
  dtype          weights dtype: float32 (default; fake-score AdamW at lr 4e-7 needs fp32 master weights) or
                 bfloat16; compute on GPU runs under bf16 autocast (`autocast_dtype`)
  gpus, fsdp, activation_checkpointing: the distributed plan (training and the memory plan)
  context_parallel  memory-plan what-if only (tokens split over GPUs); training refuses values > 1
  weights        auto (default) | full | sharded. `full`: every rank loads whole transformers with
                 from_pretrained, then shards. `sharded`: transformers are built empty and every rank reads
                 only its FSDP2 shards from the safetensors after the trainer has sharded its roles
                 (realscale.sharded_weights) — what lets 14B/20B roles fit. `auto`: sharded when `fsdp` is on
                 and torch.distributed runs with several ranks, else full
On device "meta" the transformers are built from the architecture's config without weights: parameter
counts and memory plans for 14B/20B models in seconds (`pdmd train PRESET --dry-run`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from pdmd_core.models.moe import MoEVelocity
from pdmd_core.models.registry import ModelBundle, register_model
from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.architectures import Architecture, get_architecture, latent_shape
from pdmd_core.realscale.memory_plan import tokens_per_sample
from pdmd_core.realscale.text_cache import CachedPromptEncoder

LORA_TARGETS = {
    "wan": ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"],
    "qwen_image": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                   "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"],
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RealScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: str
    model_path: str | None = None
    prompt_cache: str | None = None
    i2v_cache: str | None = None
    resolution: tuple[int, int, int] | None = None
    resolutions: list[tuple[int, int, int, float]] | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    autocast_dtype: Literal["bfloat16", "float16"] | None = "bfloat16"
    gpus: int = Field(1, ge=1)
    fsdp: bool = True
    activation_checkpointing: bool = True
    context_parallel: int = Field(1, ge=1)
    weights: Literal["auto", "full", "sharded"] = "auto"

    def loads_sharded(self) -> bool:
        if self.weights != "auto":
            return self.weights == "sharded"
        import torch.distributed as dist

        return self.fsdp and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str) -> str:
        get_architecture(v)
        return v

    @field_validator("resolutions")
    @classmethod
    def _mixture(cls, v: list[tuple[int, int, int, float]] | None) -> list[tuple[int, int, int, float]] | None:
        if v is not None:
            total = sum(p for *_, p in v)
            if not v or abs(total - 1.0) > 1e-6 or any(p <= 0 for *_, p in v):
                raise ValueError(f"resolution mixture probabilities must be > 0 and sum to 1, got {v}")
        return v

    def training_resolution(self) -> tuple[int, int, int]:
        if self.resolution is not None:
            return self.resolution
        if self.resolutions:
            frames, height, width, _ = max(self.resolutions, key=lambda r: r[3])
            return (frames, height, width)
        raise ValueError("give `resolution: [frames, height, width]` (or a `resolutions` mixture)")


def parse_params(kind: str, params: dict[str, Any]) -> tuple[RealScaleParams, Architecture]:
    try:
        parsed = RealScaleParams.model_validate(params)
    except ValidationError as err:
        raise ValueError(f"invalid params for model kind '{kind}': {err}") from None
    arch = get_architecture(parsed.architecture)
    if arch.family != kind:
        raise ValueError(f"architecture {parsed.architecture!r} is a {arch.family} model, not kind '{kind}'")
    return parsed, arch


class CachedPromptSource:
    """Training prompts drawn uniformly from a prompt-embedding cache (with I2V conditions when given)."""

    def __init__(self, encoder: CachedPromptEncoder, i2v_extras: dict[str, torch.Tensor] | None = None) -> None:
        self.encoder = encoder
        self.i2v_extras = i2v_extras or {}
        for key, table in self.i2v_extras.items():
            if table.shape[0] != len(encoder.prompts):
                raise ValueError(f"i2v cache {key!r} has {table.shape[0]} rows for {len(encoder.prompts)} prompts")

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning, Conditioning]:
        rows = torch.randint(0, len(self.encoder.prompts), (batch_size,), generator=generator,
                             device=generator.device).cpu()
        cond = self.encoder.encode_indices(rows)
        null = self.encoder.null(batch_size)
        for key, table in self.i2v_extras.items():
            value = table[rows].to(cond.embeds.device)
            cond.extras[key] = value
            null.extras[key] = value  # the image stays; CFG drops only the text
        return cond, null


class ResolutionMixture:
    """Draws one latent shape per batch with the mixture's probabilities (from the trainer's generator)."""

    def __init__(self, shapes: list[tuple[int, ...]], probabilities: list[float]) -> None:
        self.shapes = shapes
        self.probabilities = torch.tensor(probabilities, dtype=torch.float64)

    def __call__(self, generator: torch.Generator) -> tuple[int, ...]:
        index = torch.multinomial(self.probabilities.to(generator.device), 1, generator=generator)
        return self.shapes[int(index)]


class _NoPromptSource:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning, Conditioning]:
        raise ValueError(f"model kind '{self.kind}' needs `prompt_cache` (run `pdmd embed-prompts`) to train")


def _load_transformer(kind: str, arch: Architecture, params: RealScaleParams, subfolder: str,
                      device: torch.device) -> nn.Module:
    from diffusers import QwenImageTransformer2DModel, WanTransformer3DModel

    cls: Any = WanTransformer3DModel if kind == "wan" else QwenImageTransformer2DModel
    dtype = _DTYPES[params.dtype]
    if device.type == "meta":
        with torch.device("meta"):
            model: Any = cls(**arch.config_for(subfolder))
        return model if dtype == torch.float32 else model.to(dtype)
    source = params.model_path or arch.repo_id
    if not source:
        raise ValueError(f"architecture {params.architecture!r} has no published weights: set model_path")
    if params.loads_sharded():  # parameters stay empty until the trainer has sharded the roles
        from pdmd_core.realscale.sharded_weights import WeightsSource, build_empty, local_model_folder

        model = build_empty(cls, WeightsSource(local_model_folder(source, subfolder), dtype))
    else:
        model = _from_pretrained(cls, arch, source, subfolder, dtype).to(device)
        if device.type == "cpu":  # out of the mmapped file: the same memory layout as the shard-by-shard path
            from pdmd_core.realscale.sharded_weights import own_cpu_storage

            own_cpu_storage(model)
    if params.activation_checkpointing and device.type == "cuda":
        model.enable_gradient_checkpointing()
    return model.eval()  # type: ignore[no-any-return]


def _from_pretrained(cls: Any, arch: Architecture, source: str, subfolder: str, dtype: torch.dtype) -> Any:
    try:
        return cls.from_pretrained(source, subfolder=subfolder, dtype=dtype)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load {cls.__name__} weights from {source!r} (subfolder {subfolder!r}): {err}. Download the "
            f"diffusers checkpoint (e.g. `hf download {arch.repo_id or '<repo>'} --local-dir DIR`) and set "
            f"model.model_path: DIR") from None


def _velocity(kind: str, arch: Architecture, transformer: nn.Module) -> nn.Module:
    if kind == "wan":
        from pdmd_core.realscale.wan import WanVelocity

        return WanVelocity(transformer, mode=arch.mode)  # type: ignore[arg-type]
    from pdmd_core.realscale.qwen_image import QwenImageVelocity

    return QwenImageVelocity(transformer)


def _prompt_source(kind: str, params: RealScaleParams, arch: Architecture, device: torch.device,
                   shapes: list[tuple[int, ...]]) -> Any:
    if params.prompt_cache is None or device.type == "meta":
        return _NoPromptSource(kind)
    encoder = CachedPromptEncoder.from_file(params.prompt_cache, device, _DTYPES[params.dtype])
    extras: dict[str, torch.Tensor] = {}
    if arch.mode in ("i2v", "ti2v"):
        if params.i2v_cache is None:
            raise ValueError(f"{params.architecture} is image-to-video: set `i2v_cache` (`pdmd embed-images`)")
        extras = first_frame_tables(params.i2v_cache, arch.mode, shapes)
    return CachedPromptSource(encoder, extras)


def first_frame_tables(path: str, mode: str, shapes: list[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The I2V/TI2V condition tables of `path`; every latent shape training draws must have one (a resolution
    mixture would otherwise fail on the batches of its other resolutions)."""
    from safetensors.torch import load_file

    from pdmd_core.realscale.wan import condition_grid

    key = "i2v_condition" if mode == "i2v" else "first_frame_latent"
    tables = {k: v for k, v in load_file(path).items() if k == key or k.startswith(key + "@")}
    if not tables:
        raise ValueError(f"i2v_cache {path} holds no {key!r} tables (written by `pdmd embed-images --mode {mode}`)")
    cached = {condition_grid(key, tuple(v.shape)) for v in tables.values()}
    missing = sorted({condition_grid(key, (1, *s)) for s in shapes} - cached)
    if missing:
        raise ValueError(f"i2v_cache {path} has first-frame conditions for latent grids {sorted(cached)} but training "
                         f"draws {missing} too: run `pdmd embed-images` with one --resolution per entry of "
                         f"`resolution`/`resolutions`")
    return tables


def materialize_role(module: nn.Module, device: torch.device) -> None:
    """The bundle's `materialize`: a WanVelocity / QwenImageVelocity role whose transformer was built empty gets
    this rank's (sharded) weights from the checkpoint; LoRA adapters are left to the generator's own init."""
    from pdmd_core.realscale.sharded_weights import (
        WEIGHTS_ATTRIBUTE,
        materialize_from_checkpoint,
        require_only_adapters,
    )

    transformer = getattr(module, "transformer", module)
    missing = materialize_from_checkpoint(transformer, device)
    require_only_adapters(missing, getattr(transformer, WEIGHTS_ATTRIBUTE).folder)


def build_realscale(kind: str, raw: dict[str, Any], device: torch.device) -> ModelBundle:
    params, arch = parse_params(kind, raw)
    if params.context_parallel > 1 and device.type != "meta":
        raise ValueError(f"context_parallel: {params.context_parallel} is a memory-plan what-if (--dry-run); "
                         f"training splits no sequence over GPUs yet: set context_parallel: 1")
    experts = [_velocity(kind, arch, _load_transformer(kind, arch, params, sub, device))
               for sub in arch.expert_subfolders]
    frames, height, width = params.training_resolution()
    shape = latent_shape(arch, frames, height, width)
    plan_shape = shape
    if params.resolutions:
        shapes = [latent_shape(arch, f, h, w) for f, h, w, _ in params.resolutions]
        plan_shape = max(shapes, key=lambda s: tokens_per_sample(arch, s))
    extras: dict[str, Any] = {
        "architecture": params.architecture, "family": kind, "mode": arch.mode,
        "expert_subfolders": arch.expert_subfolders,
        "params": params, "memory_plan": _memory_plan_fn(params, arch, plan_shape),
        "autocast_dtype": _DTYPES[params.autocast_dtype] if params.autocast_dtype else None,
        "cfg_token_patch": _token_patch(kind, arch),
    }
    if params.resolutions:
        extras["sample_shape_sampler"] = ResolutionMixture(
            [latent_shape(arch, f, h, w) for f, h, w, _ in params.resolutions], [p for *_, p in params.resolutions])
    shapes = [latent_shape(arch, f, h, w) for f, h, w, _ in params.resolutions] if params.resolutions else [shape]
    common = dict(prompt_source=_prompt_source(kind, params, arch, device, shapes), sample_shape=shape,
                  lora_target_modules=list(LORA_TARGETS[kind]), name=params.architecture, extras=extras,
                  materialize=materialize_role if device.type != "meta" and params.loads_sharded() else None)
    if arch.is_moe:
        assert arch.boundary is not None
        return ModelBundle(MoEVelocity(experts, arch.boundary), moe_boundary=arch.boundary,
                           teacher_experts=experts, **common)  # type: ignore[arg-type]
    return ModelBundle(experts[0], **common)  # type: ignore[arg-type]


def _token_patch(kind: str, arch: Architecture) -> tuple[int, ...]:
    """The latent block one transformer token covers (teacher_cfg form `true_cfg` normalises per token):
    Qwen-Image packs 2x2 latents per token; Wan patchifies (1, 2, 2) over (frames, height, width)."""
    patch = arch.transformer["patch_size"]
    return (patch, patch) if kind == "qwen_image" else tuple(patch)


def _memory_plan_fn(params: RealScaleParams, arch: Architecture, shape: tuple[int, ...]):
    def plan(cfg: Any, roles: dict[str, dict[str, int]]) -> dict[str, Any]:
        from pdmd_core.realscale.memory_plan import plan_memory

        return plan_memory(params, arch, shape, cfg, roles)

    return plan


@register_model("wan")
def build_wan(params: dict[str, Any], device: torch.device) -> ModelBundle:
    return build_realscale("wan", params, device)


@register_model("qwen_image")
def build_qwen_image(params: dict[str, Any], device: torch.device) -> ModelBundle:
    return build_realscale("qwen_image", params, device)
