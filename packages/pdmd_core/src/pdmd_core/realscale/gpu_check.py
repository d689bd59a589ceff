"""CUDA check and benchmark of the real-scale path on one GPU: `python -m pdmd_core.realscale.gpu_check OUT.json`.

What CPU tests cannot show, measured on the GPU (one process; NCCL process group of world size 1, so FSDP2's
CUDA code path — bf16 parameter gathers, fp32 gradient reduction — runs for real):
1. tiny Wan2.2 two-expert teacher: transformers built empty and filled from safetensors (`weights: sharded`),
   roles wrapped by FSDP2 with activation checkpointing, bf16 autocast, 2-phase Phased DMD with LoRA experts;
   then export (LoRA) and the stock WanPipeline on the GPU against the trainer's own sampler, once in fp32
   and once under bf16 autocast.
2. a Wan2.1-T2V-1.3B-shaped model (random weights written to a diffusers folder here, the published config)
   trained with the 1.3B Phased DMD preset for a few generator iterations at a reduced resolution: seconds per
   generator iteration, peak GPU memory, and the preset's memory plan for the same setting beside it.
Figures are printed and written as JSON; nothing here is a pass/fail test. `--cpu-rehearsal` runs the same code
on the CPU (gloo, fp32, the tiny architecture in place of the 1.3B one) to check the script before GPU time.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PROMPTS = ["a red cat", "a blue dog sitting", "photo of a cat", "the dog runs"]


def _process_group(device_type: str) -> Any:
    import torch.distributed as dist

    from pdmd_core.realscale.distributed import current_context

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(0)
            dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
        else:
            dist.init_process_group("gloo")
    return current_context(device_type)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def _tiny_wan22(root: Path) -> tuple[Path, Path]:
    from pdmd_core.realscale.text_cache import encode_prompts, save_prompt_embeddings
    from pdmd_core.realscale.tiny import tiny_wan22_pipeline

    pipe = tiny_wan22_pipeline(PROMPTS)
    pipe.save_pretrained(root / "base")
    cache = encode_prompts(pipe, "wan", PROMPTS, max_sequence_length=16, progress=False)
    return root / "base", save_prompt_embeddings(cache, root / "prompts.safetensors")


def _metrics_hook(log: list[dict[str, float]]) -> Any:
    def hook(step: int, phase: int, metrics: dict[str, float]) -> None:
        log.append({"step": step, "phase": phase, **metrics})

    return hook


def tiny_end_to_end(root: Path, ctx: Any) -> dict[str, Any]:
    from pdmd_core.callbacks import OnIteration
    from pdmd_core.config import DistillConfig
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import fsdp2_role_wrapper
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.pipelines import load_student_pipeline
    from pdmd_core.realscale.student_io import load_student
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.trainer import Trainer

    base, cache = _tiny_wan22(root)
    raw = {"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 3, "batch_size": 2,
           "ttur_ratio": 2, "generator": {"kind": "lora", "rank": 4, "alpha": 8.0}, "device": ctx.device.type,
           "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3}, "checkpoint": {"every": 100, "keep_last": 1},
           "model": {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(base),
                     "prompt_cache": str(cache), "resolution": [5, 32, 32], "weights": "sharded",
                     "autocast_dtype": "bfloat16"}}
    cfg = DistillConfig.model_validate(raw)
    bundle = build_model("wan", cfg.model.params, ctx.device)  # type: ignore[union-attr]
    built_empty = all(p.is_meta for p in bundle.teacher.parameters())
    log: list[dict[str, float]] = []
    trainer = Trainer(cfg, bundle, root / "run", callbacks=[OnIteration(_metrics_hook(log))], progress=False,
                      wrap_module=fsdp2_role_wrapper(ctx))
    start = time.perf_counter()
    trainer.fit()
    _sync(ctx.device)
    seconds = time.perf_counter() - start
    losses = [v for row in log for k, v in row.items() if "loss" in k]
    device = ctx.device.type
    student, bundle, cfg = load_student(root / "run", device=device)
    export_student(student.generator, bundle, cfg, root / "export", "lora")
    pipe = load_student_pipeline(root / "export", base, device=device)
    cond = CachedPromptEncoder.from_file(cache, device).encode(PROMPTS[:2])
    z = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(7)).to(device)
    diffs: dict[str, float] = {}
    precisions = (("fp32", None), ("bf16_autocast", torch.bfloat16)) if device == "cuda" else (("fp32", None),)
    for label, dtype in precisions:
        student.generator._autocast = dtype  # the trainer's sampler in the same precision as the pipeline
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=dtype is not None):
            own = student.sample(z, cond)
            via_pipeline = pipe.generate(z, cond)
        diffs[label] = float((own.float() - via_pipeline.float()).abs().max())
    return {"built_empty": built_empty, "fsdp2_dtensor_roles": trainer.sharded, "train_seconds": round(seconds, 2),
            "generator_steps": trainer.global_step, "losses_finite": all(math.isfinite(v) for v in losses),
            "n_loss_values": len(losses), "pipeline_vs_trainer_max_abs_diff": diffs}


def _random_diffusers_folder(root: Path, architecture: str, subfolder: str, device: torch.device) -> Path:
    from diffusers import WanTransformer3DModel

    from pdmd_core.realscale.architectures import get_architecture

    arch = get_architecture(architecture)
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = WanTransformer3DModel(**arch.config_for(subfolder))
    model.save_pretrained(root / subfolder)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return root


def _random_prompt_cache(path: Path, text_dim: int, length: int = 512) -> Path:
    from pdmd_core.realscale.text_cache import PromptEmbeddings, save_prompt_embeddings

    g = torch.Generator().manual_seed(0)
    n = len(PROMPTS)
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask[:, :24] = True
    null_mask = torch.zeros(1, length, dtype=torch.bool)
    null_mask[:, :4] = True
    cache = PromptEmbeddings("wan", list(PROMPTS), torch.randn(n, length, text_dim, generator=g) * mask[..., None],
                             mask, torch.randn(1, length, text_dim, generator=g) * null_mask[..., None], null_mask,
                             "")
    return save_prompt_embeddings(cache, path)


def preset_step(root: Path, ctx: Any, preset: Path, resolution: list[int], iterations: int,
                architecture: str | None = None) -> dict[str, Any]:
    from pdmd_core.callbacks import OnIteration
    from pdmd_core.config import load_config
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import fsdp2_role_wrapper
    from pdmd_core.realscale.models import parse_params
    from pdmd_core.trainer import Trainer

    base_cfg = load_config(preset)
    params = dict(base_cfg.model.params)  # type: ignore[union-attr]
    params["architecture"] = architecture or params["architecture"]
    _, arch = parse_params("wan", params)
    base = _random_diffusers_folder(root / "base", params["architecture"], arch.expert_subfolders[0], ctx.device)
    cache = _random_prompt_cache(root / "prompts.safetensors", arch.transformer["text_dim"])
    params.update(model_path=str(base), prompt_cache=str(cache), resolution=resolution, gpus=1,
                  weights="sharded")
    overrides = {"batch_size": 1, "iterations": [iterations] * base_cfg.num_phases, "device": ctx.device.type,
                 "checkpoint": {"every": 10_000, "keep_last": 1}, "model": params}
    cfg = load_config(preset, overrides)
    bundle = build_model("wan", cfg.model.params, ctx.device)  # type: ignore[union-attr]
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    log: list[dict[str, float]] = []
    times: list[float] = []
    last = [time.perf_counter()]

    def timer(step: int, phase: int, metrics: dict[str, float]) -> None:
        _sync(ctx.device)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer = Trainer(cfg, bundle, root / "run", callbacks=[OnIteration(_metrics_hook(log)), OnIteration(timer)],
                      progress=False,
                      wrap_module=fsdp2_role_wrapper(ctx))
    after_build = _peak_gib(ctx.device)
    last[0] = time.perf_counter()
    trainer.fit()
    plan = bundle.extras["memory_plan"](cfg, trainer.role_summary())
    losses = [v for row in log for k, v in row.items() if "loss" in k]
    return {"preset": preset.name, "resolution": resolution, "latent_shape": list(bundle.sample_shape),
            "tokens_per_sample": plan["tokens_per_sample"], "generator_iterations": len(times),
            "seconds_per_generator_iteration": [round(t, 2) for t in times],
            "peak_gib_after_building_roles": after_build, "peak_gib_training": _peak_gib(ctx.device),
            "memory_plan_gib": plan["per_gpu_gib"], "losses_finite": all(math.isfinite(v) for v in losses)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch.distributed as dist

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("gpu_check.json"))
    parser.add_argument("--cpu-rehearsal", action="store_true", help="CPU, gloo, tiny architecture")
    args = parser.parse_args(argv)
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (or --cpu-rehearsal)", file=sys.stderr)
        return 2
    device_type = "cpu" if args.cpu_rehearsal else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons mean fp32
    ctx = _process_group(device_type)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device_type == "cuda" else "cpu",
                               "torch": torch.__version__}
    preset = Path(__file__).resolve().parents[5] / "experiments/realscale/wan21_t2v_1p3b_phased.yaml"
    resolution, architecture = ([5, 32, 32], "tiny-wan2.1") if args.cpu_rehearsal else ([17, 480, 832], None)
    parts = [("tiny_wan22_end_to_end", lambda root: tiny_end_to_end(root, ctx)),
             ("wan21_1p3b_preset_step", lambda root: preset_step(root, ctx, preset, resolution, 2, architecture))]
    for name, run in parts:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                results[name] = run(Path(tmp))
            except Exception as err:  # one part failing must not hide the other's figures
                import traceback

                results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        if device_type == "cuda":
            torch.cuda.empty_cache()
    args.out.write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
