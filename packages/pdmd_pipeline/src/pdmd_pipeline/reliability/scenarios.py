"""Each injected fault as a function `scenario(work: Path) -> list[FaultOutcome]` on a small CPU model.

Core faults (always run, ~1 min on one CPU thread):
- `kill_during_checkpoint_write`: a real `pdmd train` process is SIGKILLed half-way through writing a checkpoint's
  temp file; the previous checkpoint must load, the run must resume, and its final parameters and every step's
  metrics must equal an uninterrupted run bit for bit.
- `corrupt_batch_stops` / `corrupt_batch_skips` / `divergence_stops`: NaN/Inf produced for real (a corrupt
  conditioning batch; a learning rate that makes the weights overflow) → the run stops naming role, phase and
  step with the last good checkpoint kept (policy stop), or drops and counts the updates and stops past
  `max_skipped` (policy skip).
- `bad_configs`: every entry point (`pdmd train`, `pdmd teacher train`, `pdmd launch`) given a bad config must
  exit non-zero with one error naming the field, the value and what is allowed, and write nothing.
- `determinism`: two separate `pdmd train` processes with the same config and seed write identical metrics.

Service faults (pdmd_pipeline's tracking spool and SLURM checkpointable job; need the local MLflow server
and SLURM cluster, minutes): `mlflow_outage`, `slurm_preemption`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from pdmd_core.checkpoint import TEMP_PREFIX, latest_checkpoint, list_checkpoints, load_checkpoint

FAULTY_KIND = "pdmd_pipeline.reliability.faults:build_faulty_mlp"
SMALL_MODEL: dict[str, Any] = {"kind": "mlp", "dim": 6, "hidden": 32, "depth": 1, "cond_dim": 8}
SMALL_RUN: dict[str, Any] = {
    "method": "phased", "num_steps": 4, "phases": 2, "shift": 3.0, "batch_size": 8, "ttur_ratio": 2,
    "iterations": [4, 4], "seed": 7, "teacher_cfg": {"scale": 2.0}, "optim": {"ema_decay": 0.9},
    "checkpoint": {"every": 1, "keep_last": 3}, "model": SMALL_MODEL,
}


@dataclass
class FaultOutcome:
    """One injected fault: how it was injected, what the system did, what was lost, and the verdict."""

    group: str
    fault: str
    injected: str
    happened: str
    lost: str
    ok: bool
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def run_config(**over: Any) -> dict[str, Any]:
    """SMALL_RUN with top-level overrides (nested sections replaced whole)."""
    return {**json.loads(json.dumps(SMALL_RUN)), **over}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """One CPU thread per process (identical kernels in every run) and unbuffered output."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def pdmd(args: list[str], log: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[bytes]:
    """Run the `pdmd` CLI in a fresh process; stdout/stderr go to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.run([sys.executable, "-m", "pdmd_core.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env=subprocess_env(), timeout=timeout, check=False)


def generator_state(run_dir: Path) -> list[dict[str, torch.Tensor]]:
    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    return load_checkpoint(path)["generator"]  # type: ignore[no-any-return]


def same_parameters(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


def metrics_by_step(run_dir: Path) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """metrics.jsonl as {step: record}; also the steps logged more than once (replayed after a resume)."""
    out: dict[int, dict[str, Any]] = {}
    replayed: list[int] = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = int(record["step"])
        if step in out:
            replayed.append(step)
            if out[step] != record:
                raise AssertionError(f"step {step} was logged twice with different values")
        out[step] = record
    return out, replayed


def all_finite(state: dict[str, Any]) -> bool:
    tensors = [v for sd in state["generator"] for v in sd.values()]
    tensors += [v for sd in (state["fake"] or []) for v in sd.values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


# ------------------------------------------------------------------------------------ kill mid-checkpoint
def kill_during_checkpoint_write(work: Path, stall_step: int = 6) -> list[FaultOutcome]:
    """SIGKILL `pdmd train` while it writes the checkpoint of `stall_step`, resume, compare with a clean run."""
    start = time.perf_counter()
    cfg = write_config(work / "run.yaml", run_config())
    cut, ref, marker = work / "killed", work / "uninterrupted", work / "stalled.json"
    child = subprocess.Popen(
        [sys.executable, "-m", "pdmd_pipeline.reliability.stall", "--step", str(stall_step), "--marker", str(marker),
         "--", "train", str(cfg), "--run-dir", str(cut)],
        stdout=(work / "killed.log").open("wb"), stderr=subprocess.STDOUT, env=subprocess_env())
    deadline = time.monotonic() + 300
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise RuntimeError(f"the writer never reached the checkpoint of step {stall_step} "
                               f"(exit {child.poll()}); see {work / 'killed.log'}")
        time.sleep(0.05)
    stalled = json.loads(marker.read_text())
    temp_sizes = {Path(p).name: Path(p).stat().st_size for p in stalled["temp_files"]}
    os.kill(child.pid, signal.SIGKILL)
    rc = child.wait()
    ckpts = [p.name for p in list_checkpoints(cut / "checkpoints")]
    leftovers = sorted(p.name for p in (cut / "checkpoints").iterdir() if p.name.startswith(TEMP_PREFIX))
    previous = latest_checkpoint(cut / "checkpoints")
    loadable = previous is not None and int(load_checkpoint(previous)["global_step"]) == stall_step - 1
    resumed = pdmd(["train", str(cfg), "--run-dir", str(cut)], work / "resumed.log")
    clean = pdmd(["train", str(cfg), "--run-dir", str(ref)], work / "uninterrupted.log")
    identical = resumed.returncode == clean.returncode == 0 and same_parameters(generator_state(cut),
                                                                               generator_state(ref))
    cut_metrics, replayed = metrics_by_step(cut) if resumed.returncode == 0 else ({}, [])
    ref_metrics, _ = metrics_by_step(ref) if clean.returncode == 0 else ({}, [])
    metrics_equal = bool(ref_metrics) and cut_metrics == ref_metrics
    temps_after = sorted(p.name for p in (cut / "checkpoints").iterdir() if p.name.startswith(TEMP_PREFIX))
    ok = (rc == -signal.SIGKILL and loadable and f"ckpt_{stall_step:08d}.pt" not in ckpts and bool(leftovers)
          and identical and metrics_equal and not temps_after)
    happened = (f"process killed (exit {rc}) with {stalled['bytes_written']} of {stalled['bytes_total']} bytes in "
                f"temp file {leftovers}; on disk: {ckpts}; latest (step {stall_step - 1}) "
                f"{'loads' if loadable else 'does NOT load'}; resumed run exit {resumed.returncode}, replayed steps "
                f"{replayed}; final generator parameters {'bit-identical' if identical else 'DIFFERENT'} to an "
                f"uninterrupted run, per-step metrics {'identical' if metrics_equal else 'DIFFERENT'}; stale temp "
                f"file {'removed' if not temps_after else 'still there'} by the next save")
    lost = (f"nothing: the {len(replayed)} step(s) after checkpoint {stall_step - 1} were recomputed identically"
            if ok else "see details")
    return [FaultOutcome("checkpoint", "SIGKILL while writing a checkpoint",
                         f"`pdmd train` process whose checkpoint write of step {stall_step} stops half-way through "
                         f"its temp file; SIGKILL sent then", happened, lost, ok, time.perf_counter() - start,
                         {"temp_sizes": temp_sizes, "checkpoints_after_kill": ckpts, "replayed": replayed})]


# ------------------------------------------------------------------------------------ non-finite values
def _train_in_process(cfg_data: dict[str, Any], run_dir: Path) -> tuple[Any, BaseException | None,
                                                                         list[dict[str, float]]]:
    from pdmd_core.callbacks import OnIteration
    from pdmd_core.config import config_from_dict
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    torch.set_num_threads(1)
    cfg = config_from_dict(cfg_data)
    assert cfg.model is not None
    log: list[dict[str, float]] = []
    trainer = Trainer(cfg, build_model(cfg.model.kind, cfg.model.params), run_dir,
                      callbacks=[OnIteration(lambda step, phase, m: log.append({"step": step, "phase": phase, **m}))],
                      progress=False)
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - the fault under test; the caller inspects it
        return trainer, err, log
    return trainer, None, log


def _faulty_model(corrupt: list[tuple[int, str]], value: str, ttur: int) -> dict[str, Any]:
    from pdmd_pipeline.reliability.faults import rollout_index

    return {**SMALL_MODEL, "kind": FAULTY_KIND, "value": value,
            "corrupt_rollouts": [rollout_index(step, role, ttur) for step, role in corrupt]}


def corrupt_batch_stops(work: Path) -> list[FaultOutcome]:
    """Policy stop: an Inf conditioning batch in the generator's rollout at step 6 (phase 1) and a NaN one in
    a critic rollout at step 2 (phase 0); resume the first with clean data and compare with a clean run."""
    from pdmd_core.trainer import NonFiniteError

    out = []
    clean_dir = work / "clean"
    _train_in_process(run_config(), clean_dir)
    for step, role, value in ((6, "generator", "inf"), (2, "fake", "nan")):
        start = time.perf_counter()
        run_dir = work / f"{role}-step{step}"
        trainer, err, _ = _train_in_process(run_config(model=_faulty_model([(step, role)], value, 2)), run_dir)
        expected_phase = 0 if step <= 4 else 1
        named = (isinstance(err, NonFiniteError) and (err.role, err.phase, err.step) == (role, expected_phase, step))
        last = latest_checkpoint(run_dir / "checkpoints")
        state = load_checkpoint(last) if last is not None else None
        kept = state is not None and state["global_step"] == step - 1 and all_finite(state)
        _, again, _ = _train_in_process(run_config(), run_dir)  # data fixed: resume from the kept checkpoint
        identical = again is None and same_parameters(generator_state(run_dir), generator_state(clean_dir))
        ok = named and kept and identical
        out.append(FaultOutcome(
            "non-finite", f"{value.upper()} batch in the {role} rollout (policy stop)",
            f"conditioning of the {role} rollout of step {step} set to {value}",
            f"stopped: `{err}`; latest checkpoint step {None if state is None else state['global_step']} "
            f"({'finite' if kept else 'NOT finite/missing'}); resumed with clean data: final parameters "
            f"{'bit-identical' if identical else 'DIFFERENT'} to a run that never saw the corrupt batch",
            f"the partial step {step} only (recomputed on resume)" if ok else "see details", ok,
            time.perf_counter() - start))
        del trainer
    return out


def corrupt_batch_skips(work: Path) -> list[FaultOutcome]:
    """Policy skip: two corrupt batches are dropped and counted; a third past max_skipped=2 stops the run."""
    from pdmd_core.trainer import NonFiniteError

    start = time.perf_counter()
    corrupt = [(2, "fake"), (5, "generator")]
    guard = {"policy": "skip", "max_skipped": 2}
    trainer, err, log = _train_in_process(
        run_config(model=_faulty_model(corrupt, "nan", 2), non_finite=guard), work / "skip")
    counts = [int(m["non_finite_skipped"]) for m in log]
    gen5 = next(m for m in log if m["step"] == 5)
    final = load_checkpoint(latest_checkpoint(work / "skip" / "checkpoints"))  # type: ignore[arg-type]
    ok_skip = (err is None and counts[-1] == 2 and counts[0] == 0 and counts[1] == 1 and counts[4] == 2
               and math.isnan(gen5["generator_loss"]) and math.isfinite(log[1]["fake_loss"])
               and final["non_finite_skipped"] == 2 and all_finite(final))
    first = FaultOutcome(
        "non-finite", "NaN batches with policy skip (max_skipped=2)",
        "NaN conditioning in one critic rollout of step 2 and in the generator rollout of step 5",
        f"run finished all {len(log)} steps; metric non_finite_skipped per step {counts}; step 5 reports "
        f"generator_loss={gen5['generator_loss']} (update dropped), step 2 fake_loss averages the 1 kept critic "
        f"update; final checkpoint finite, records non_finite_skipped={final['non_finite_skipped']}",
        "the 2 dropped updates (by design, counted)", ok_skip, time.perf_counter() - start)
    start = time.perf_counter()
    corrupt3 = [(2, "fake"), (3, "generator"), (6, "generator")]
    _, err3, log3 = _train_in_process(
        run_config(model=_faulty_model(corrupt3, "nan", 2), non_finite=guard), work / "skip-max")
    ok_max = (isinstance(err3, NonFiniteError) and (err3.role, err3.phase, err3.step) == ("generator", 1, 6)
              and err3.skipped == 2 and len(log3) == 5)
    second = FaultOutcome(
        "non-finite", "3rd NaN batch past max_skipped=2 (policy skip)",
        "NaN conditioning at steps 2 (critic), 3 and 6 (generator)",
        f"stopped after {len(log3)} steps: `{err3}`", "the partial step 6; checkpoints up to step 5 kept",
        ok_max, time.perf_counter() - start)
    del trainer
    return [first, second]


def divergence_stops(work: Path) -> list[FaultOutcome]:
    """A generator learning rate of 1e30 without clipping: the weights overflow and the losses go NaN for real."""
    from pdmd_core.trainer import NonFiniteError

    start = time.perf_counter()
    run_dir = work / "diverge"
    _, err, log = _train_in_process(run_config(optim={"lr_generator": 1e30, "grad_clip": None}), run_dir)
    last = latest_checkpoint(run_dir / "checkpoints")
    state = load_checkpoint(last) if last is not None else None
    ok = (isinstance(err, NonFiniteError) and state is not None and state["global_step"] == err.step - 1
          and all_finite(state))
    return [FaultOutcome(
        "non-finite", "divergence (lr_generator=1e30, no clipping)",
        "no injection: the optimiser blows the generator weights up to ~1e30 in one step",
        f"stopped: `{err}`; latest checkpoint step {None if state is None else state['global_step']} has finite "
        f"weights", "nothing past the last checkpoint; note the guard checks finiteness, so the kept checkpoint "
        "already holds the (finite) exploded weights of step 1", ok, time.perf_counter() - start)]


# ------------------------------------------------------------------------------------ config validation
@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _invoke(args: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from pdmd_core.cli import app

    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 1, f"uncaught {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.output.strip()


TRAIN_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown key", {"ttur": 5}, ["unknown key 'ttur'"]),
    ("unknown nested key", {"optim": {"lr": 1.0}}, ["unknown key 'optim.lr'"]),
    ("invalid phase partition (K ∤ N)", {"phases": 3}, ["phases=3", "num_steps=4"]),
    ("invalid phase boundaries", {"phases": None, "phase_boundaries": [0, 3, 2, 4]},
     ["phase_boundaries", "[0, 3, 2, 4]", "strictly increasing"]),
    ("non-decreasing timesteps", {"timesteps": [1.0, 0.5, 0.7, 0.2, 0.0]},
     ["timesteps", "0.7", "strictly decreasing"]),
    ("shift = 0", {"shift": 0.0}, ["shift = 0.0", "greater than 0"]),
    ("shift < 0", {"shift": -2.0}, ["shift = -2.0", "greater than 0"]),
    ("unknown CFG convention", {"teacher_cfg": {"form": "cfg++"}}, ["teacher_cfg.form = 'cfg++'", "'standard'",
                                                                    "'offset'"]),
    ("unknown method", {"method": "dmd3"}, ["method = 'dmd3'", "'phased'"]),
    ("unknown non-finite policy", {"non_finite": {"policy": "ignore"}}, ["non_finite.policy = 'ignore'", "'skip'"]),
    ("fixed_dmd_t outside phase 0's interval", {"fixed_dmd_t": 0.5}, ["fixed_dmd_t=0.5", "phase 0"]),
    ("missing teacher weights path", {"model": {"kind": "cpu_tier", "teacher": "/nonexistent/teacher.pt"}},
     ["model.teacher = '/nonexistent/teacher.pt'", "no teacher checkpoint"]),
]


def bad_configs(work: Path) -> list[FaultOutcome]:
    """Every entry point × bad value: exit code, the error text, and whether anything was written."""
    out: list[FaultOutcome] = []
    for name, over, needles in TRAIN_CASES:
        start = time.perf_counter()
        case = work / "train" / name.replace(" ", "_").replace("/", "_")
        cfg = write_config(case / "config.yaml", run_config(**over))
        before = _tree(case)
        code, text = _invoke(["train", str(cfg), "--run-dir", str(case / "run")])
        written = sorted(_tree(case) - before)
        ok = code == 2 and all(n in text for n in needles) and not written
        out.append(FaultOutcome("config", f"`pdmd train`: {name}", json.dumps(over), _first_lines(text, code),
                                f"written: {written or 'nothing'}", ok, time.perf_counter() - start))
    out.append(_resume_with_other_config(work / "train" / "resume_mismatch"))
    out.extend(_teacher_train_cases(work / "teacher"))
    out.extend(_launch_cases(work / "launch"))
    return out


def _first_lines(text: str, code: int, lines: int = 3) -> str:
    shown = " / ".join(line.strip() for line in text.splitlines()[:lines])
    return f"exit {code}: {shown}"


def _resume_with_other_config(case: Path) -> FaultOutcome:
    start = time.perf_counter()
    cfg = write_config(case / "a.yaml", run_config(iterations=[1, 1]))
    code0, _ = _invoke(["train", str(cfg), "--run-dir", str(case / "run")])
    other = write_config(case / "b.yaml", run_config(iterations=[1, 1], loss_clamp=5.0))
    before = {p: p.stat().st_mtime_ns for p in (case / "run").rglob("*")}
    code, text = _invoke(["train", str(other), "--run-dir", str(case / "run")])
    changed = sorted(str(p.relative_to(case)) for p in (case / "run").rglob("*")
                     if before.get(p) != p.stat().st_mtime_ns)
    ok = code0 == 0 and code == 2 and "loss_clamp: 10.0 != 5.0" in text and not changed
    return FaultOutcome("config", "`pdmd train`: resume a run dir with a different config", "loss_clamp 10 → 5",
                        _first_lines(text, code), f"written: {changed or 'nothing (config.yaml untouched)'}", ok,
                        time.perf_counter() - start)


def _teacher_train_cases(case: Path) -> list[FaultOutcome]:
    """C's `pdmd teacher train`: unknown key and a bad value in a benchmark config."""
    out = []
    for name, data, needles in (
        ("unknown key", {"data": {"kind": "toy1d"}, "trian": {"iterations": 5}}, ["trian"]),
        ("bad value", {"data": {"kind": "toy1d"}, "train": {"lr": -1.0}}, ["train.lr", "-1.0", "greater than 0"]),
    ):
        start = time.perf_counter()
        folder = case / name.replace(" ", "_")
        cfg = write_config(folder / "bench.yaml", data)
        before = _tree(folder)
        with _environ(PDMD_PROJECT_ROOT=str(folder)):
            code, text = _invoke(["teacher", "train", str(cfg), "--output-dir", str(folder / "out"),
                                  "--no-progress"])
        written = sorted(_tree(folder) - before)
        ok = code not in (0, 1) and all(n in text for n in needles) and not written and "uncaught" not in text
        out.append(FaultOutcome("config", f"`pdmd teacher train`: {name}", json.dumps(data),
                                _first_lines(text, code), f"written: {written or 'nothing'}", ok,
                                time.perf_counter() - start))
    return out


LAUNCH_PARAMS: dict[str, Any] = {
    "executor": "local", "seeds": [0], "iterations": 4,
    "arms": {"phased": {"method": "phased", "phases": 2}},
    "benchmarks": {"toy1d": {"config": "experiments/benchmarks/toy1d.yaml", "teacher": {}, "enforce_bar": False,
                             "arms": ["phased"]}},
}


def _launch_cases(case: Path) -> list[FaultOutcome]:
    """E's `pdmd launch` (params file): unknown key, a bad arm value, slurm without sbatch, a missing teacher."""
    out = []
    empty_bin = case / "empty-bin"
    empty_bin.mkdir(parents=True, exist_ok=True)
    python_bin = str(Path(sys.executable).parent)
    cases: list[tuple[str, dict[str, Any], dict[str, str], list[str]]] = [
        ("unknown key", {"exector": "local"}, {}, ["unknown key 'exector'"]),
        ("arm with shift = 0", {"arms": {"phased": {"method": "phased", "phases": 2, "shift": 0}}}, {},
         ["shift = 0", "greater than 0"]),
        ("executor: slurm without sbatch on PATH", {"executor": "slurm"},
         {"PATH": f"{empty_bin}:{python_bin}"}, ["executor", "slurm", "sbatch"]),
        ("missing teacher checkpoint", {}, {}, ["teacher"]),
    ]
    for name, over, env, needles in cases:
        start = time.perf_counter()
        folder = case / name.replace(" ", "_").replace(":", "")
        params = {**json.loads(json.dumps(LAUNCH_PARAMS)), **over}
        path = write_config(folder / "params.yaml", params)
        (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
        if "PATH" in env and any((Path(d) / "sbatch").exists() for d in env["PATH"].split(":")):
            raise RuntimeError(f"sbatch is still reachable on {env['PATH']}")
        before = _tree(folder)
        with _environ(PDMD_PROJECT_ROOT=str(folder), **env):
            code, text = _invoke(["launch", "--params", str(path)])
        written = sorted(_tree(folder) - before)
        ok = code != 0 and all(n in text for n in needles) and not written and "uncaught" not in text
        out.append(FaultOutcome("config", f"`pdmd launch`: {name}", json.dumps(over) if over else "teacher not "
                                "trained", _first_lines(text, code), f"written: {written or 'nothing'}", ok,
                                time.perf_counter() - start))
    return out


# ------------------------------------------------------------------------------------ determinism
def determinism(work: Path) -> list[FaultOutcome]:
    start = time.perf_counter()
    cfg = write_config(work / "run.yaml", run_config())
    codes = [pdmd(["train", str(cfg), "--run-dir", str(work / name)], work / f"{name}.log").returncode
             for name in ("first", "second")]
    same_metrics = all(c == 0 for c in codes) and (
        (work / "first" / "metrics.jsonl").read_bytes() == (work / "second" / "metrics.jsonl").read_bytes())
    same_params = all(c == 0 for c in codes) and same_parameters(generator_state(work / "first"),
                                                                 generator_state(work / "second"))
    steps = len((work / "first" / "metrics.jsonl").read_text().splitlines()) if codes[0] == 0 else 0
    return [FaultOutcome("determinism", "two separate runs, same config and seed",
                         "two `pdmd train` processes (1 CPU thread each)",
                         f"exit codes {codes}; metrics.jsonl ({steps} steps) byte-identical: {same_metrics}; final "
                         f"generator parameters bit-identical: {same_params}", "nothing",
                         same_metrics and same_params, time.perf_counter() - start)]


CORE_SCENARIOS: dict[str, Callable[[Path], list[FaultOutcome]]] = {
    "kill_during_checkpoint_write": kill_during_checkpoint_write,
    "corrupt_batch_stops": corrupt_batch_stops,
    "corrupt_batch_skips": corrupt_batch_skips,
    "divergence_stops": divergence_stops,
    "bad_configs": bad_configs,
    "determinism": determinism,
}
