"""The real-scale study on one GPU: `python -m pdmd_pipeline.study.gpu_check [OUT_DIR] [--parts ...] [--cpu-rehearsal]`.

Parts (all by default; `--parts preset,sampling` to split a session's device time):
- `smoke`: the smoke study (experiments/presets/realscale_smoke.yaml) by `dvc repro` in a sandbox, on CUDA with
  the local executor (each arm × seed one process, world size 1), MLflow in the sandbox's sqlite store: wall time,
  and its sampling speed-up table (teacher 40 steps CFG 4 vs students 4 steps CFG 1, stock pipelines, GPU).
- `preset`: the study's arms (Phased DMD 2 phases + SGTS, DMD2/SGTS re-noise, 4 phases) on the Wan2.1-T2V-1.3B
  preset, a 1.3B-shaped model with random weights at reduced frames (17×480×832: 7,800 tokens), batch 1,
  through the FSDP2 path at world size 1 (NCCL, bf16 autocast, activation checkpointing). Per phase (an
  iteration's work grows with the phase: later phases roll out through the earlier experts without grad):
  seconds per generator iteration (5 fake updates + 1 generator update) over its steady iterations (the first
  `--warmup-iterations` of each phase dropped; the phase switch and checkpoint saves fall in no iteration), the
  iteration's FLOPs (pdmd_core.iteration_flops: each role's pass counted once by torch.utils.flop_counter at the
  phase's start, times the passes the phase runs; under SGTS the expectation over the exit-step distribution),
  MFU = model FLOPs (forwards and the backward autograd runs) and HFU = hardware FLOPs (plus activation
  checkpointing's recomputation) per second over the GPU's dense bf16 peak; peak memory vs the memory plan.
- `sampling`: the same model's stock WanPipeline at 40 steps CFG 4 vs an exported 4-step student (CFG 1): wall
  time per sample at that resolution.
Writes OUT_DIR/gpu_study.json and gpu_study.md (default reports/realscale/). `--cpu-rehearsal` runs the same code
on the CPU (gloo, fp32, tiny architecture, one model in the smoke study) to check the script before GPU time.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from pdmd_core.callbacks import Callback
from pdmd_core.iteration_flops import (
    IterationCosts,
    Schedule,
    exit_step_distribution,
    expected_iteration_flops,
    steady_seconds,
    utilisation,
)
from pdmd_core.pass_flops import measure_pass_flops
from pdmd_core.paths import project_root

PRESET = "experiments/realscale/wan21_t2v_1p3b_phased.yaml"
SMOKE = "experiments/presets/realscale_smoke.yaml"
STUDY = "experiments/realscale/params.yaml"
ARMS = ("phased_k2_sgts", "sgts", "phased_k4")
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


# ---------------------------------------------------------------------------------------------- smoke study
def smoke_part(root: Path, rehearsal: bool) -> dict[str, Any]:
    from pdmd_pipeline.sandbox import make_sandbox, repro

    preset = yaml.safe_load((root / SMOKE).read_text())
    overrides: dict[str, Any] = {"executor": "local", "tracking_uri": None, "device": "cpu" if rehearsal else "cuda"}
    if rehearsal:  # one model (the cheapest), one seed: the rehearsal checks the path; the GPU run does it all
        overrides["models"] = {"qwen_t2i": preset["models"]["qwen_t2i"]}
        overrides["seeds"] = [0]
        overrides["tables"] = {"table2": {"t2v": None, "i2v": None}, "table3": preset["tables"]["table3"],
                               "table6": {"t2v": None}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_sandbox(root / SMOKE, Path(tmp) / "smoke", overrides, source=root)
        result = repro(folder, timeout=3000)
        report = folder / preset["report_dir"]
        speed = (report / "speed.md").read_text() if (report / "speed.md").is_file() else None
        return {"returncode": result.returncode, "wall_seconds": round(result.seconds, 1), "speed_md": speed,
                "output_tail": None if result.returncode == 0 else result.output[-3000:]}


# ---------------------------------------------------------------------------------------------- 1.3B preset
def random_wan_pipeline(folder: Path, architecture: str, rehearsal: bool) -> Path:
    """A Wan pipeline folder with random weights: the architecture's transformer, a Wan VAE, a shift-5 scheduler."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    from pdmd_core.realscale.architectures import get_architecture
    from pdmd_core.realscale.tiny import tiny_wan_vae

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**get_architecture(architecture).config_for("transformer"))
    vae = tiny_wan_vae(1) if rehearsal else AutoencoderKLWan()  # the default config is Wan2.1's VAE
    pipe: Any = WanPipeline(tokenizer=None, text_encoder=None, vae=vae,  # type: ignore[arg-type]
                            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def arm_config(root: Path, arm: str, model: dict[str, Any], iterations: int, device: str) -> Any:
    from pdmd_core.config import config_from_dict
    from pdmd_pipeline.params import deep_merge

    base = yaml.safe_load((root / PRESET).read_text())
    arms = yaml.safe_load((root / STUDY).read_text())["arms"]
    merged = deep_merge(base, arms[arm])
    merged.update(batch_size=1, device=device, iterations=iterations, checkpoint={"every": 10_000, "keep_last": 1})
    merged["model"] = {**merged["model"], **model}
    return config_from_dict(merged, source=f"{PRESET} + arm {arm}")


class PhaseProbe(Callback):
    """Per phase: the roles' pass FLOPs, counted at the phase's start, and the wall time of each of its generator
    iterations. The clock restarts after the counting and after every checkpoint save, so neither the counting,
    the phase switch nor a save falls in an iteration's time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.costs: dict[int, IterationCosts] = {}
        self.seconds: dict[int, list[float]] = {}
        self.last = time.perf_counter()

    def _restart(self) -> None:
        _sync(self.device)
        self.last = time.perf_counter()

    def on_phase_begin(self, trainer: Any, phase: int) -> None:
        self.costs[phase] = measure_pass_flops(trainer)
        self.seconds[phase] = []
        self._restart()

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.seconds[phase].append(now - self.last)
        self.last = now

    def on_after_save(self, trainer: Any, path: Path) -> None:
        self._restart()


def phase_figures(costs: IterationCosts, schedule: Schedule, phase: int, seconds: list[float], warmup: int,
                  peak: float | None) -> dict[str, Any]:
    """One phase's FLOPs per iteration (expected over SGTS exit steps), steady-state time, MFU and HFU."""
    steady = steady_seconds(seconds, warmup)
    mean = sum(steady) / len(steady)
    flops = expected_iteration_flops(costs, schedule, phase)
    return {"phase": phase, "seconds_per_iteration": seconds, "warmup_iterations": warmup,
            "steady_iterations": len(steady), "mean_steady_seconds": mean,
            "exit_step_distribution": {str(j): float(p) for j, p in exit_step_distribution(schedule, phase).items()},
            "model_flops_per_iteration": float(flops.model), "hardware_flops_per_iteration": float(flops.hardware),
            "mfu": utilisation(flops.model, mean, peak) if peak else None,
            "hfu": utilisation(flops.hardware, mean, peak) if peak else None, "pass_flops": asdict(costs)}


def steady_figures(phases: list[dict[str, Any]], peak: float | None) -> dict[str, Any]:
    """All phases' steady iterations together: their FLOPs over their time."""
    seconds = sum(p["mean_steady_seconds"] * p["steady_iterations"] for p in phases)
    model = sum(p["model_flops_per_iteration"] * p["steady_iterations"] for p in phases)
    hardware = sum(p["hardware_flops_per_iteration"] * p["steady_iterations"] for p in phases)
    return {"iterations": sum(p["steady_iterations"] for p in phases), "seconds": seconds,
            "mfu": utilisation(model, seconds, peak) if peak else None,
            "hfu": utilisation(hardware, seconds, peak) if peak else None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def preset_arm(root: Path, ctx: Any, arm: str, base: Path, cache: Path, resolution: list[int], architecture: str,
               peak: float | None, warmup: int, timed: int) -> dict[str, Any]:
    from pdmd_core.callbacks import OnIteration
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.distributed import fsdp2_role_wrapper
    from pdmd_core.trainer import Trainer

    model = {"architecture": architecture, "model_path": str(base), "prompt_cache": str(cache),
             "resolution": resolution, "resolutions": None, "gpus": 1, "weights": "sharded"}
    if ctx.device.type == "cpu":
        model["autocast_dtype"] = None
    cfg = arm_config(root, arm, model, warmup + timed, ctx.device.type)  # per phase
    bundle = build_model("wan", cfg.model.params, ctx.device)  # type: ignore[union-attr]
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    probe = PhaseProbe(ctx.device)
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, bundle, Path(tmp), progress=False, wrap_module=fsdp2_role_wrapper(ctx),
                          callbacks=[OnIteration(lambda s, p, m: losses.extend(v for k, v in m.items() if "loss" in k)),
                                     probe])
        trainer.fit()
        plan = bundle.extras["memory_plan"](cfg, trainer.role_summary())
    schedule = Schedule.of(cfg)
    phases = [phase_figures(probe.costs[k], schedule, k, probe.seconds[k], warmup, peak)
              for k in range(cfg.num_phases)]
    return {"arm": arm, "method": cfg.method, "phases": cfg.num_phases, "transport": cfg.transport,
            "ttur_ratio": cfg.ttur_ratio, "generator_iterations": trainer.global_step,
            "tokens_per_sample": plan["tokens_per_sample"], "per_phase": phases,
            "steady": steady_figures(phases, peak),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if ctx.device.type == "cuda" else None,
            "memory_plan_gib": plan["per_gpu_gib"], "losses_finite": all(math.isfinite(v) for v in losses)}


def preset_part(root: Path, ctx: Any, work: Path, rehearsal: bool, peak: float | None, warmup: int,
                timed: int) -> dict[str, Any]:
    from pdmd_core.realscale.gpu_check import _random_prompt_cache

    architecture, resolution = ("tiny-wan2.1", [5, 32, 32]) if rehearsal else ("wan2.1-t2v-1.3b", [17, 480, 832])
    base = random_wan_pipeline(work / "base", architecture, rehearsal)
    text_dim = 32 if rehearsal else 4096
    cache = _random_prompt_cache(work / "prompts.safetensors", text_dim, length=16 if rehearsal else 512)
    arms = {}
    for arm in ARMS:
        try:
            arms[arm] = preset_arm(root, ctx, arm, base, cache, resolution, architecture, peak, warmup, timed)
        except Exception as err:  # one arm failing must not hide the others' figures
            import traceback

            arms[arm] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"architecture": architecture, "resolution": resolution, "base": str(base), "cache": str(cache),
            "warmup_iterations": warmup, "timed_iterations": timed, "arms": arms}


# ---------------------------------------------------------------------------------------------- sampling
def sampling_part(root: Path, ctx: Any, work: Path, rehearsal: bool) -> dict[str, Any]:
    """Wall time per sample: the base model's stock pipeline (40 steps, CFG 4) vs a 4-step student export."""
    from pdmd_core.models.registry import build_model
    from pdmd_core.realscale.architectures import get_architecture, latent_shape
    from pdmd_core.realscale.export import export_student
    from pdmd_core.realscale.gpu_check import _random_prompt_cache
    from pdmd_core.realscale.pipelines import load_student_pipeline, load_teacher_pipeline
    from pdmd_core.realscale.text_cache import CachedPromptEncoder
    from pdmd_core.roles import GeneratorExperts
    from pdmd_core.sample_noise import initial_noise

    architecture, resolution = ("tiny-wan2.1", [5, 32, 32]) if rehearsal else ("wan2.1-t2v-1.3b", [17, 480, 832])
    base = work / "base"
    if not base.is_dir():
        random_wan_pipeline(base, architecture, rehearsal)
    cache = work / "prompts.safetensors"
    if not cache.is_file():
        _random_prompt_cache(cache, 32 if rehearsal else 4096, length=16 if rehearsal else 512)
    model = {"architecture": architecture, "model_path": str(base), "prompt_cache": str(cache),
             "resolution": resolution, "resolutions": None, "gpus": 1, "weights": "full"}
    cfg = arm_config(root, "phased_k2_sgts", model, 1, "cpu")
    bundle = build_model("wan", cfg.model.params, "cpu")
    export_student(GeneratorExperts(bundle, cfg), bundle, cfg, work / "export", "lora")  # timing: weights irrelevant
    del bundle
    dtype = torch.float32 if rehearsal else torch.bfloat16
    device = ctx.device.type
    encoder = CachedPromptEncoder(CachedPromptEncoder.from_file(cache).cache, device, dtype)
    cond, null = encoder.encode_indices(torch.tensor([0])), encoder.null(1)
    z = initial_noise(latent_shape(get_architecture(architecture), *resolution), 42).to(device, dtype)
    out: dict[str, Any] = {"resolution": resolution, "dtype": str(dtype).removeprefix("torch.")}
    teacher = load_teacher_pipeline(base, architecture, dtype=dtype, device=device)
    student = load_student_pipeline(work / "export", base, dtype=dtype, device=device)
    runs = {"teacher_40_cfg4": lambda: teacher.generate(z, cond, null, 40, 4.0),
            "student_4_cfg1": lambda: student.generate(z, cond, generator=torch.Generator().manual_seed(42))}
    for name, run in runs.items():
        times = []
        for _ in range(2):  # the first call warms up kernels; the second is the figure
            _sync(ctx.device)
            start = time.perf_counter()
            with torch.no_grad():
                latent = run()
            _sync(ctx.device)
            times.append(time.perf_counter() - start)
        _sync(ctx.device)
        start = time.perf_counter()
        with torch.no_grad():
            teacher.decode(latent.float())
        _sync(ctx.device)
        out[name] = {"denoise_seconds": [round(t, 3) for t in times], "decode_seconds": round(time.perf_counter()
                                                                                               - start, 3)}
    out["wall_speedup"] = round(out["teacher_40_cfg4"]["denoise_seconds"][-1]
                                / out["student_4_cfg1"]["denoise_seconds"][-1], 2)
    out["nfe"] = {"teacher": teacher.nfe(40, 4.0), "student": student.manifest.num_steps}
    return out


# ---------------------------------------------------------------------------------------------- report
def _tflop(flops: float | None) -> str:
    return "–" if flops is None else f"{flops / 1e12:.4g}"


def _fraction(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Real-scale study on one GPU ({results['device']}, torch {results['torch']})", "",
             "Generated by `python -m pdmd_pipeline.study.gpu_check`; random weights (timings and memory, not "
             "quality).", ""]
    preset = results.get("preset")
    if preset:
        lines += [f"## Wan2.1-1.3B preset arms ({preset['architecture']}, {'×'.join(map(str, preset['resolution']))})",
                  "", "Per phase, over its steady iterations (warm-up iterations dropped per phase: "
                  f"{preset['warmup_iterations']}; phase switches and saves excluded). TFLOP / iteration: model "
                  "FLOPs (forwards and the backwards autograd runs; under SGTS the expectation over the exit step) / "
                  "hardware FLOPs (plus activation checkpointing's recomputation). MFU and HFU: those over the time "
                  f"and the GPU's dense bf16 peak ({results['peak_bf16_tflops']} TFLOP/s).", "",
                  "| arm | phase | s / generator iteration (n) | TFLOP / iteration, model / hardware | MFU | HFU | "
                  "peak GiB | plan GiB |", "|---|---|---|---|---|---|---|---|"]
        for arm, r in preset["arms"].items():
            if "error" in r:
                lines.append(f"| {arm} | error: {r['error'][:80]} | | | | | | |")
                continue
            plan = r["memory_plan_gib"].get("total")
            for p in r["per_phase"]:
                lines.append(f"| {arm} | {p['phase']} | {p['mean_steady_seconds']:.4g} ({p['steady_iterations']}) | "
                             f"{_tflop(p['model_flops_per_iteration'])} / {_tflop(p['hardware_flops_per_iteration'])}"
                             f" | {_fraction(p['mfu'])} | {_fraction(p['hfu'])} | {r['peak_gib']} | {plan} |")
            steady = r["steady"]
            lines.append(f"| {arm} | all | {steady['seconds'] / steady['iterations']:.4g} ({steady['iterations']}) | "
                         f"| {_fraction(steady['mfu'])} | {_fraction(steady['hfu'])} | | |")
        lines.append("")
    sampling = results.get("sampling")
    if sampling and "error" not in sampling:
        teacher, student = sampling["teacher_40_cfg4"], sampling["student_4_cfg1"]
        lines += ["## Sampling, stock WanPipeline", "", "| | NFE | denoise s | decode s |", "|---|---|---|---|",
                  f"| teacher 40 steps CFG 4 | {sampling['nfe']['teacher']} | {teacher['denoise_seconds'][-1]} | "
                  f"{teacher['decode_seconds']} |",
                  f"| student 4 steps CFG 1 | {sampling['nfe']['student']} | {student['denoise_seconds'][-1]} | "
                  f"{student['decode_seconds']} |",
                  "", f"Wall speed-up of the denoising loop: {sampling['wall_speedup']}×.", ""]
    smoke = results.get("smoke")
    if smoke:
        lines += ["## Smoke study on this device (`dvc repro`, local executor)", "",
                  f"Exit {smoke['returncode']} in {smoke['wall_seconds']} s.", ""]
        if smoke.get("speed_md"):
            lines += [smoke["speed_md"].split("\n", 2)[-1]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch.distributed as dist

    from pdmd_core.realscale.gpu_check import _process_group

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("reports/realscale"))
    parser.add_argument("--parts", default="smoke,preset,sampling", help="comma-separated: smoke, preset, sampling")
    parser.add_argument("--cpu-rehearsal", action="store_true", help="CPU, gloo, tiny architecture")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (MFU, HFU)")
    parser.add_argument("--warmup-iterations", type=int, default=1, help="per phase, not timed (default 1)")
    parser.add_argument("--timed-iterations", type=int, default=None,
                        help="per phase after the warm-up (default 3; 2 with --cpu-rehearsal)")
    args = parser.parse_args(argv)
    timed = args.timed_iterations if args.timed_iterations is not None else (2 if args.cpu_rehearsal else 3)
    if args.warmup_iterations < 0 or timed < 1:
        parser.error(f"need --warmup-iterations >= 0 and --timed-iterations >= 1, got {args.warmup_iterations} "
                     f"and {timed}")
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - {"smoke", "preset", "sampling"})
    if unknown:
        parser.error(f"unknown parts {unknown}")
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (or --cpu-rehearsal)", file=sys.stderr)
        return 2
    root = project_root()
    device_type = "cpu" if args.cpu_rehearsal else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name(0) if device_type == "cuda" else "cpu"
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "parts": parts,
                               "peak_bf16_tflops": None}
    peak = peak_flops(name, args.peak_tflops)
    results["peak_bf16_tflops"] = None if peak is None else peak / 1e12
    args.out.mkdir(parents=True, exist_ok=True)
    if "smoke" in parts:  # first: its jobs are separate processes, before this one holds the GPU
        results["smoke"] = smoke_part(root, args.cpu_rehearsal)
        print(json.dumps({"smoke": {k: v for k, v in results["smoke"].items() if k != "speed_md"}}), flush=True)
    ctx = _process_group(device_type)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part, run in (("preset", lambda: preset_part(root, ctx, work, args.cpu_rehearsal, peak,
                                                         args.warmup_iterations, timed)),
                          ("sampling", lambda: sampling_part(root, ctx, work, args.cpu_rehearsal))):
            if part not in parts:
                continue
            try:
                results[part] = run()
            except Exception as err:  # keep the other parts' figures
                import traceback

                results[part] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            print(json.dumps({part: results[part]}, indent=1, default=str), flush=True)
    suffix = "_cpu_rehearsal" if args.cpu_rehearsal else ""
    (args.out / f"gpu_study{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / f"gpu_study{suffix}.md").write_text(markdown(results))
    dist.destroy_process_group()
    os.environ.pop("MASTER_PORT", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
