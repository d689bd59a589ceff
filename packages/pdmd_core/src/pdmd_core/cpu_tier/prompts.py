"""A deterministic prompt encoder shaped like a real text encoder (strings → (B, L, D) tokens + mask).

Words are looked up in a small built-in vocabulary (unknown words share one [unk] token), and each token gets a
fixed embedding drawn from a seeded generator plus a fixed positional embedding, so equal prompts always encode
equally and word order matters. Padding positions are zero with mask False; the empty prompt (all padding) is the
null conditioning used for classifier-free guidance, exactly as the real tier encodes "".
"""

from __future__ import annotations

import torch

from pdmd_core.protocols import Conditioning

BUILTIN_VOCABULARY: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "at", "on", "with", "and", "handwritten", "digit", "number", "moving",
    "fast", "slow", "video", "image", "point", "row", "column", "zero", "one", "two", "three", "four", "five",
    "six", "seven", "eight", "nine", *[str(d) for d in range(10)],
)
PAD_ID, UNK_ID = 0, 1


class TokenTableEncoder:
    """Implements `pdmd_core.protocols.PromptEncoder` with a fixed seeded embedding table."""

    def __init__(self, dim: int = 32, max_len: int = 8, seed: int = 0,
                 vocabulary: tuple[str, ...] = BUILTIN_VOCABULARY) -> None:
        if dim <= 0 or max_len <= 0:
            raise ValueError(f"dim and max_len must be positive, got dim={dim}, max_len={max_len}")
        self.dim, self.max_len = dim, max_len
        self.token_ids = {word: i + 2 for i, word in enumerate(dict.fromkeys(vocabulary))}
        gen = torch.Generator().manual_seed(seed)
        # Unit-variance entries, scaled so token vectors have norm ~1 like normalised text-encoder outputs.
        self.table = torch.randn(len(self.token_ids) + 2, dim, generator=gen) / dim**0.5
        self.table[PAD_ID] = 0.0
        self.positions = 0.1 * torch.randn(max_len, dim, generator=gen) / dim**0.5

    def tokenize(self, prompt: str) -> list[int]:
        words = prompt.lower().split()
        if len(words) > self.max_len:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words; this encoder takes at most {self.max_len}")
        return [self.token_ids.get(w, UNK_ID) for w in words]

    def encode(self, prompts: list[str]) -> Conditioning:
        ids = torch.full((len(prompts), self.max_len), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = self.tokenize(prompt)
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask = ids != PAD_ID
        embeds = (self.table[ids] + self.positions) * mask.unsqueeze(-1)
        return Conditioning(embeds, mask)

    def null(self, batch_size: int) -> Conditioning:
        return self.encode([""] * batch_size)
