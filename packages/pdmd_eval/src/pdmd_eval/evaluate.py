"""Top-level API: evaluate a sample set with named metrics; compare arms; save/load results as JSON.

>>> results = evaluate(student, reference=teacher, metrics=["featnet_similarity", "fd_teacher"], feature_net=net)
>>> results["featnet_similarity"].mean, results["featnet_similarity"].low, results["featnet_similarity"].high

Paper scale (lazy readers, CUDA when present, resumable with a cache folder):

>>> arm, base = open_sample_set("samples/phased"), open_sample_set("samples/base40")
>>> results = evaluate(arm, reference=base, metrics=["table2"], device="auto", cache_dir="eval/phased/cache")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_eval.cache import FeatureCache
from pdmd_eval.context import EvalContext, ProtocolOptions
from pdmd_eval.features import FeatureNet
from pdmd_eval.reader import SampleReader
from pdmd_eval.registry import PRETRAINED, MetricResult, available_metrics, expand_metric_names, get_metric
from pdmd_eval.samples import SampleSet
from pdmd_eval.stats import PairedComparison, paired_comparison


def default_metrics(
    kind: str,
    has_reference: bool,
    has_real: bool,
    has_feature_net: bool,
    models: Sequence[str] = (),
    fd_extractor: str = "feature_net",
) -> list[str]:
    """Metrics for ``kind`` whose needs are met by what was passed. Metrics needing pretrained weights are
    included only when that model was passed in ``models`` (ask for them by name to load from disk)."""
    have = {"reference": has_reference, "real": has_real, "feature_net": has_feature_net, "raw": True}
    have.update({m: m in models for m in PRETRAINED})
    chosen = []
    for m in available_metrics(kind):
        needs = list(m.needs)
        if m.uses_fd_extractor and kind != "points":
            needs.append(fd_extractor)
        if all(have.get(n, False) for n in needs):
            chosen.append(m.name)
    return chosen


def evaluate(
    sample_set: SampleSet | SampleReader,
    reference: SampleSet | SampleReader | None = None,
    metrics: Sequence[str] | None = None,
    feature_net: FeatureNet | None = None,
    real: SampleSet | SampleReader | np.ndarray | None = None,
    models: dict[str, Any] | None = None,
    fd_extractor: str = "feature_net",
    knn_k: int = 3,
    batch_size: int = 32,
    confidence: float = 0.95,
    progress: bool = True,
    device: str = "cpu",
    cache: FeatureCache | str | Path | None = None,
    protocol: ProtocolOptions | None = None,
) -> dict[str, MetricResult]:
    """Compute ``metrics`` (names or presets ``table2``/``table3`` from the registry; None =
    :func:`default_metrics`) on ``sample_set`` (in memory or a lazy :class:`~pdmd_eval.reader.SampleReader`).

    ``reference`` is the teacher's sample set on the same prompts/seeds, ``real`` real data (a sample set or an
    array in the sample layout), ``models`` ready-built networks (keys of
    :data:`~pdmd_eval.registry.PRETRAINED`), otherwise loaded from local weights when a metric needs them.
    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present). ``cache``: a folder (or a
    :class:`~pdmd_eval.cache.FeatureCache`) for per-sample results, so a killed evaluation resumes;
    ``protocol``: the paper-protocol settings (:class:`~pdmd_eval.context.ProtocolOptions`).
    """
    if reference is not None and reference.kind != sample_set.kind:
        raise ValueError(f"reference kind {reference.kind!r} differs from the samples' kind {sample_set.kind!r}")
    real_arr = real.samples if isinstance(real, SampleSet | SampleReader) else real
    models = dict(models or {})
    if metrics is not None:
        names = expand_metric_names(list(metrics))
    else:
        has = (reference is not None, real_arr is not None, feature_net is not None)
        names = default_metrics(sample_set.kind, *has, list(models), fd_extractor)
    chosen = [get_metric(n) for n in names]
    bad = [m.name for m in chosen if sample_set.kind not in m.kinds]
    if bad:
        raise ValueError(f"metrics {bad} do not apply to {sample_set.kind!r} sample sets")
    feature_cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    ctx = EvalContext(
        sample_set, reference, real_arr, feature_net, models, fd_extractor, knn_k, batch_size, confidence, progress,
        device, feature_cache, protocol or ProtocolOptions(),
    )
    return {m.name: m.compute(ctx) for m in chosen}


def compare(a: MetricResult, b: MetricResult, confidence: float = 0.95) -> PairedComparison:
    """Paired comparison of two arms' per-unit values, matched on their keys (prompt_id or (prompt_id, seed))."""
    if a.unit == "set" or b.unit == "set":
        raise ValueError(f"{a.name} is a set-level metric: there are no paired units to compare")
    lookup = {k: i for i, k in enumerate(b.keys)}
    common = [(i, lookup[k]) for i, k in enumerate(a.keys) if k in lookup]
    if not common:
        raise ValueError(f"{a.name}: the two arms share no prompt/seed keys")
    ia, ib = (list(x) for x in zip(*common, strict=True))
    va, vb = a.values[ia], b.values[ib]
    keep = np.isfinite(va) & np.isfinite(vb)
    return paired_comparison(va[keep], vb[keep], confidence)


def save_results(results: dict[str, MetricResult], path: str | Path, **info: Any) -> Path:
    """Write ``{"info": ..., "metrics": {name: MetricResult.to_dict()}}`` as JSON."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"info": info, "metrics": {k: v.to_dict() for k, v in results.items()}}
    out.write_text(json.dumps(payload, indent=1, default=str))
    return out


def load_results(path: str | Path) -> tuple[dict[str, Any], dict[str, MetricResult]]:
    data = json.loads(Path(path).read_text())
    return data.get("info", {}), {k: MetricResult.from_dict(v) for k, v in data["metrics"].items()}
