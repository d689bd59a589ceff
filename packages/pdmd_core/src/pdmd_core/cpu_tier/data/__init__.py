"""Data generators for the CPU-tier benchmarks; every one is deterministic from a seed.

`build_dataset(config.data, seed)` returns a `LabelledData` whose `train`/`val`/`test` splits hold model-space
samples (images and videos in [-1, 1]; points raw), integer prompt ids and the prompt strings.
"""

from __future__ import annotations

from pdmd_core.cpu_tier.data.base import LabelledData, Split

__all__ = ["LabelledData", "Split", "benchmark_prompts", "build_dataset"]


def benchmark_prompts(data_config) -> list[str]:  # type: ignore[no-untyped-def]
    """The benchmark's prompt strings (index = prompt id) without generating its data."""
    kind = data_config.kind
    if kind == "toy1d":
        return [""]
    if kind == "mog2d":
        from pdmd_core.cpu_tier.data.mog2d import row_prompt

        return [row_prompt(r) for r in range(data_config.grid)]
    if kind == "digits":
        from pdmd_core.cpu_tier.data.digits import digit_prompt

        return [digit_prompt(d) for d in range(10)]
    if kind == "moving_digits":
        from pdmd_core.cpu_tier.data.moving_digits import moving_prompt

        return [moving_prompt(d) for d in range(10)]
    raise ValueError(f"unknown benchmark data kind {kind!r}; allowed: toy1d, mog2d, digits, moving_digits")


def build_dataset(data_config, seed: int) -> LabelledData:  # type: ignore[no-untyped-def]
    """Dispatch on `data_config.kind` to the benchmark's generator."""
    kind = data_config.kind
    if kind == "toy1d":
        from pdmd_core.cpu_tier.data.toy1d import make_toy1d

        return make_toy1d(data_config.atoms, data_config.num_points, seed)
    if kind == "mog2d":
        from pdmd_core.cpu_tier.data.mog2d import make_mog2d

        return make_mog2d(data_config.grid, data_config.spacing, data_config.std, data_config.num_points, seed)
    if kind == "digits":
        from pdmd_core.cpu_tier.data.digits import make_digits

        return make_digits(data_config.val_fraction, data_config.test_fraction, seed)
    if kind == "moving_digits":
        from pdmd_core.cpu_tier.data.moving_digits import make_moving_digits

        return make_moving_digits(data_config, seed)
    raise ValueError(f"unknown benchmark data kind {kind!r}; allowed: toy1d, mog2d, digits, moving_digits")
