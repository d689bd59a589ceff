"""The `data` stage: a benchmark's test split as a sample set, its prompts and md5 (runs/data/<b>/)."""

from __future__ import annotations

import json
from typing import Any

from pdmd_pipeline.layout import Layout
from pdmd_pipeline.params import PipelineParams
from pdmd_pipeline.stages.common import benchmark_config, md5_file, to_unit


def stage_data(params: PipelineParams, benchmark: str, layout: Layout) -> dict[str, Any]:
    from pdmd_core.cpu_tier.data import build_dataset
    from pdmd_eval.samples import SampleRecord, SampleSet, save_sample_set

    cfg = benchmark_config(params, benchmark, layout.root)
    data = build_dataset(cfg.data, cfg.seed)
    out = layout.data(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    test = data.test
    records = [SampleRecord("real", int(p), data.prompts[int(p)], i, 0, 0, "data")
               for i, p in enumerate(test.labels.tolist())]
    arr = to_unit(data.kind, test.x).numpy().astype("float32")
    save_sample_set(SampleSet(arr, records, data.kind, benchmark, dict(data.meta)), out / "real")
    info = {"benchmark": benchmark, "kind": data.kind, "prompts": list(data.prompts),
            "sample_shape": list(data.sample_shape), "meta": dict(data.meta),
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(test)},
            "md5": md5_file(out / "real" / "samples.safetensors")}
    (out / "info.json").write_text(json.dumps(info, indent=2, default=str))
    return info
