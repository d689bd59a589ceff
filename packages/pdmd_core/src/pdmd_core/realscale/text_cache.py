"""Prompt-embedding cache: encode a prompt set once with the pipeline's own text encoder, train without it.

The stage runs WanPipeline / QwenImagePipeline `encode_prompt` (so the embeddings are exactly what the
pipeline would feed its transformer at sampling time), pads every prompt to one length, and writes one
safetensors file: `embeds` (N, L, D), `mask` (N, L) uint8, `null_embeds` / `null_mask` (1, L, ...) for the
negative/empty prompt used by CFG, with the prompts and settings in the file's metadata. Training loads it
through `CachedPromptEncoder`, which implements pdmd's `PromptEncoder` protocol.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pdmd_core.protocols import Conditioning

FAMILIES = ("wan", "qwen_image")


@dataclass
class PromptEmbeddings:
    """Embeddings of a prompt list plus the null (negative) prompt, all padded to one length L."""

    family: str
    prompts: list[str]
    embeds: Tensor  # (N, L, D)
    mask: Tensor  # (N, L) bool
    null_embeds: Tensor  # (1, L, D)
    null_mask: Tensor  # (1, L) bool
    negative_prompt: str = ""

    def prompt_set_hash(self) -> str:
        return hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()[:16]


def encode_prompts(pipeline: Any, family: str, prompts: Sequence[str], *, batch_size: int = 8,
                   max_sequence_length: int | None = None, negative_prompt: str = "",
                   progress: bool = True) -> PromptEmbeddings:
    """Run the pipeline's own `encode_prompt` over `prompts` (and the negative prompt) in batches."""
    from tqdm.auto import tqdm

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if not prompts:
        raise ValueError("no prompts to encode")
    encode = _encode_wan if family == "wan" else _encode_qwen
    chunks = [list(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
    pieces = [encode(pipeline, chunk, max_sequence_length)
              for chunk in tqdm(chunks, desc="encoding prompts", disable=not progress)]
    null = encode(pipeline, [negative_prompt], max_sequence_length)
    length = max(e.shape[1] for e, _ in [*pieces, null])
    embeds = torch.cat([_pad(e, length) for e, _ in pieces])
    mask = torch.cat([_pad(m, length) for _, m in pieces])
    return PromptEmbeddings(family, list(prompts), embeds, mask, _pad(null[0], length), _pad(null[1], length),
                            negative_prompt)


@torch.no_grad()
def _encode_wan(pipeline: Any, prompts: list[str], max_sequence_length: int | None) -> tuple[Tensor, Tensor]:
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    length = max_sequence_length or 512
    embeds, _ = pipeline.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                       max_sequence_length=length, device=pipeline._execution_device)
    # WanPipeline zero-pads after the real tokens; recover which positions are real from its tokenizer.
    tokens = pipeline.tokenizer([prompt_clean(p) for p in prompts], padding="max_length", max_length=length,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
    return embeds.cpu(), tokens.attention_mask.bool()


@torch.no_grad()
def _encode_qwen(pipeline: Any, prompts: list[str], max_sequence_length: int | None) -> tuple[Tensor, Tensor]:
    embeds, mask = pipeline.encode_prompt(prompt=prompts, device=pipeline._execution_device,
                                          max_sequence_length=max_sequence_length or 1024)
    if mask is None:  # the pipeline drops an all-true mask
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
    return embeds.cpu(), mask.bool().cpu()


def _pad(x: Tensor, length: int) -> Tensor:
    if x.shape[1] == length:
        return x
    pad = x.new_zeros((x.shape[0], length - x.shape[1], *x.shape[2:]))
    return torch.cat([x, pad], dim=1)


def save_prompt_embeddings(cache: PromptEmbeddings, path: Path | str) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "embeds": cache.embeds.contiguous(), "mask": cache.mask.to(torch.uint8).contiguous(),
        "null_embeds": cache.null_embeds.contiguous(), "null_mask": cache.null_mask.to(torch.uint8).contiguous(),
    }
    metadata = {"family": cache.family, "prompts": json.dumps(cache.prompts),
                "negative_prompt": cache.negative_prompt, "prompt_set_hash": cache.prompt_set_hash()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_prompt_embeddings(path: Path | str) -> PromptEmbeddings:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt-embedding cache {path} does not exist; create it with `pdmd embed-prompts`")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    t = load_file(str(path))
    return PromptEmbeddings(meta["family"], json.loads(meta["prompts"]), t["embeds"], t["mask"].bool(),
                            t["null_embeds"], t["null_mask"].bool(), meta.get("negative_prompt", ""))


class CachedPromptEncoder:
    """pdmd `PromptEncoder` over a prompt-embedding cache: no text encoder in memory during training."""

    def __init__(self, cache: PromptEmbeddings, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> None:
        self.cache = cache
        self.device = torch.device(device)
        self.dtype = dtype or cache.embeds.dtype
        self._row = {p: i for i, p in enumerate(cache.prompts)}

    @classmethod
    def from_file(cls, path: Path | str, device: torch.device | str = "cpu",
                  dtype: torch.dtype | None = None) -> CachedPromptEncoder:
        return cls(load_prompt_embeddings(path), device, dtype)

    @property
    def prompts(self) -> list[str]:
        return list(self.cache.prompts)

    def encode(self, prompts: list[str]) -> Conditioning:
        missing = [p for p in prompts if p not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} prompt(s) not in the embedding cache, e.g. {missing[0]!r}; "
                           f"re-run `pdmd embed-prompts` with them")
        rows = torch.tensor([self._row[p] for p in prompts])
        return self._cond(self.cache.embeds[rows], self.cache.mask[rows])

    def encode_indices(self, rows: Tensor) -> Conditioning:
        return self._cond(self.cache.embeds[rows.cpu()], self.cache.mask[rows.cpu()])

    def null(self, batch_size: int) -> Conditioning:
        return self._cond(self.cache.null_embeds.expand(batch_size, -1, -1),
                          self.cache.null_mask.expand(batch_size, -1))

    def _cond(self, embeds: Tensor, mask: Tensor) -> Conditioning:
        return Conditioning(embeds.to(self.device, self.dtype), mask.to(self.device))
