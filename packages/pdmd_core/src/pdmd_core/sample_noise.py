"""The two noise streams of one sample (prompt, sample seed `s`), as every sampler of a trained student draws them:
the CPU tier's sample stage, the real-scale study and `pdmd sample`.

- Initial noise z: `torch.randn((1, *shape))` from a CPU generator seeded `s` (the same z on every device, for every
  arm and the base model: the paper's protocol).
- Re-noise stream: the fresh noise a re-noise (DMD2) student draws between its steps, from a CPU generator seeded
  `renoise_seed(s)`, a hash of (s, `RENOISE_STREAM`) by numpy's SeedSequence. It must not be seeded `s`: its first
  draw would then be z itself, and from t = 1 a re-noise step with noise z (x̂_0 re-noised with z) is exactly an
  Euler step, so the student would be sampled by an Euler-first-step hybrid it was never trained with.

torch's CPU generator uses only the low 32 bits of its seed (mt19937), so the derived seed is a 32-bit value that
differs from the low 32 bits of `s`.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

RENOISE_STREAM = 0x52454E4F495345  # "RENOISE" in ASCII: the stream's constant in the hash of the sample seed
_LOW32 = 0xFFFFFFFF


def _sample_seed(seed: int) -> int:
    try:
        value = operator.index(seed)
    except TypeError:
        raise ValueError(f"a sample seed must be a non-negative integer, got {seed!r}") from None
    if isinstance(seed, bool) or value < 0:
        raise ValueError(f"a sample seed must be a non-negative integer, got {seed!r}")
    return value


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The seed's starting noise (1, *shape) (CPU generator, so every device and the trainer's sampler see the
    same z)."""
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(_sample_seed(seed)))


def renoise_seed(seed: int) -> int:
    """The re-noise stream's seed for sample seed `seed`: SeedSequence([seed, RENOISE_STREAM])'s first 32-bit word,
    flipped in its last bit in the (2^-32) case that it equals the low 32 bits of `seed`."""
    seed = _sample_seed(seed)
    derived = int(np.random.SeedSequence([seed, RENOISE_STREAM]).generate_state(1, np.uint32)[0])
    return derived ^ 1 if derived == seed & _LOW32 else derived


def renoise_generator(seed: int) -> torch.Generator:
    """A CPU generator of sample seed `seed`'s re-noise stream (the scheduler and the trainer's sampler draw on the
    generator's device and move the noise, so the draws are the same on every device)."""
    return torch.Generator().manual_seed(renoise_seed(seed))
