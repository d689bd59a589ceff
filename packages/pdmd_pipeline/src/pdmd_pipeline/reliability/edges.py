"""Faults at the edges of a run, injected for real without SLURM: `signal_job` processes (the StopOnSignal job
of the multi-rank launcher, DCP checkpoints, the small MLP run of `scenarios`) that send themselves real
signals, or SIGKILL themselves, at chosen points.

- `kill_while_replacing_checkpoint`: a pre-emption on phase 0's last iteration saves step 4 (keep_last 1); the
  requeued job ends the phase and saves step 4 again, and is SIGKILLed at each point of replacing the committed
  copy (`faults.REPLACE_POINTS`). A committed step 4 must be listed and load, the next job must resume from it
  (not from step 0) and end bit-identical to an uninterrupted run, with nothing left over.
- `signal_during_last_step`: USR2 / TERM during the run's last step: the run finishes (one final checkpoint,
  no mid-phase one), the job exits 0 and would not be requeued.
- `signal_after_last_step`: USR2 and TERM after the final checkpoint (inside the job) and after the job function
  returned (where submitit writes the result): the job exits 0.
- `ranks_disagree_on_signal`: 2 gloo ranks, USR2 on one and TERM on the other in the same step: both stop
  after that step with one committed checkpoint and both take the USR2 (requeue) path.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pdmd_pipeline.reliability.scenarios import FaultOutcome, metrics_by_step, run_config, subprocess_env, write_config

ITERATIONS = [4, 4]  # run_config's: step 4 ends phase 0, step 8 the run
PHASE_END = ITERATIONS[0]
LAST_STEP = sum(ITERATIONS)
REQUEUE_EXIT = 128 + signal.SIGUSR2  # StopOnSignal's exit after USR2 where no submitit handler took over
STOP_EXIT = 128 + signal.SIGTERM


def edge_config(work: Path) -> Path:
    """The small run, checkpointing every step and keeping only the last one (so a lost copy is a lost run)."""
    return write_config(work / "run.yaml", run_config(checkpoint={"every": 1, "keep_last": 1}))


def signal_job(config: Path, run_dir: Path, name: str, args: Sequence[str] = (), env: dict[str, str] | None = None,
               timeout: float = 300.0) -> tuple[int, dict[str, Any]]:
    """Run one `signal_job` process to its end; its exit status and its record ({} when it was killed)."""
    out = run_dir.parent / f"{name}.json"
    out.unlink(missing_ok=True)
    with (run_dir.parent / f"{name}.log").open("wb") as log:
        proc = subprocess.run(_command(config, run_dir, out, args), stdout=log, stderr=subprocess.STDOUT,
                              env={**subprocess_env(), **(env or {})}, timeout=timeout, check=False)
    return proc.returncode, json.loads(out.read_text()) if out.exists() else {}


def _command(config: Path, run_dir: Path, out: Path, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pdmd_pipeline.reliability.signal_job", "--config", str(config), "--run-dir",
            str(run_dir), "--out", str(out), *args]


def ranks_job(config: Path, run_dir: Path, name: str, per_rank: Sequence[Sequence[str]],
              timeout: float = 300.0) -> list[tuple[int, dict[str, Any]]]:
    """Run one `signal_job` process per rank (gloo, this machine), each with its own arguments, to their end."""
    from pdmd_pipeline.infra.mlflow_server import free_port

    port, world = free_port(), len(per_rank)
    procs, outs = [], []
    for rank, args in enumerate(per_rank):
        out = run_dir.parent / f"{name}-rank{rank}.json"
        out.unlink(missing_ok=True)
        env = {**subprocess_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        log = (run_dir.parent / f"{name}-rank{rank}.log").open("wb")
        procs.append((subprocess.Popen(_command(config, run_dir, out, args), stdout=log, stderr=subprocess.STDOUT,
                                       env=env), log))
        outs.append(out)
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        finally:
            log.close()
    return [(code, json.loads(out.read_text()) if out.exists() else {}) for code, out in zip(codes, outs, strict=True)]


def generator_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The generator experts of the run's newest committed checkpoint."""
    from pdmd_core.checkpoint import latest_checkpoint
    from pdmd_core.distributed_checkpoint import read_tensors

    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no committed checkpoint in {run_dir / 'checkpoints'}")
    return read_tensors(path, "generator.")


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def leftovers(folder: Path) -> list[str]:
    """Hidden entries (staged, aside, temp) of a checkpoints folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def _name(path: Any) -> str | None:
    return None if path is None else Path(path).name


# ------------------------------------------------------------------------------------ item: re-save killed
def kill_while_replacing_checkpoint(work: Path) -> list[FaultOutcome]:
    """SIGKILL a job at each point of re-saving step 4 over its committed copy; resume; compare."""
    from pdmd_core.checkpoint import latest_checkpoint, list_checkpoints, read_header
    from pdmd_core.distributed_checkpoint import read_tensors
    from pdmd_pipeline.reliability.faults import REPLACE_POINTS

    setup = time.perf_counter()  # the reference and the pre-empted run count towards the first row
    config = edge_config(work)
    ref_code, _ = signal_job(config, work / "uninterrupted", "uninterrupted")
    reference = generator_tensors(work / "uninterrupted") if ref_code == 0 else {}
    ref_metrics = metrics_by_step(work / "uninterrupted")[0] if ref_code == 0 else {}
    base = work / "preempted"
    base_code, base_record = signal_job(config, base, "preempted", ["--signal", f"{PHASE_END}:USR2"])
    base_ckpts = [p.name for p in list_checkpoints(base / "checkpoints")]
    out: list[FaultOutcome] = []
    for point, where in REPLACE_POINTS.items():
        start = setup if not out else time.perf_counter()
        run = work / point
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        killed, _ = signal_job(config, run, f"{point}-killed", ["--kill-at", point, "--kill-step", str(PHASE_END)])
        folder = run / "checkpoints"
        on_disk = sorted(p.name for p in folder.iterdir())
        listed = latest_checkpoint(folder)
        header = read_header(listed) if listed is not None else {}
        loads = listed is not None and bool(read_tensors(listed, "generator."))
        copy = ("the new copy (phase 0 ended)" if header.get("phase") == 1 else
                "the old copy (phase 0 at its last iteration)" if header.get("phase") == 0 else "no copy")
        code, record = signal_job(config, run, f"{point}-resumed")
        resumed_from = _name(record.get("result", {}).get("resumed_from"))
        same = code == 0 and identical(generator_tensors(run), reference)
        metrics, _ = metrics_by_step(run) if code == 0 else ({}, [])
        left = leftovers(folder)
        ok = (ref_code == 0 and base_code == REQUEUE_EXIT and base_ckpts == [f"ckpt_{PHASE_END:08d}.dcp"]
              and killed == -signal.SIGKILL and header.get("global_step") == PHASE_END and loads
              and resumed_from == f"ckpt_{PHASE_END:08d}.dcp" and same and metrics == ref_metrics and not left)
        happened = (f"killed (exit {killed}); on disk: {on_disk}; step {PHASE_END} listed as "
                    f"{_name(listed)}, {copy}, {'loads' if loads else 'does NOT load'}; the next job (exit {code}) "
                    f"resumed from {resumed_from} and finished {record.get('result', {}).get('steps')} steps, "
                    f"generator {'bit-identical' if same else 'DIFFERENT'} to an uninterrupted run, per-step metrics "
                    f"{'identical' if metrics == ref_metrics else 'DIFFERENT'}; left over: {left or 'nothing'}")
        out.append(FaultOutcome(
            "checkpoint", f"SIGKILL while re-saving a step over its committed copy: {point.replace('_', ' ')}",
            f"USR2 on phase 0's last iteration saved step {PHASE_END} (keep_last 1; job exit "
            f"{base_code}); the requeued job ended the phase and saved step {PHASE_END} again, SIGKILLed {where}",
            happened, f"nothing: step {PHASE_END} kept, steps after it trained once" if ok else "see details", ok,
            time.perf_counter() - start,
            {"on_disk": on_disk, "listed": _name(listed), "phase": header.get("phase"), "resumed_from": resumed_from,
             "exit_killed": killed, "left": left, "preempted": base_record}))
    return out


# ------------------------------------------------------------------------------------ item: signal edges
def signal_during_last_step(work: Path) -> list[FaultOutcome]:
    """USR2, then TERM, during the run's last step: the run finishes and the job exits 0."""
    setup = time.perf_counter()  # the reference run counts towards the first row
    config = edge_config(work)
    ref_code, _ = signal_job(config, work / "uninterrupted", "uninterrupted")
    reference = generator_tensors(work / "uninterrupted") if ref_code == 0 else {}
    out: list[FaultOutcome] = []
    for name in ("USR2", "TERM"):
        start = setup if not out else time.perf_counter()
        run = work / f"last-step-{name.lower()}"
        code, record = signal_job(config, run, run.name, ["--signal", f"{LAST_STEP}:{name}"])
        saves = [tuple(s) for s in record.get("saves", [])]
        got = record.get("signum") == getattr(signal, f"SIG{name}")
        finished = record.get("result", {}).get("steps") == LAST_STEP
        same = finished and identical(generator_tensors(run), reference)
        ok = ref_code == 0 and code == 0 and got and finished and saves[-1:] == [(LAST_STEP, 2)] and same \
            and (LAST_STEP, 1) not in saves
        out.append(FaultOutcome(
            "signals", f"{name} during the run's last step",
            f"SIG{name} sent to the job during step {LAST_STEP} of {LAST_STEP} (before that iteration boundary's "
            "stop check)",
            f"exit {code} ({'finished, would not be requeued' if code == 0 else 'NOT finished'}); the job "
            f"{'saw' if got else 'did NOT see'} the signal; saves of step {LAST_STEP} as (step, phase): "
            f"{[s for s in saves if s[0] == LAST_STEP]} (no mid-phase save); final generator "
            f"{'bit-identical' if same else 'DIFFERENT'} to an uninterrupted run",
            "nothing" if ok else "see details", ok, time.perf_counter() - start, {"record": record}))
    return out


def signal_after_last_step(work: Path) -> list[FaultOutcome]:
    """USR2 and TERM after the final checkpoint and after the job function returned: the job exits 0."""
    start = time.perf_counter()
    config = edge_config(work)
    run = work / "after-last-step"
    code, record = signal_job(config, run, run.name, ["--at-fit-end", "USR2", "--at-fit-end", "TERM",
                                                      "--after-return", "USR2", "--after-return", "TERM"])
    finished = record.get("result", {}).get("steps") == LAST_STEP
    ignored = record.get("after_finish") == [signal.SIGUSR2, signal.SIGTERM]
    ok = code == 0 and finished and ignored and (run / "result.json").is_file()
    return [FaultOutcome(
        "signals", "USR2 and TERM after the run's last step",
        "SIGUSR2 then SIGTERM sent to the job after its final checkpoint (inside the job function), and again "
        "after the job function returned its result (where submitit writes it), before the process exits",
        f"exit {code}; result {'written' if finished else 'MISSING'} ({record.get('result', {}).get('steps')} "
        f"steps); the signals inside the job after its final checkpoint were not acted on, those after the result "
        f"were recorded and ignored: {record.get('after_finish')}",
        "nothing" if ok else "see details", ok, time.perf_counter() - start, {"record": record})]


def ranks_disagree_on_signal(work: Path, step: int = 3) -> list[FaultOutcome]:
    """Two gloo ranks: USR2 on rank 0 and TERM on rank 1 in the same step; both must take the USR2 path."""
    from pdmd_core.checkpoint import list_checkpoints

    start = time.perf_counter()
    config = edge_config(work)
    run = work / "disagree"
    stopped = ranks_job(config, run, "stopped", [["--signal", f"{step}:USR2"], ["--signal", f"{step}:TERM"]])
    codes = [code for code, _ in stopped]
    adopted = [record.get("signum") for _, record in stopped]
    ckpts = [p.name for p in list_checkpoints(run / "checkpoints")]
    resumed = ranks_job(config, run, "resumed", [[], []])
    resumed_from = sorted({str(_name(r.get("result", {}).get("resumed_from"))) for _, r in resumed})
    finished = [r.get("result", {}).get("steps") for _, r in resumed]
    ok = (codes == [REQUEUE_EXIT] * 2 and adopted == [signal.SIGUSR2] * 2 and ckpts == [f"ckpt_{step:08d}.dcp"]
          and resumed_from == [f"ckpt_{step:08d}.dcp"] and finished == [LAST_STEP] * 2)
    names: dict[Any, str] = {signal.SIGUSR2: "USR2", signal.SIGTERM: "TERM"}
    return [FaultOutcome(
        "signals", "USR2 on one rank, TERM on the other, in the same step",
        f"2-rank gloo job (one process per rank, no SLURM): SIGUSR2 to rank 0 and SIGTERM to rank 1 during step "
        f"{step}",
        f"both ranks stopped after step {step} with {ckpts} committed and adopted "
        f"{[names.get(s, s) for s in adopted]}: exits {codes} (128+USR2: the requeue path, where submitit's "
        f"handler requeues); the next 2-rank job resumed from {resumed_from} and finished {finished} steps",
        "nothing" if ok else "see details", ok, time.perf_counter() - start,
        {"codes": codes, "adopted": adopted, "committed": ckpts, "resumed_from": resumed_from}),
    ]


EDGE_SCENARIOS: dict[str, Callable[[Path], list[FaultOutcome]]] = {
    "kill_while_replacing_checkpoint": kill_while_replacing_checkpoint,
    "signal_during_last_step": signal_during_last_step,
    "signal_after_last_step": signal_after_last_step,
    "ranks_disagree_on_signal": ranks_disagree_on_signal,
}
