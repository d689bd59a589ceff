"""Per-GPU memory plan of a real-scale run: persistent state from the role sizes, activations estimated.

Persistent state per role: weights (the configured dtype), and for trainable parameters fp32 gradients,
AdamW's two fp32 moments and the optional fp32 EMA. Under FSDP2 (`fully_shard`) all of it is sharded over
the GPUs. Activations are an estimate for one forward-with-grad at a time (phased DMD records one model
call per update): with activation checkpointing each block keeps its input (tokens x hidden, bf16) and one
block is recomputed at a time; without it every block keeps ~ (10 hidden + ffn) values per token. Context
parallelism divides the tokens. Figures are a plan, not a measurement.
"""

from __future__ import annotations

import math
from typing import Any

GIB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def tokens_per_sample(arch: Any, shape: tuple[int, ...]) -> int:
    if arch.family == "wan":
        p_t, p_h, p_w = arch.transformer["patch_size"]
        _, frames, height, width = shape
        return (frames // p_t) * (height // p_h) * (width // p_w)
    p = arch.transformer["patch_size"]
    _, height, width = shape
    return (height // p) * (width // p)


def activation_bytes(arch: Any, shape: tuple[int, ...], batch_per_gpu: int, checkpointing: bool,
                     context_parallel: int) -> int:
    cfg = arch.transformer
    hidden = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    ffn = cfg.get("ffn_dim", 4 * hidden)
    layers = cfg["num_layers"]
    tokens = math.ceil(tokens_per_sample(arch, shape) / context_parallel) * batch_per_gpu
    per_block_full = tokens * (10 * hidden + ffn) * 2
    if checkpointing:
        return layers * tokens * hidden * 2 + per_block_full
    return layers * per_block_full


def plan_memory(params: Any, arch: Any, shape: tuple[int, ...], cfg: Any,
                roles: dict[str, dict[str, int]]) -> dict[str, Any]:
    world = params.gpus
    shard = world if params.fsdp else 1
    weight_bytes = _BYTES[params.dtype]
    weights = (roles["teacher"]["params"] + roles["fake"]["params"] + roles["generator"]["params"]) * weight_bytes
    trainable = roles["fake"]["trainable"] + roles["generator"]["trainable"]
    grads = 4 * trainable
    optimiser = 8 * trainable
    ema = 4 * roles["generator"]["trainable"] if getattr(cfg.optim, "ema_decay", None) else 0
    batch_per_gpu = max(1, math.ceil(cfg.batch_size * params.context_parallel / world))
    activations = activation_bytes(arch, shape, batch_per_gpu, params.activation_checkpointing,
                                   params.context_parallel)
    per_gpu = {"weights": weights / shard, "gradients": grads / shard, "optimiser": optimiser / shard,
               "ema": ema / shard, "activations_estimate": float(activations)}
    total = sum(per_gpu.values())
    return {
        "gpus": world, "sharding": "fsdp2 fully_shard" if params.fsdp else "replicated (DDP)",
        "context_parallel": params.context_parallel, "batch_per_gpu": batch_per_gpu,
        "latent_shape": list(shape), "tokens_per_sample": tokens_per_sample(arch, shape),
        "weights_dtype": params.dtype, "activation_checkpointing": params.activation_checkpointing,
        "per_gpu_gib": {k: round(v / GIB, 2) for k, v in per_gpu.items()} | {"total": round(total / GIB, 2)},
    }
