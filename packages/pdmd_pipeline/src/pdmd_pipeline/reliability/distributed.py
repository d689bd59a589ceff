"""Faults of multi-rank training, injected for real on the local SLURM cluster: 2-task gloo jobs (FSDP2-sharded
roles, DCP checkpoints) training the tiny Wan2.2 two-expert model (real diffusers classes, LoRA experts).

- `kill_rank_during_save`: rank 1's writer stops half-way through its shard file of a distributed save and is
  SIGKILLed there; the other rank's and its partial files must be ignored, a resubmitted job must resume from
  the last committed step on both ranks and end bit-identical to an uninterrupted run.
- `time_limit_requeue`: a job whose time limit expires mid-run (`--signal=USR2@N`): all ranks agree on the
  iteration to stop at, checkpoint, submitit requeues, the job finishes bit-identical to an uninterrupted run,
  and each step is logged once to a real MLflow server.
- `resume_on_other_rank_count`: a 2-task job cancelled mid-run is resumed by a 1-task job, and a 1-task job by a
  2-task job: the state right after loading equals the committed checkpoint exactly; the finished run matches an
  uninterrupted one within the gradient-averaging tolerance (`pdmd_core.realscale.ddp_check.compare_states`).
- `sharded_export`: `pdmd export` of the sharded run's DCP checkpoint equals the export of the same state saved
  unsharded (one file, by a single process).
- `pickle_payload`: a checkpoint carrying a pickle payload (DCP metadata, a DCP item, a single file) is refused
  by the 2-task job and by `pdmd export`, and the payload never runs.

Shared assets (the tiny model folder, its prompt cache, the uninterrupted reference run) are built once in
`<work>/../distributed-assets` and reused by every scenario of one report.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from pdmd_pipeline.reliability.scenarios import FaultOutcome

PROMPTS = ["a red cat", "a blue dog sitting", "photo of a cat", "the dog runs"]
# After the time limit's cut the run must outlast slurmctld's 30 s between time-limit checks, so that the signal
# lands mid-run: 24 steps took ~60 s on a busy 2-core machine but only ~23 s on an idle one (the signal then came
# after the last step and no requeue happened), so 48 steps.
ITERATIONS = [24, 24]
CHECKPOINT_EVERY = 2
SAVE_STALLED_AT = 6  # a periodic checkpoint step


# ------------------------------------------------------------------------------------------------ assets
def assets(work: Path) -> Path:
    """The shared folder (one per report) holding the tiny Wan2.2 model, its prompt cache and profiles."""
    root = work.parent / "distributed-assets"
    if (root / "ready").exists():
        return root
    from diffusers import WanPipeline

    from pdmd_core.realscale.text_cache import encode_prompts, save_prompt_embeddings
    from pdmd_core.realscale.tiny import tiny_wan22_pipeline

    root.mkdir(parents=True, exist_ok=True)
    tiny_wan22_pipeline(PROMPTS).save_pretrained(root / "base")
    pipe = WanPipeline.from_pretrained(root / "base", transformer=None, transformer_2=None, vae=None)
    save_prompt_embeddings(encode_prompts(pipe, "wan", PROMPTS, batch_size=4, progress=False,
                                          max_sequence_length=16), root / "prompts.safetensors")
    write_profile(root / "profile_2tasks.yaml", tasks=2)
    write_profile(root / "profile_1task.yaml", tasks=1)
    config_path(root)
    (root / "ready").touch()
    return root


def run_config(root: Path, **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": list(ITERATIONS),
        "batch_size": 2, "ttur_ratio": 1, "seed": 11, "generator": {"kind": "lora", "rank": 2, "alpha": 8.0},
        "optim": {"lr_generator": 1e-2, "lr_fake": 1e-3, "ema_decay": 0.9},
        "checkpoint": {"every": CHECKPOINT_EVERY, "keep_last": 3},
        "model": {"kind": "wan", "architecture": "tiny-wan2.2", "model_path": str(root / "base"),
                  "prompt_cache": str(root / "prompts.safetensors"), "resolution": [1, 16, 16]}}
    return raw | over


def config_path(root: Path) -> Path:
    path = root / "config.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(run_config(root), sort_keys=False))
    return path


def write_profile(path: Path, tasks: int, **over: Any) -> Path:
    profile = {"partition": "debug", "nodes": 1, "tasks_per_node": tasks, "cpus_per_task": 1, "mem_gb": 3,
               "timeout_min": 15, "requeue": False, "max_num_timeout": 0, "signal_delay_s": 60, **over}
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def reference_run(root: Path) -> Path:
    """The uninterrupted 2-task run every scenario compares with (trained once per report)."""
    from pdmd_pipeline.realscale.launch import submit_training

    run = root / "reference"
    if not (run / "result.json").exists():
        submit_training(config_path(root), run, root / "profile_2tasks.yaml").results()
    return run


def final_checkpoint(run: Path) -> Path:
    from pdmd_core.checkpoint import latest_checkpoint

    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no committed checkpoint in {run / 'checkpoints'}")
    return path


def trained_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The generator experts of a DCP checkpoint, whole (what export reads; the fake scores end with a phase)."""
    from pdmd_core.distributed_checkpoint import read_tensors

    return read_tensors(checkpoint, "generator.")


def initial_tensors(root: Path) -> dict[str, torch.Tensor]:
    """The generator experts before training (seeded LoRA init), named as in a DCP checkpoint."""
    from pdmd_core.config import load_config
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    cfg = load_config(config_path(root))
    assert cfg.model is not None
    fresh = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), root / "unused", progress=False)
    return {f"generator.{e}.{k}": v for e in range(len(fresh.generator.experts))
            for k, v in fresh.generator.expert_state(e).items()}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wait(predicate: Any, timeout: float, what: str, job: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        if job is not None and job.done():
            raise RuntimeError(f"job {job.job_id} ended before {what}: {_job_error(job)}")
        time.sleep(0.5)


def _job_error(job: Any) -> str:
    """The job's failure as its last `SomeError: message` line (the remote traceback's own), or 'no error'."""
    import re

    try:
        job.results()
    except Exception as err:  # noqa: BLE001 - the failure is what the caller reports
        found = re.findall(r"(\w+(?:Error|Exception)): ([^\n]*)", str(err))
        return f"{found[-1][0]}: {found[-1][1][:400]}" if found else f"{type(err).__name__}: {str(err)[-400:]}"
    return "no error"


def _metrics_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [int(json.loads(line)["step"]) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ in the jobs
def train_with_stalled_save(stall_rank: int, stall_step: int, marker: str, config: str, run_dir: str) -> Any:
    """A training task whose rank `stall_rank` stops in the middle of writing its shards of the distributed save
    of step `stall_step`: it writes its shard file, cuts it to half its size (what a kill during the write
    leaves), writes `marker` (its pid) and sleeps until the scenario SIGKILLs it."""
    from torch.distributed.checkpoint import FileSystemWriter

    from pdmd_core.distributed_checkpoint import staging_name
    from pdmd_pipeline.realscale.launch import train_rank
    from pdmd_pipeline.realscale.slurm import export_torch_env_from_slurm

    export_torch_env_from_slurm()
    rank = int(os.environ.get("RANK", "0"))
    if rank == stall_rank:
        real = FileSystemWriter.write_data

        def write_data(self: Any, plan: Any, planner: Any) -> Any:
            written = real(self, plan, planner)
            folder = Path(str(self.path))
            if folder.name != staging_name(stall_step):
                return written
            written.wait()
            sizes = {}
            for shard in sorted(folder.glob(f"__{rank}_*.distcp")):
                size = shard.stat().st_size
                os.truncate(shard, size // 2)
                sizes[shard.name] = [size // 2, size]
            Path(marker).write_text(json.dumps({"pid": os.getpid(), "rank": rank, "folder": str(folder),
                                                "shards": sizes}))
            time.sleep(600)
            raise TimeoutError("nobody killed the stalled writer")

        FileSystemWriter.write_data = write_data  # type: ignore[method-assign]
    return train_rank(config, run_dir)


def train_recording_loaded_state(config: str, run_dir: str, out: str) -> Any:
    """A training task that writes the whole state right after resuming (rank 0, safetensors) before it trains."""
    from pdmd_core.callbacks import Callback
    from pdmd_core.dtensor_state import gather_for_checkpoint
    from pdmd_core.trainer_state import tensor_state
    from pdmd_pipeline.realscale.launch import run_training
    from pdmd_pipeline.realscale.slurm import export_torch_env_from_slurm

    class RecordLoaded(Callback):
        def on_fit_begin(self, trainer: Any) -> None:
            from safetensors.torch import save_file

            full = gather_for_checkpoint(tensor_state(trainer), keep_full=True)  # collective
            if trainer.rank == 0:
                save_file({k: v.contiguous() for k, v in flatten_tensors(full).items()}, out)

    export_torch_env_from_slurm()
    return run_training(config, run_dir, callbacks=[RecordLoaded()])


def flatten_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts/lists of tensors as {"a.b.c": tensor}, named as DCP flattens a state dict."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else []
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# ------------------------------------------------------------------------------------------------ scenarios
def _started(run: Path, at_least: int) -> Any:
    return lambda: len(_metrics_steps(run)) >= at_least


def kill_rank_during_save(work: Path, stall_step: int = SAVE_STALLED_AT) -> list[FaultOutcome]:
    from pdmd_core.checkpoint import list_checkpoints
    from pdmd_core.distributed_checkpoint import staging_folders
    from pdmd_pipeline.infra import slurm_cluster
    from pdmd_pipeline.realscale.launch import submit_training
    from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile, submit_ranks

    start = time.perf_counter()
    started = slurm_cluster.start()
    try:
        root = assets(work)
        reference = trained_tensors(final_checkpoint(reference_run(root)))
        run, marker = work / "killed", work / "stalled.json"
        executor = distributed_executor(load_distributed_profile(root / "profile_2tasks.yaml"), work / "logs",
                                        name="reliability-kill")
        job = submit_ranks(executor, train_with_stalled_save, 1, stall_step, str(marker), str(config_path(root)),
                           str(run))
        _wait(marker.exists, 600, f"rank 1 to stall in the save of step {stall_step}", job)
        stalled = json.loads(marker.read_text())
        os.kill(int(stalled["pid"]), signal.SIGKILL)
        try:
            _wait(job.done, 120, "the job to end after the kill")
            error = _job_error(job)
            ended = ("rank 0 stopped on its own (gloo: 'Connection closed by peer')"
                     if "Connection closed by peer" in error else f"rank 0 stopped on its own ({error[:150]})")
        except RuntimeError:
            subprocess.run(["scancel", job.job_id], check=False)
            ended = "rank 0 was still waiting after 120 s; the job was cancelled"
        staging = staging_folders(run / "checkpoints")
        left = {p.name: sorted(f.name for f in p.iterdir()) for p in staging}
        committed = [p.name for p in list_checkpoints(run / "checkpoints")]
        resumed = submit_training(config_path(root), run, root / "profile_2tasks.yaml").results()
        final = trained_tensors(final_checkpoint(run))
    finally:
        slurm_cluster.stop(only=started)
    expected = f"ckpt_{stall_step - CHECKPOINT_EVERY:08d}.dcp"
    resumed_from = sorted({Path(r["resumed_from"]).name for r in resumed if r["resumed_from"]})
    same = identical(final, reference)
    cleaned = not staging_folders(run / "checkpoints")
    ok = (bool(staging) and committed[-1:] == [expected] and resumed_from == [expected] and len(resumed) == 2
          and same and cleaned)
    happened = (f"{ended}; left on disk: uncommitted staging folder {left} beside committed {committed}; the "
                f"resubmitted 2-task job resumed from {resumed_from} on both ranks "
                f"({[r['resumed_from'] is not None for r in resumed]}), finished {resumed[0]['steps']} steps with "
                f"generator tensors {'bit-identical' if same else 'DIFFERENT'} to an uninterrupted run; partial "
                f"folder {'removed' if cleaned else 'still there'} by the next save")
    return [FaultOutcome(
        "distributed", "SIGKILL of one rank during a distributed save",
        f"2-task FSDP2 job (tiny Wan2.2): rank 1's writer cut half-way through its shard of the step-{stall_step} "
        f"DCP save ({stalled['shards']}); SIGKILL sent then", happened,
        f"nothing: the steps after the committed step {stall_step - CHECKPOINT_EVERY} were recomputed" if ok else
        "see details", ok, time.perf_counter() - start, {"staging": left, "committed": committed,
                                                         "resumed_from": resumed_from})]


def _elapsed_s(job_id: str) -> int:
    """Run time of a SLURM job from squeue (`[D-][HH:]MM:SS`)."""
    text = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%M"], capture_output=True, text=True,
                          check=True).stdout.strip()
    days, _, clock = text.rpartition("-")
    parts = [int(v) for v in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def _set_time_limit(job_id: str, minutes: int) -> None:
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"], check=True,
                   capture_output=True)


def _restarts(job_id: str) -> int:
    import re

    info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    found = re.search(r"Restarts=(\d+)", info)
    return int(found.group(1)) if found else 0


def time_limit_requeue(work: Path, cut_after: int = 2, signal_delay_s: int = 90) -> list[FaultOutcome]:
    """The job's time limit is set (scontrol update) to expire ~1 minute after the ranks reached `cut_after`
    steps; SLURM sends USR2 `signal_delay_s` before it (`--signal=USR2@N`, checked every ~30 s by slurmctld).
    The submitted limit is 3 minutes, so submitit's own check counts the signal as a time-out; it is raised to 15
    minutes while the job waits, and again once the job is requeued, so that the requeued run can finish."""
    import math

    from mlflow.tracking import MlflowClient

    from pdmd_pipeline.infra import mlflow_server, slurm_cluster
    from pdmd_pipeline.jobs import TrackingTarget
    from pdmd_pipeline.realscale.launch import submit_training
    from pdmd_pipeline.tracking import Spool

    start = time.perf_counter()
    port = mlflow_server.free_port()
    url = f"http://127.0.0.1:{port}"
    started = slurm_cluster.start()
    mlflow_server.start(root=work / "mlflow", port=port)
    try:
        root = assets(work)
        reference = trained_tensors(final_checkpoint(reference_run(root)))
        profile = write_profile(work / "profile_timeout.yaml", tasks=2, timeout_min=3, signal_delay_s=signal_delay_s,
                                requeue=True, max_num_timeout=3)
        target = TrackingTarget(uri=url, experiment="pdmd/reliability", run_key="timeout/tiny-wan22",
                                parent_key=None, spool_root=str(work / "spool"), run_name="time-limit",
                                tags={"fault": "time limit"})
        run = work / "run"
        job = submit_training(config_path(root), run, profile, tracking=target)
        _set_time_limit(job.job_id, 15)
        _wait(_started(run, cut_after), 900, f"step {cut_after} of the job", job)
        elapsed = _elapsed_s(job.job_id)
        limit = math.ceil((elapsed + 30) / 60)
        _set_time_limit(job.job_id, limit)
        cut_at = len(_metrics_steps(run))
        _wait(lambda: _restarts(job.job_id) >= 1, 600, "the requeue after the time limit", job)
        stopped_at = max(_metrics_steps(run))
        _set_time_limit(job.job_id, 15)
        results = job.results()
        spool = Spool(work / "spool", target.run_key)
        run_id = spool.run_id
        client = MlflowClient(url)
        history = client.get_metric_history(run_id, "generator_loss") if run_id else []
        status = client.get_run(run_id).info.status if run_id else None
    finally:
        mlflow_server.stop(work / "mlflow")
        slurm_cluster.stop(only=started)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((run / "slurm").rglob("*_log.*")))
    timeouts = logs.count("this job is timed-out")
    restarts = int(results[0]["slurm"].get("slurm_restart_count", "0"))
    steps = sum(ITERATIONS)
    server = Counter(m.step for m in history)
    spooled = Counter(int(op["step"]) for op in spool.ops()
                      if op["op"] == "metrics" and "generator_loss" in op["metrics"])
    once = sorted(server) == list(range(1, steps + 1)) and set(server.values()) == {1} and spooled == server
    same = identical(trained_tensors(final_checkpoint(run)), reference)
    resumed = results[0]["resumed_from"]
    mid_run = cut_after <= stopped_at < steps
    ok = (restarts >= 1 and timeouts >= 1 and mid_run and results[0]["steps"] == steps and same and once
          and status == "FINISHED" and resumed is not None)
    return [FaultOutcome(
        "distributed", "time limit expires mid-run (2 ranks)",
        f"2-task job with `--signal=USR2@{signal_delay_s}`; after {elapsed} s of run time (step {cut_at} of "
        f"{steps}) its time limit set (scontrol update) to {limit} min, i.e. to expire {limit * 60 - elapsed} s later",
        f"USR2 taken by submitit as a time-out ('this job is timed-out'); all ranks stopped after the same step "
        f"{stopped_at} with a committed checkpoint, submitit requeued (restarts: {restarts}), the requeued job "
        f"resumed from {Path(resumed).name if resumed else None} and finished {results[0]['steps']} steps with "
        f"generator tensors {'bit-identical' if same else 'DIFFERENT'} to an uninterrupted run; MLflow run "
        f"{status}, generator_loss on the server for {len(server)} steps ({'each once' if once else 'NOT once each'})",
        "nothing" if ok else "see details", ok, time.perf_counter() - start,
        {"restarts": restarts, "timeouts": timeouts, "server_steps": dict(server), "stopped_at": stopped_at})]


def _stop_then_resume(work: Path, root: Path, first: int, second: int, stop_after: int) -> FaultOutcome:
    from pdmd_core.checkpoint import checkpoint_step, list_checkpoints
    from pdmd_core.distributed_checkpoint import read_tensors
    from pdmd_core.realscale.ddp_check import compare_states
    from pdmd_pipeline.realscale.launch import submit_training
    from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile, submit_ranks

    start = time.perf_counter()
    profiles = {1: root / "profile_1task.yaml", 2: root / "profile_2tasks.yaml"}
    run = work / f"{first}to{second}"
    job = submit_training(config_path(root), run, profiles[first])
    _wait(_started(run, stop_after), 600, f"step {stop_after} of the {first}-task job", job)
    subprocess.run(["scancel", job.job_id], check=True)  # SIGTERM: stop at an agreed iteration
    _wait(job.done, 120, "the cancelled job to end")
    committed = list_checkpoints(run / "checkpoints")[-1]
    saved = read_tensors(committed)
    executor = distributed_executor(load_distributed_profile(profiles[second]), work / f"logs{first}to{second}",
                                    name="reliability-ranks")
    loaded_file = work / f"loaded_{first}to{second}.safetensors"
    results = submit_ranks(executor, train_recording_loaded_state, str(config_path(root)), str(run),
                           str(loaded_file)).results()
    from safetensors.torch import load_file

    loaded = load_file(str(loaded_file))
    exact = identical(saved, loaded) and len(loaded) > 0
    missing = sorted(set(saved) ^ set(loaded))
    final, ref = trained_tensors(final_checkpoint(run)), trained_tensors(final_checkpoint(reference_run(root)))
    report = compare_states(final, ref, initial_tensors(root))
    ok = (exact and not missing and results[0]["resumed_from"] is not None
          and Path(results[0]["resumed_from"]).name == committed.name and report["same_training"]
          and results[0]["world_size"] == second and results[0]["steps"] == sum(ITERATIONS))
    step = checkpoint_step(committed)
    return FaultOutcome(
        "distributed", f"resume on another rank count ({first} → {second})",
        f"{first}-task job cancelled (scancel) after ~{stop_after} steps; the run resubmitted as a {second}-task job",
        f"stopped with committed checkpoint step {step}; the {second}-task job loaded it: "
        f"{len(loaded)} tensors (generator, fake scores, EMA, AdamW moments) {'equal' if exact else 'NOT equal'} "
        f"to the saved ones{'' if not missing else f' (missing {missing[:3]})'}; finished {results[0]['steps']} "
        f"steps; final tensors vs an uninterrupted 2-task run: max |diff| {report['max_abs_diff']:.2e}, worst tensor "
        f"{report['worst_diff_over_update']:.3%} of its training update in norm (tolerance 1%: gradient averaging "
        f"over another rank count sums in another order)",
        "nothing" if ok else "see details", ok, time.perf_counter() - start,
        {"report": report, "committed_step": step})


def resume_on_other_rank_count(work: Path, stop_after: int = 13) -> list[FaultOutcome]:
    from pdmd_pipeline.infra import slurm_cluster

    started = slurm_cluster.start()
    try:
        root = assets(work)
        reference_run(root)
        return [_stop_then_resume(work, root, 2, 1, stop_after), _stop_then_resume(work, root, 1, 2, stop_after)]
    finally:
        slurm_cluster.stop(only=started)


def _export(run: Path, out: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "pdmd_core.cli", "export", str(run), "--out", str(out), "--format",
                           fmt], capture_output=True, text=True, timeout=600, check=False)


def _export_files(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors":
            out[str(path.relative_to(folder))] = load_file(str(path))
        elif path.is_file():
            out[str(path.relative_to(folder))] = path.read_text()
    return out


def _same_export(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys() or not a:
        return False
    return all(identical(a[k], b[k]) if isinstance(a[k], dict) else a[k] == b[k] for k in a)


def sharded_export(work: Path) -> list[FaultOutcome]:
    from pdmd_core.checkpoint import checkpoint_step, latest_checkpoint
    from pdmd_core.config import load_config
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer
    from pdmd_pipeline.infra import slurm_cluster

    start = time.perf_counter()
    started = slurm_cluster.start()
    try:
        root = assets(work)
        sharded_run = reference_run(root)
    finally:
        slurm_cluster.stop(only=started)
    dcp_checkpoint = final_checkpoint(sharded_run)
    unsharded = work / "unsharded"
    shutil.copytree(dcp_checkpoint, unsharded / "checkpoints" / dcp_checkpoint.name, dirs_exist_ok=True)
    cfg = load_config(config_path(root))
    assert cfg.model is not None
    torch.set_num_threads(1)
    one = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), unsharded, progress=False)  # one process
    one.resume()
    single_file = one.save()
    shutil.rmtree(unsharded / "checkpoints" / dcp_checkpoint.name)
    outcomes = []
    for fmt in ("lora", "full"):
        a, b = work / f"export-sharded-{fmt}", work / f"export-unsharded-{fmt}"
        runs = [_export(sharded_run, a, fmt), _export(unsharded, b, fmt)]
        files_a, files_b = (_export_files(f) if f.exists() else {} for f in (a, b))
        same = all(r.returncode == 0 for r in runs) and _same_export(files_a, files_b)
        tensors = sum(len(v) for v in files_a.values() if isinstance(v, dict))
        outcomes.append(FaultOutcome(
            "distributed", f"export ({fmt}) of a sharded run vs the same run saved unsharded",
            f"`pdmd export --format {fmt}` of the 2-task FSDP2 run's committed DCP checkpoint "
            f"(step {checkpoint_step(dcp_checkpoint)}, read directly) and of the same state saved as one file by "
            f"a single process ({single_file.name})",
            f"exit codes {[r.returncode for r in runs]}; {len(files_a)} files, {tensors} tensors: "
            f"{'identical' if same else 'DIFFERENT'} (tensors bit for bit, manifest and scheduler equal)"
            + ("" if same else f"; stderr {[r.stderr[-300:] for r in runs]}"),
            "nothing" if same else "see details", same, time.perf_counter() - start))
        start = time.perf_counter()
    assert latest_checkpoint(unsharded / "checkpoints") == single_file
    return outcomes


class _Payload:
    """Unpickling this creates a marker file: the stand-in for any code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def pickle_payload(work: Path) -> list[FaultOutcome]:
    import io
    import pickle

    import torch.distributed.checkpoint as dcp

    from pdmd_core.checkpoint import load_checkpoint
    from pdmd_pipeline.infra import slurm_cluster
    from pdmd_pipeline.realscale.launch import submit_training

    start = time.perf_counter()
    started = slurm_cluster.start()
    marker = work / "payload-ran"
    try:
        root = assets(work)
        good = final_checkpoint(reference_run(root))
        # 1. the run's newest checkpoint gets a .metadata that is a pickle payload; the 2-task job resumes the run
        run = work / "run"
        shutil.copytree(good, run / "checkpoints" / good.name)
        crafted = run / "checkpoints" / "ckpt_00009999.dcp"
        shutil.copytree(good, crafted)
        (crafted / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
        job = submit_training(config_path(root), run, root / "profile_2tasks.yaml")
        job_error = _job_error(job)
    finally:
        slurm_cluster.stop(only=started)
    probe = io.BytesIO()  # the payload is live: unpickled the unsafe way, it runs
    torch.save({"x": _Payload(work / "payload-is-live")}, probe)
    probe.seek(0)
    torch.load(probe, weights_only=False)
    live = (work / "payload-is-live").exists()
    # 2. a DCP item that DCP itself would unpickle with weights_only=False; 3. a single-file checkpoint
    item_run = work / "item"
    item = item_run / "checkpoints" / good.name
    shutil.copytree(good, item)
    tensors = trained_tensors(good)
    name = next(k for k in tensors if k.startswith("generator."))
    poisoned: dict[str, Any] = dict(tensors)
    poisoned[name] = _Payload(marker)
    for shard in item.glob("*.distcp"):
        shard.unlink()
    dcp.save(poisoned, checkpoint_id=str(item), no_dist=True)
    file_run = work / "file"
    (file_run / "checkpoints").mkdir(parents=True)
    state = {"format": 1, "config": json.loads((good / "trainer.json").read_text())["config"],
             "generator": [], "callbacks": {"x": _Payload(marker)}}
    torch.save(state, file_run / "checkpoints" / "ckpt_00000001.pt")
    exports = {what: _export(path, work / f"export-{what}", "lora")
               for what, path in (("dcp-item", item_run), ("single-file", file_run))}
    try:
        load_checkpoint(file_run / "checkpoints" / "ckpt_00000001.pt")
        direct = "loaded (NOT refused)"
    except Exception as err:  # noqa: BLE001 - the refusal is the expected outcome
        direct = type(err).__name__
    refused_job = "UnsafeCheckpointError" in job_error and "refused to load" in job_error
    refused_exports = all(r.returncode == 2 and "refused to load" in r.stderr for r in exports.values())
    never_ran = not marker.exists()
    ok = live and refused_job and refused_exports and direct == "UnsafeCheckpointError" and never_ran
    return [FaultOutcome(
        "distributed", "checkpoint carrying a pickle payload",
        "a `__reduce__` payload that creates a marker file, planted as a DCP checkpoint's .metadata (newest "
        "checkpoint of a run resumed by a 2-task job), as a DCP data item (`pdmd export`) and inside a single-file "
        "checkpoint (`pdmd export`, load_checkpoint)",
        f"payload live when unpickled unsafely: {live}; 2-task job resuming the run: "
        f"{_refusal(job_error) if refused_job else job_error}; "
        f"pdmd export exit codes {[r.returncode for r in exports.values()]} "
        f"({'refused' if refused_exports else 'NOT refused'}); load_checkpoint: {direct}; marker file "
        f"{'never created' if never_ran else 'CREATED'}",
        "nothing (no file written, no code run)" if ok else "see details", ok, time.perf_counter() - start)]


def _refusal(error: str) -> str:
    """`UnsafeCheckpointError: refused to load <file> (would call `x`)` from a job's error text."""
    import re

    file = re.search(r"refused to load (\S+):", error)
    call = re.search(r"would call `([^`]+)`", error)
    return (f"UnsafeCheckpointError, refused to load {Path(file.group(1)).parent.name}/{Path(file.group(1)).name}"
            f"{f' (unpickling would call `{call.group(1)}`)' if call else ''}" if file else error[:200])


DISTRIBUTED_SCENARIOS: dict[str, Callable[[Path], list[FaultOutcome]]] = {
    "kill_rank_during_save": kill_rank_during_save,
    "time_limit_requeue": time_limit_requeue,
    "resume_on_other_rank_count": resume_on_other_rank_count,
    "sharded_export": sharded_export,
    "pickle_payload": pickle_payload,
}
