"""Build real-scale transformers without weights and load each rank's FSDP2 shard straight from safetensors.

A Wan2.2-A14B run holds a teacher (2 x 14B), fake scores (2 x 14B) and generator backbones in fp32: building
them whole on every rank before sharding needs hundreds of GB per process. With `weights: sharded` (the
default under FSDP2 with several ranks) the transformers are built on the meta device (parameters only;
buffers such as Wan's rotary tables are real and small), the trainer deep-copies and shards the role modules
while they are still empty, and then every role module is materialised: its parameters are allocated at
their sharded size on the training device and this rank's rows are read from the diffusers checkpoint
(`diffusion_pytorch_model*.safetensors`, sharded or not) with safetensors' slicing, so no process ever holds a
full copy. Parameters the checkpoint lacks (peft LoRA adapters) are left for their owner to initialise.

FSDP2 (`fully_shard`) shards every parameter on dim 0 like `torch.chunk`: rank r holds rows
[r * ceil(n / W), ...) — `local_rows` reproduces that layout, and the tests check it against FSDP2's own
`full_tensor()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

WEIGHTS_ATTRIBUTE = "_pdmd_weights_source"  # set on a transformer built empty; deep copies carry it
_INDEX = "diffusion_pytorch_model.safetensors.index.json"
_SINGLE = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class WeightsSource:
    """Where an empty transformer's weights live: a diffusers component folder (e.g. `<model>/transformer_2`)."""

    folder: Path
    dtype: torch.dtype


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a diffusers component folder (single file or index + shards)."""
    index = folder / _INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {key: folder / name for key, name in weight_map.items()}
    single = folder / _SINGLE
    files = [single] if single.is_file() else sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder} (expected {_SINGLE} or {_INDEX})")
    from safetensors import safe_open

    keys: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update({key: file for key in handle.keys()})  # noqa: SIM118 (safe_open is not a mapping)
    return keys


def checkpoint_key(parameter_name: str) -> str:
    """A parameter's name in the diffusers checkpoint: peft wraps targeted layers as `<layer>.base_layer`."""
    return parameter_name.replace(".base_layer.", ".")


def local_rows(param: Tensor) -> tuple[Tensor, int, int]:
    """(this rank's local tensor, first global row, row count) of a parameter, sharded by FSDP2 or not."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(param, DTensor):
        return param, 0, param.shape[0] if param.dim() else 0
    placements = tuple(param.placements)
    if param.device_mesh.ndim != 1 or placements != (Shard(0),):
        raise ValueError(f"sharded loading reads FSDP2's dim-0 shards on a 1-D mesh; this parameter is laid out "
                         f"as {placements} on a {param.device_mesh.ndim}-D mesh")
    local = param.to_local()
    rows = param.shape[0]
    chunk = math.ceil(rows / param.device_mesh.size())
    start = min(param.device_mesh.get_local_rank() * chunk, rows)
    return local, start, local.shape[0]


def empty_parameters(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


@torch.no_grad()
def materialize_from_checkpoint(transformer: nn.Module, device: torch.device) -> list[str]:
    """Allocate an empty (meta) transformer on `device` at its (possibly sharded) size and read its weights from
    the checkpoint it was built for. Returns the parameter names the checkpoint does not hold (LoRA adapters),
    which stay uninitialised; any other missing or mis-shaped tensor is an error."""
    source: WeightsSource | None = getattr(transformer, WEIGHTS_ATTRIBUTE, None)
    if source is None:
        raise ValueError(f"{type(transformer).__name__} was built empty without a weights source to load from")
    buffers = {name: b.detach().clone() for name, b in transformer.named_buffers() if not b.is_meta}
    transformer.to_empty(device=device)
    for name, value in transformer.named_buffers():
        if name in buffers:
            value.copy_(buffers[name])
    files = checkpoint_files(source.folder)
    not_in_checkpoint: list[str] = []
    with ExitStack() as stack:
        from safetensors import safe_open

        handles: dict[Path, Any] = {}
        for name, param in transformer.named_parameters():
            key = checkpoint_key(name)
            if key not in files:
                not_in_checkpoint.append(name)
                continue
            file = files[key]
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(str(file), framework="pt"))
            _read_rows(handles[file].get_slice(key), key, param)
    return not_in_checkpoint


def _read_rows(stored: Any, key: str, param: Tensor) -> None:
    shape = tuple(stored.get_shape())
    if shape != tuple(param.shape):
        raise ValueError(f"checkpoint tensor {key!r} has shape {shape}, the model expects {tuple(param.shape)}")
    local, start, count = local_rows(param)
    if not shape:
        local.copy_(stored[...])
    elif count:
        local.copy_(stored[start:start + count])  # copy_ converts the stored dtype


def require_only_adapters(missing: Iterable[str], folder: Path) -> None:
    """Only peft adapter tensors may be absent from a base checkpoint."""
    unexpected = [name for name in missing if "lora_" not in name]
    if unexpected:
        raise KeyError(f"{folder} lacks {len(unexpected)} weights the model needs, e.g. {unexpected[:3]}")


def build_empty(cls: Any, source: WeightsSource) -> nn.Module:
    """The diffusers class built from the folder's config.json with meta parameters (real buffers), tagged
    with `source`. Parameter dtypes follow `from_pretrained(dtype=...)`: `_keep_in_fp32_modules` stay fp32."""
    from accelerate import init_empty_weights

    if not (source.folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {source.folder}: model.model_path must be a diffusers model "
                                f"folder")
    with init_empty_weights(include_buffers=False):
        model: Any = cls.from_config(cls.load_config(str(source.folder)))
    if source.dtype != torch.float32:
        keep = set(getattr(cls, "_keep_in_fp32_modules", None) or [])
        for name, param in model.named_parameters():
            if not keep.intersection(name.split(".")):
                param.data = param.data.to(source.dtype)
    setattr(model, WEIGHTS_ATTRIBUTE, source)
    return model  # type: ignore[no-any-return]


def local_model_folder(source: str, subfolder: str) -> Path:
    """`<source>/<subfolder>` for a local diffusers folder; a hub id resolves through the local HF cache or a
    download of that subfolder only (huggingface_hub)."""
    if Path(source).is_dir():
        return Path(source) / subfolder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=[f"{subfolder}/*"])) / subfolder
    except Exception as err:  # offline, unknown repo, no access: one message that says what to do
        raise FileNotFoundError(f"could not find {source!r} locally or download its {subfolder!r} weights: "
                                f"{err}. Download the diffusers checkpoint (`hf download {source} --local-dir "
                                f"DIR`) and set model.model_path: DIR") from None


@torch.no_grad()
def own_cpu_storage(module: nn.Module) -> nn.Module:
    """Copy every CPU parameter and buffer of `module` into memory of its own (torch's 64-byte-aligned allocator).

    diffusers' `from_pretrained` on the CPU leaves tensors inside the memory-mapped safetensors file, at whatever
    byte offset the file's header gives them. BLAS kernels (MKL on AMD CPUs, seen as a bit-level difference in
    `test_fsdp_trainer`) choose their code path by operand alignment, so the same weights read whole or
    shard by shard (`build_empty` + `materialize_from_checkpoint`, always allocator memory) could compute
    different last bits. After this copy both load paths hand the kernels the same layout. GPU loads already copy
    (`.to(cuda)`), so callers use this on CPU modules only. Tied parameters stay tied (one Parameter object)."""
    for param in module.parameters():
        if param.device.type == "cpu":
            param.data = param.data.clone(memory_format=torch.contiguous_format)
    for sub in module.modules():
        for name, buf in sub._buffers.items():
            if buf is not None and buf.device.type == "cpu":
                sub._buffers[name] = buf.clone(memory_format=torch.contiguous_format)
    return module
