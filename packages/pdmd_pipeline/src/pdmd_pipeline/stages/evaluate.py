"""The `evaluate` stage: every registered metric on every sample set (each arm × seed and the teacher
references) → runs/eval/<b>/units.jsonl (per-unit values) and summary.json; per-run means go to MLflow as
`eval/*` metrics, with the test split as the run's evaluation dataset input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams
from pdmd_pipeline.stages.common import data_input, read_json, reference_name, sample_sets


def per_prompt_fd(ctx: Any, extractor: str) -> tuple[list[Any], list[float]]:
    """Fréchet distance to the teacher within each prompt (same features as pdmd_eval's fd_teacher)."""
    import numpy as np

    from pdmd_eval.functional.fidelity import frechet_distance
    from pdmd_eval.samples import group_by_prompt

    feats = ctx.features("samples", extractor)
    ref_feats = ctx.features("reference", extractor)
    ref_groups = group_by_prompt(ctx.reference)
    keys, values = [], []
    for pid, idx in group_by_prompt(ctx.samples).items():
        if pid not in ref_groups:
            continue
        keys.append(pid)
        values.append(frechet_distance(np.asarray(feats[idx]), np.asarray(ref_feats[ref_groups[pid]])))
    return keys, values


PER_PROMPT_FD = "fd_teacher_prompt"


@dataclass
class Evaluator:
    """What evaluating a sample set of a benchmark needs: the teacher reference, real data, the feature net, the
    metric names (registry metrics, plus the pipeline's per-prompt Fréchet distance to the teacher)."""

    kind: str
    reference_name: str
    reference: Any
    real: Any
    feature_net: Any
    metrics: list[str]
    per_prompt_fd: bool
    confidence: float

    @classmethod
    def for_benchmark(cls, params: PipelineParams, benchmark: str, layout: Layout, reference_folder: Path,
                      only: list[str] | None = None) -> Evaluator:
        """`only`: restrict to these metric names (e.g. the claims' metrics); default: every applicable one."""
        from pdmd_core.cpu_tier.teacher import FEATURES_FILE
        from pdmd_eval.evaluate import default_metrics
        from pdmd_eval.features import load_feature_net
        from pdmd_eval.samples import load_sample_set

        info = read_json(layout.data(benchmark) / "info.json")
        kind = info["kind"]
        fnet_path = layout.teacher(benchmark) / FEATURES_FILE
        fnet = load_feature_net(fnet_path) if fnet_path.is_file() else None
        metrics = default_metrics(kind, True, True, fnet is not None)
        if only is not None:
            metrics = [m for m in metrics if m in only]
        return cls(kind, reference_name(params), load_sample_set(reference_folder),
                   load_sample_set(layout.data(benchmark) / "real"), fnet, metrics,
                   only is None or PER_PROMPT_FD in only, params.eval.confidence)

    def unit_rows(self, folder: Path) -> dict[str, tuple[str, str, list[Any], list[float]]]:
        """metric → (direction, unit, keys, values) for the sample set in `folder`."""
        from pdmd_eval.context import EvalContext
        from pdmd_eval.evaluate import evaluate
        from pdmd_eval.registry import DOWN
        from pdmd_eval.samples import load_sample_set

        sset = load_sample_set(folder)
        results = evaluate(sset, reference=self.reference, metrics=self.metrics, feature_net=self.feature_net,
                           real=self.real, confidence=self.confidence, progress=False)
        rows = {name: (res.direction, res.unit, list(res.keys), [float(v) for v in res.values])
                for name, res in results.items()}
        if self.per_prompt_fd:
            extractor = "raw" if self.kind == "points" else "feature_net"
            ctx = EvalContext(sset, self.reference, None, self.feature_net, {}, extractor, progress=False)
            keys, values = per_prompt_fd(ctx, extractor)
            rows[PER_PROMPT_FD] = (DOWN, "prompt", keys, [float(v) for v in values])
        return rows


def unit_records(rows: dict[str, tuple[str, str, list[Any], list[float]]], **labels: Any) -> list[dict[str, Any]]:
    """units.jsonl lines of one sample set: one per metric value, with `labels` (arm, seed, ...)."""
    out = []
    for name, (direction, unit, ks, vs) in rows.items():
        for key, value in zip(ks if ks else ["all"], vs, strict=True):
            out.append({**labels, "metric": name, "direction": direction, "unit": unit,
                        "key": key if not isinstance(key, tuple) else list(key), "value": value})
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def stage_evaluate(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    torch.set_num_threads(params.torch_threads)
    ref_name = reference_name(params)
    evaluator = Evaluator.for_benchmark(params, benchmark, layout, layout.sample_set(benchmark, ref_name, None))
    sweep = read_json(layout.distill(benchmark) / "sweep.json")
    run_keys = {(r["arm"], int(r["seed"])): r["run_key"] for r in sweep["runs"]}
    uri = resolve_tracking_uri(params.tracking_uri, layout.root)
    test_input = data_input(layout, benchmark, "evaluation")
    out = layout.eval(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    units = []
    summary: dict[str, dict[str, float]] = {}
    for arm, seed, folder in tqdm(sample_sets(layout, benchmark, params), desc=f"evaluate {benchmark}", unit="set"):
        rows = evaluator.unit_rows(folder)
        units += unit_records(rows, arm=arm, seed=seed)
        label = f"{arm}/seed{seed}" if seed >= 0 else arm
        summary[label] = {name: float(np.mean(vs)) for name, (_, _, _, vs) in rows.items()}
        if seed >= 0:
            tracker = Tracker(uri, run_keys[(arm, seed)], default_spool_root(layout.root))
            tracker.log_inputs([test_input])
            tracker.log_metrics({f"eval/{k}": v for k, v in summary[label].items()}, step=0)
            tracker.flush(force=True)
    write_jsonl(out / "units.jsonl", units)
    (out / "summary.json").write_text(json.dumps({"reference": ref_name,
                                                  "metrics": evaluator.metrics + [PER_PROMPT_FD],
                                                  "means": summary}, indent=2))
    return summary
