"""Mode statistics for 2-D Gaussian mixtures (the ``mog2d`` benchmark of the CPU tier).

Meta keys read from the sample set's ``meta.json`` ``extras`` (written by the CPU-tier helper):

- ``mode_centers``: list of ``[x, y]``, one per mixture component (required);
- ``mode_prompt``: list of prompt ids, ``mode_prompt[m]`` is the prompt whose conditional contains mode ``m``
  (optional; absent = unconditional, every mode belongs to every prompt);
- ``mode_std``: the components' standard deviation, a float or one per mode (required).

A sample is *near* mode ``m`` when its distance to the centre is at most ``NEAR_STDS × mode_std[m]``
(3 σ: 98.9 % of a 2-D isotropic Gaussian's mass lies within 3 σ).

Statistics (all per prompt or per sample, so they get bootstrap CIs):

- ``modes_covered`` ↑ per prompt: fraction of the prompt's modes with at least one near sample of that prompt.
- ``mode_balance`` ↑ per prompt: normalised entropy ``H / log(M_p)`` of the prompt's samples' assignment to
  their nearest own mode (1 = uniform over the ``M_p`` modes; a prompt with one mode scores 1).
- ``near_mode`` ↑ per sample: 1 if the sample is near any mode.
- ``mode_adherence`` ↑ per sample: 1 if the sample's nearest mode (over all modes) belongs to its prompt.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NEAR_STDS = 3.0


@dataclass(frozen=True)
class Mixture:
    centers: np.ndarray  # M×2
    stds: np.ndarray  # M
    prompts: list[Hashable] | None  # prompt id per mode, None = unconditional

    def modes_of(self, prompt_id: Hashable) -> np.ndarray:
        if self.prompts is None:
            return np.arange(len(self.centers))
        return np.array([m for m, p in enumerate(self.prompts) if p == prompt_id], dtype=int)


def mixture_from_extras(extras: dict[str, Any]) -> Mixture:
    """Read :class:`Mixture` from meta extras; errors name the missing or malformed key."""
    if "mode_centers" not in extras:
        raise KeyError("meta.json extras lack 'mode_centers' (list of [x, y]) needed for mode statistics")
    if "mode_std" not in extras:
        raise KeyError("meta.json extras lack 'mode_std' (float or one per mode) needed for mode statistics")
    centers = np.asarray(extras["mode_centers"], dtype=np.float64)
    if centers.ndim != 2:
        raise ValueError(f"mode_centers must be a list of coordinate lists, got shape {centers.shape}")
    stds = np.broadcast_to(np.asarray(extras["mode_std"], dtype=np.float64), (len(centers),)).copy()
    prompts = extras.get("mode_prompt")
    if prompts is not None and len(prompts) != len(centers):
        raise ValueError(f"mode_prompt has {len(prompts)} entries for {len(centers)} mode_centers")
    return Mixture(centers, stds, list(prompts) if prompts is not None else None)


def _distances(points: np.ndarray, mixture: Mixture) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != mixture.centers.shape[1]:
        raise ValueError(f"points must be N×{mixture.centers.shape[1]}, got shape {pts.shape}")
    return np.linalg.norm(pts[:, None, :] - mixture.centers[None], axis=-1)


def near_mode(points: np.ndarray, mixture: Mixture) -> np.ndarray:
    """Per-sample 0/1: within ``NEAR_STDS`` σ of some mode."""
    near = _distances(points, mixture) <= NEAR_STDS * mixture.stds[None]
    return np.asarray(near.any(axis=1), dtype=np.float64)


def mode_adherence(points: np.ndarray, prompt_ids: Sequence[Hashable], mixture: Mixture) -> np.ndarray:
    """Per-sample 0/1: the nearest mode belongs to the sample's prompt."""
    nearest = _distances(points, mixture).argmin(axis=1)
    return np.array([float(m in mixture.modes_of(p)) for m, p in zip(nearest, prompt_ids, strict=True)])


def _own_modes(prompt_id: Hashable, mixture: Mixture) -> np.ndarray:
    own = mixture.modes_of(prompt_id)
    if own.size == 0:
        raise ValueError(f"prompt_id {prompt_id!r} owns no mode in mode_prompt")
    return own


def modes_covered(points: np.ndarray, prompt_id: Hashable, mixture: Mixture) -> float:
    """Fraction of the prompt's modes with at least one near sample among ``points`` (this prompt's samples)."""
    own = _own_modes(prompt_id, mixture)
    near = _distances(points, mixture)[:, own] <= NEAR_STDS * mixture.stds[own][None]
    return float(near.any(axis=0).mean())


def mode_balance(points: np.ndarray, prompt_id: Hashable, mixture: Mixture) -> float:
    """Normalised entropy of the nearest-own-mode histogram of one prompt's samples."""
    own = _own_modes(prompt_id, mixture)
    if own.size == 1:
        return 1.0
    nearest = _distances(points, mixture)[:, own].argmin(axis=1)
    p = np.bincount(nearest, minlength=own.size) / len(nearest)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(own.size))
