"""The `toy1d` stage: the paper's Fig. 2 toy (the subinterval target of Eq. 13 vs the naive one on (s, 1]) as
reports/toy1d/subinterval.{json,png}, from the params' `toy1d.config` with `toy1d.overrides` applied."""

from __future__ import annotations

import json
from typing import Any

import yaml

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams, deep_merge
from pdmd_pipeline.stages.common import StageError


def stage_toy1d(params: PipelineParams, layout: Layout) -> dict[str, Any]:
    """The paper's Fig. 2 toy (as `pdmd toy1d`): reports/toy1d/subinterval.{json,png} from `toy1d.config` with
    `toy1d.overrides` applied."""
    import torch
    from pydantic import ValidationError

    from pdmd_core.config import ConfigError, format_validation_error
    from pdmd_core.cpu_tier.config import BenchmarkConfig
    from pdmd_core.cpu_tier.subinterval_toy import plot_subinterval_toy, run_subinterval_toy
    from pdmd_core.cpu_tier.train import configure_cpu

    path = layout.root / params.toy1d.config
    if not path.is_file():
        raise StageError(f"toy1d.config = {params.toy1d.config!r}: no such file under {layout.root}")
    try:
        cfg = BenchmarkConfig.model_validate(deep_merge(yaml.safe_load(path.read_text()) or {}, params.toy1d.overrides))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{path} with toy1d.overrides")) from None
    if cfg.benchmark != "toy1d" or cfg.subinterval is None:
        raise StageError(f"toy1d.config = {params.toy1d.config!r} must be a toy1d config with a `subinterval:` "
                         f"section (got benchmark {cfg.benchmark!r})")
    configure_cpu(params.torch_threads)
    torch.manual_seed(cfg.seed)
    result = run_subinterval_toy(cfg.data.atoms, cfg.subinterval, cfg.seed, False)  # type: ignore[union-attr]
    out = layout.toy1d()
    out.mkdir(parents=True, exist_ok=True)
    plot_subinterval_toy(result, str(out / "subinterval.png"), cfg.subinterval.s)
    report = {**result.report, "figure": "subinterval.png", "config": params.toy1d.config,
              "overrides": params.toy1d.overrides}
    (out / "subinterval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
