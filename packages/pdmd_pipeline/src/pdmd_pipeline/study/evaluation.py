"""The evaluate stage of a study (one job per model, on a GPU node at scale): every sample set of the model —
the teacher reference and each arm × seed — with the metrics of its table, against the teacher reference.

- t2i (Table 3, diversity within a prompt across its seeds): DINO pairwise cosine similarity ↓, LPIPS ↑, and CLIP
  pairwise cosine similarity ↓;
- t2v / i2v (Tables 2 and 6): optical-flow magnitude ↑ (RAFT), dynamic degree ↑, FID and FVD against the base
  model's own outputs (the teacher reference; the teacher scores 0 by construction).
Per-unit values go to `units.jsonl` in the CPU tier's format (arm, seed — -1 for the teacher —, metric,
direction, unit, key, value), means to the runs' MLflow `eval/*` metrics.

Written against today's pdmd_eval API; what changes with the "Evaluation at scale" API is isolated here:
`METRICS` / `metric_names` (registered names), `build_backbones` (networks), `evaluate_set` (the call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_pipeline.study.distill import read_sweep
from pdmd_pipeline.study.layout import StudyLayout
from pdmd_pipeline.study.params import StudyParams
from pdmd_pipeline.study.sampling import read_samples

UNITS, SUMMARY = "units.jsonl", "summary.json"
# Table column -> today's registered metric name (and the extractor Fréchet distances use).
METRICS = {
    "t2i": {"dino": "div_dino", "lpips": "div_lpips", "clip": "div_clip"},
    "video": {"of": "flow_mag_raft", "dd": "dynamic_degree", "fid": "fd_teacher", "fvd": "fvd_teacher"},
}
FD_EXTRACTOR = "inception"
BACKBONES = {"t2i": ("dino", "lpips", "clip"), "video": ("inception", "raft")}


def group(task: str) -> str:
    return "t2i" if task == "t2i" else "video"


def metric_names(task: str) -> list[str]:
    return list(METRICS[group(task)].values())


class PerImageMemo:
    """A pure image-feature network that remembers each image's features: FID and FVD embed the same frames, and
    the teacher reference comes back for every sample set of the model (features identical bit for bit: the
    same network on the same image)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.memo: dict[bytes, Any] = {}

    def __call__(self, batch: Any) -> Any:
        import hashlib

        import torch

        keys = [hashlib.sha1(image.detach().cpu().numpy().tobytes()).digest() for image in batch]
        todo = [i for i, key in enumerate(keys) if key not in self.memo]
        if todo:
            for i, feats in zip(todo, self.fn(batch[todo]), strict=True):
                self.memo[keys[i]] = feats
        return torch.stack([self.memo[key] for key in keys])


def build_backbones(task: str, mode: str, dino_repo: str, seed: int = 0) -> dict[str, Any]:
    """The metric networks of a task. `random`: the released architectures (DINOv3 ViT-S/16, CLIP ViT-B/32,
    LPIPS-AlexNet, Inception-v3, RAFT-small) with seeded random weights — smoke studies only, numbers
    meaningless by construction. `pretrained`: local weights (`pdmd_eval.weights`, DINO from `dino_repo`); a
    missing file is an error naming it."""
    import torch

    from pdmd_eval import backbones as bb
    from pdmd_eval.functional.motion import RaftFlow

    wanted = BACKBONES[group(task)]
    if mode == "pretrained":
        from pdmd_eval.weights import require_file

        loaders: dict[str, Any] = {
            "dino": lambda: bb.load_dino(dino_repo), "clip": bb.load_clip, "lpips": bb.load_lpips,
            "inception": lambda: PerImageMemo(bb.load_inception()),
            "raft": lambda: RaftFlow(str(require_file("RAFT (small)", "raft/raft_small.pth")))}
        return {name: loaders[name]() for name in wanted}

    def dino() -> Any:
        import transformers as tf

        return bb.DinoEmbedder(tf.DINOv3ViTModel(tf.DINOv3ViTConfig(hidden_size=384, intermediate_size=1536,
                                                                    num_hidden_layers=12, num_attention_heads=6,
                                                                    patch_size=16, image_size=224)), 224)

    def clip() -> Any:
        import open_clip

        return bb.ClipEmbedder(open_clip.create_model("ViT-B-32", pretrained=None), open_clip.get_tokenizer("ViT-B-32"))

    def inception() -> Any:
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        for module in net.modules():  # variance-preserving convs: O(1) features (the default init collapses to ~0)
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        return PerImageMemo(bb.InceptionFeatures(net))

    builders = {"dino": dino, "clip": clip, "lpips": lambda: bb.LpipsDistance(bb.build_lpips(None)),
                "inception": inception, "raft": lambda: RaftFlow(None)}
    models = {}
    for name in wanted:
        torch.manual_seed(seed)
        models[name] = builders[name]()
    return models


def evaluate_set(samples: Any, reference: Any, task: str, models: dict[str, Any], batch_size: int,
                 confidence: float) -> dict[str, Any]:
    """Today's `pdmd_eval.evaluate.evaluate` on one sample set: {metric name: MetricResult}."""
    from pdmd_eval.evaluate import evaluate

    return evaluate(samples, reference=reference, metrics=metric_names(task), models=models,
                    fd_extractor=FD_EXTRACTOR, batch_size=batch_size, confidence=confidence, progress=False)


@dataclass(frozen=True)
class EvalJob:
    model: str
    task: str
    reference: str
    sets: list[tuple[str, int, str]]  # (arm or teacher name, training seed or -1, sample-set folder)
    out: str
    backbones: str = "pretrained"
    dino: str = "facebook/dinov3-vitb16-pretrain-lvd1689m"
    batch_size: int = 16
    confidence: float = 0.95
    threads: int = 1


def run_eval_job(job: EvalJob) -> dict[str, dict[str, float]]:
    import torch

    torch.set_num_threads(job.threads)
    models = build_backbones(job.task, job.backbones, job.dino)
    reference = read_samples(Path(job.reference))
    units: list[dict[str, Any]] = []
    means: dict[str, dict[str, float]] = {}
    for arm, seed, folder in job.sets:
        results = evaluate_set(read_samples(Path(folder)), reference, job.task, models, job.batch_size,
                               job.confidence)
        label = f"{arm}/seed{seed}" if seed >= 0 else arm
        means[label] = {}
        for name, res in results.items():
            keys = list(res.keys) if res.keys else ["all"]
            for key, value in zip(keys, res.values.tolist(), strict=True):
                units.append({"arm": arm, "seed": seed, "metric": name, "direction": res.direction, "unit": res.unit,
                              "key": list(key) if isinstance(key, tuple) else key, "value": float(value)})
            means[label][name] = float(np.mean(res.values))
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / UNITS, "w") as fh:
        for row in units:
            fh.write(json.dumps(row) + "\n")
    (out / SUMMARY).write_text(json.dumps({"reference": job.reference, "backbones": job.backbones,
                                           "metrics": metric_names(job.task), "means": means}, indent=2))
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
    job = EvalJob(model, params.task, str(reference), sets, str(layout.eval(model)), study.evaluation.backbones,
                  study.evaluation.dino, study.evaluation.batch_size, study.evaluation.confidence, study.torch_threads)
    settings = ExecutorSettings(kind=study.executor, local_parallel=1, slurm_profile=study.profiles.evaluate,
                                job_name=f"evaluate {model}")
    [means] = run_jobs(run_eval_job, [job], [f"evaluate-{model}"], settings, layout.eval(model) / "logs")
    uri = resolve_tracking_uri(study.tracking_uri, layout.root)
    for run in sweep["runs"]:
        tracker = Tracker(uri, str(run["run_key"]), default_spool_root(layout.root))
        tracker.log_metrics({f"eval/{k}": v for k, v in means[f"{run['arm']}/seed{run['seed']}"].items()}, step=0)
        tracker.flush(force=True)
    return means
