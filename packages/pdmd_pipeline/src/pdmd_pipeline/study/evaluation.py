"""The evaluate stage of a study (one job per model, on a GPU node at scale): every sample set of the model —
the teacher reference and each arm × seed — read lazily from its media files (`pdmd_eval.reader`), with the
paper-protocol metrics of pdmd_eval (`pdmd_eval.metrics.protocol`, presets `table2` / `table3`), against the
teacher reference:

- t2i (Table 3, diversity within a prompt across its seeds): `dino_similarity` (DINOv3 pairwise cosine ↓),
  `lpips_distance` (LPIPS ↑) and `clip_similarity` (CLIP pairwise cosine ↓);
- t2v / i2v (Tables 2 and 6): `optical_flow_raft` ↑ (RAFT on RGB), `dynamic_degree_vbench` ↑, `fid_teacher`
  (torch-fidelity's Inception) and `fvd_i3d_teacher` (cd-fvd's I3D) against the base model's own outputs (the
  teacher scores 0 by construction).
Per-unit values go to `units.jsonl` in the CPU tier's format (arm, seed — -1 for the teacher —, metric,
direction, unit, key, value), means to the runs' MLflow `eval/*` metrics. Per-sample features are cached by
pdmd_eval's FeatureCache under `layout.feature_cache(model)`, so a requeued job resumes and the teacher
reference is embedded once for all the arms.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline.study.distill import read_sweep
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import StudyParams
from pdmd_pipeline.study.sampling import read_samples

UNITS, SUMMARY = "units.jsonl", "summary.json"
# Table column -> pdmd_eval's registered metric name (the presets table3 / table2).
METRICS = {
    "t2i": {"dino": "dino_similarity", "lpips": "lpips_distance", "clip": "clip_similarity"},
    "video": {"of": "optical_flow_raft", "dd": "dynamic_degree_vbench", "fid": "fid_teacher",
              "fvd": "fvd_i3d_teacher"},
}
PRESET = {"t2i": "table3", "video": "table2"}
BACKBONES = {"t2i": ("dinov3", "lpips", "clip"), "video": ("raft_large", "fid_inception", "i3d")}


def group(task: str) -> str:
    return "t2i" if task == "t2i" else "video"


def metric_names(task: str) -> list[str]:
    from pdmd_eval.registry import expand_metric_names

    names = expand_metric_names([PRESET[group(task)]])
    if sorted(names) != sorted(METRICS[group(task)].values()):  # the table's columns must be the preset's metrics
        raise RuntimeError(f"pdmd_eval preset {PRESET[group(task)]!r} is {names}; the study's tables expect "
                           f"{sorted(METRICS[group(task)].values())}")
    return names


def random_fid_inception() -> Any:
    """torch-fidelity's FID Inception (the architecture pdmd_eval.standard loads) with seeded He-normal random
    weights instead of the downloaded TF graph: He init keeps activations O(1) through the ~90 layers, where
    PyTorch's default init shrinks them towards round-off. Smoke studies only."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInit(FeatureExtractorInceptionV3):  # type: ignore[misc]
        def load_state_dict(self, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
            if state_dict:  # only the empty placeholder below is replaced by random weights
                return super().load_state_dict(state_dict, *args, **kwargs)
            for module in self.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)  # torch-fidelity downloads its weights when given no file
        return RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def build_backbones(task: str, mode: str, protocol: Any, seed: int = 0) -> dict[str, Any]:
    """The metric networks of a task, keyed as pdmd_eval's registry names them. `pretrained`: none built here —
    pdmd_eval loads each from `$PDMD_WEIGHTS_DIR` when a metric needs it (a missing file is an error naming it).
    `random`: the released architectures (DINOv3 ViT-S/16, CLIP ViT-B/32, LPIPS-AlexNet, RAFT-large,
    torch-fidelity's FID Inception, cd-fvd's I3D) with seeded random weights — smoke studies only, numbers
    meaningless by construction."""
    if mode == "pretrained":
        return {}
    import torch

    from pdmd_eval import backbones as bb
    from pdmd_eval import standard
    from pdmd_eval.functional.motion import RaftFlow

    def dinov3() -> Any:
        import transformers as tf

        return bb.DinoEmbedder(tf.DINOv3ViTModel(tf.DINOv3ViTConfig(hidden_size=384, intermediate_size=1536,
                                                                    num_hidden_layers=12, num_attention_heads=6,
                                                                    patch_size=16, image_size=224)), 224)

    def clip() -> Any:
        import open_clip

        return bb.ClipEmbedder(open_clip.create_model("ViT-B-32", pretrained=None), open_clip.get_tokenizer("ViT-B-32"))

    builders = {
        "dinov3": dinov3, "clip": clip, "lpips": lambda: bb.LpipsDistance(bb.build_lpips(None)),
        "raft_large": lambda: RaftFlow(None, small=False, iters=protocol.raft_iters, max_side=protocol.flow_max_side,
                                       pair_batch=protocol.pair_batch),
        "fid_inception": lambda: standard.FidInception(random_fid_inception()),
        "i3d": lambda: standard.I3DFeatures(standard.build_i3d(None), protocol.fvd_frames),
    }
    models = {}
    for name in BACKBONES[group(task)]:
        torch.manual_seed(seed)
        models[name] = builders[name]()
    return models


def evaluate_set(samples: Any, reference: Any, task: str, models: dict[str, Any], device: str, cache: Any,
                 protocol: Any, batch_size: int, confidence: float) -> dict[str, Any]:
    """pdmd_eval's `evaluate` with the table's preset on one (lazy) sample set: {metric name: MetricResult}."""
    from pdmd_eval.evaluate import evaluate

    return evaluate(samples, reference=reference, metrics=[PRESET[group(task)]], models=models, device=device,
                    cache=cache, protocol=protocol, batch_size=batch_size, confidence=confidence, progress=True)


@dataclass(frozen=True)
class EvalJob:
    model: str
    task: str
    reference: str
    sets: list[tuple[str, int, str]]  # (arm or teacher name, training seed or -1, sample-set folder)
    out: str
    cache: str
    backbones: str = "pretrained"
    protocol: dict[str, Any] | None = None  # pdmd_eval.context.ProtocolOptions fields
    device: str = "cpu"
    batch_size: int = 16
    confidence: float = 0.95
    threads: int = 1


def run_eval_job(job: EvalJob) -> dict[str, dict[str, float]]:
    import torch

    from pdmd_eval.cache import FeatureCache
    from pdmd_eval.context import ProtocolOptions

    torch.set_num_threads(job.threads)
    protocol = ProtocolOptions(**(job.protocol or {}))
    models = build_backbones(job.task, job.backbones, protocol)
    cache = FeatureCache(job.cache)
    reference = read_samples(Path(job.reference))
    units: list[dict[str, Any]] = []
    means: dict[str, dict[str, float]] = {}
    extras: dict[str, dict[str, Any]] = {}
    for arm, seed, folder in job.sets:
        results = evaluate_set(read_samples(Path(folder)), reference, job.task, models, job.device, cache, protocol,
                               job.batch_size, job.confidence)
        label = f"{arm}/seed{seed}" if seed >= 0 else arm
        means[label] = {}
        for name, res in results.items():
            keys = list(res.keys) if len(res.keys) else ["all"]
            for key, value in zip(keys, res.values.tolist(), strict=True):
                units.append({"arm": arm, "seed": seed, "metric": name, "direction": res.direction, "unit": res.unit,
                              "key": list(key) if isinstance(key, tuple) else key, "value": float(value)})
            means[label][name] = float(np.mean(res.values))
            extras.setdefault(name, {k: v for k, v in res.extras.items() if not k.startswith("n_")})
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / UNITS, "w") as fh:
        for row in units:
            fh.write(json.dumps(row) + "\n")
    (out / SUMMARY).write_text(json.dumps({"reference": job.reference, "backbones": job.backbones,
                                           "protocol": asdict(protocol), "metrics": metric_names(job.task),
                                           "metric_extras": extras, "means": means}, indent=2, default=str))
    return means


def stage_evaluate(study: StudyParams, model: str, layout: StudyLayout) -> dict[str, dict[str, float]]:
    from pdmd_pipeline.executors import ExecutorSettings, run_jobs
    from pdmd_pipeline.tracking import Tracker, default_spool_root, resolve_tracking_uri

    params = study.model(model)
    sweep = read_sweep(layout, model)
    teacher = study.teacher_name()
    reference = layout.sample_set(model, teacher, None)
    sets = [(teacher, -1, str(reference))]
    sets += [(str(r["arm"]), int(r["seed"]), str(layout.sample_set(model, r["arm"], int(r["seed"]))))
             for r in sweep["runs"]]
    ev = study.evaluation
    protocol = {"raft_iters": ev.raft_iters, "flow_max_side": ev.flow_max_side, "fid_frames": ev.fid_frames,
                "fvd_frames": ev.fvd_frames, "dinov3_model": ev.dino}
    job = EvalJob(model, params.task, str(reference), sets, str(layout.eval(model)),
                  str(layout.feature_cache(model)), ev.backbones, protocol, study.device, ev.batch_size,
                  ev.confidence, study.torch_threads)
    settings = ExecutorSettings(kind=study.executor, local_parallel=1, slurm_profile=study.profiles.evaluate,
                                job_name=f"evaluate {model}")
    [means] = run_jobs(run_eval_job, [job], [f"evaluate-{model}"], settings, layout.eval(model) / "logs")
    uri = resolve_tracking_uri(study.tracking_uri, layout.root)
    for run in sweep["runs"]:
        tracker = Tracker(uri, str(run["run_key"]), default_spool_root(layout.root))
        tracker.log_metrics({f"eval/{k}": v for k, v in means[f"{run['arm']}/seed{run['seed']}"].items()}, step=0)
        tracker.flush(force=True)
    return means
