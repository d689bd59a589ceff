"""`python -m pdmd_pipeline.reliability.signal_job --config C --run-dir R --out O [options]`: one rank of a
`StopOnSignal` training job (`pdmd_pipeline.realscale.launch.run_training`, DCP checkpoints; one of several
ranks when RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT are set) that sends itself real signals at chosen
points, as SLURM would:

- `--signal STEP:NAME` (repeatable): signal NAME (USR2, TERM) at the end of generator step STEP, before that
  iteration boundary's stop check: what a signal arriving during the step amounts to;
- `--at-fit-end NAME`: after the last step and the final checkpoint, inside the job function;
- `--after-return NAME`: once the job function has returned its result, before the process exits (where
  submitit writes the result);
- `--kill-at POINT --kill-step N`: SIGKILL at POINT of replacing checkpoint N (`faults.kill_during_replace`).

No submitit here: a job stopped by USR2 has no submitit handler to hand over to and exits 128 + 12, one stopped
by TERM 128 + 15; a finished job exits 0. `--out` gets (JSON) the exit status, the result, the stop signal the
job acted on, the signals it ignored once finished and each checkpoint save as [step, phase], before the exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from pdmd_core.callbacks import Callback
from pdmd_pipeline.jobs import StopFlag, StopOnSignal


def signal_number(name: str) -> int:
    """USR2 / TERM (or SIGUSR2 / SIGTERM) as a signal number; anything else is refused naming the value."""
    allowed = {"USR2": signal.SIGUSR2, "TERM": signal.SIGTERM}
    key = name.upper().removeprefix("SIG")
    if key not in allowed:
        raise ValueError(f"signal {name!r} is not allowed; use one of {sorted(allowed)}")
    return int(allowed[key])


def step_signal(text: str) -> tuple[int, int]:
    """'STEP:NAME' → (step, signal number)."""
    step, sep, name = text.partition(":")
    if not sep or not step.isdigit() or int(step) < 1:
        raise ValueError(f"--signal {text!r}: expected STEP:NAME with STEP >= 1, e.g. 8:USR2")
    return int(step), signal_number(name)


def send(signum: int) -> None:
    """A real signal to this process; its Python handler has run when this returns (CPython runs pending
    handlers on the next bytecode boundary, before `os.kill`'s caller goes on)."""
    os.kill(os.getpid(), signum)


class SendSignals(Callback):
    """Sends the planned signals at the end of their steps and at the end of the fit; records every save."""

    def __init__(self, at_step: dict[int, list[int]], at_fit_end: list[int]) -> None:
        self.at_step, self.at_fit_end = at_step, at_fit_end
        self.saves: list[list[int]] = []

    def on_iteration_end(self, trainer: Any, step: int, phase: int, metrics: dict[str, float]) -> None:
        for signum in self.at_step.get(step, []):
            send(signum)

    def on_after_save(self, trainer: Any, path: Path) -> None:
        self.saves.append([trainer.global_step, trainer.phase])

    def on_fit_end(self, trainer: Any) -> None:
        for signum in self.at_fit_end:
            send(signum)


class SignalledTraining(StopOnSignal):
    """`run_training` as a StopOnSignal job, with `SendSignals` among its callbacks."""

    def __init__(self, signals: SendSignals) -> None:
        self.signals = signals
        self.flag: StopFlag | None = None

    def run(self, stop_requested: StopFlag, config: str, run_dir: str) -> dict[str, Any]:  # type: ignore[override]
        from pdmd_pipeline.realscale.launch import run_training

        self.flag = stop_requested
        return run_training(config, run_dir, stop_requested=stop_requested, callbacks=[self.signals])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pdmd_pipeline.reliability.signal_job")
    parser.add_argument("--config", required=True, help="distillation config (YAML)")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON record written before the process exits")
    parser.add_argument("--signal", action="append", default=[], help="STEP:NAME, repeatable")
    parser.add_argument("--at-fit-end", action="append", default=[], help="NAME, repeatable")
    parser.add_argument("--after-return", action="append", default=[], help="NAME, repeatable")
    parser.add_argument("--kill-at", default=None, help="a point of pdmd_pipeline.reliability.faults.REPLACE_POINTS")
    parser.add_argument("--kill-step", type=int, default=None)
    args = parser.parse_args(argv)

    at_step: dict[int, list[int]] = {}
    for text in args.signal:
        step, signum = step_signal(text)
        at_step.setdefault(step, []).append(signum)
    if args.kill_at is not None:
        from pdmd_pipeline.reliability.faults import kill_during_replace

        if args.kill_step is None:
            parser.error("--kill-at needs --kill-step")
        kill_during_replace(args.kill_at, args.kill_step)
    torch.set_num_threads(1)
    signals = SendSignals(at_step, [signal_number(n) for n in args.at_fit_end])
    job = SignalledTraining(signals)
    record: dict[str, Any] = {"exit": 0}
    try:
        record["result"] = job(args.config, args.run_dir)
        for name in args.after_return:
            send(signal_number(name))
    except SystemExit as stop:  # StopOnSignal's exit after a checkpoint (no submitit to requeue here)
        record["exit"] = stop.code
    assert job.flag is not None
    record.update(signum=job.flag.signum, after_finish=job.flag.after_finish, saves=signals.saves)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    sys.exit(record["exit"])


if __name__ == "__main__":
    main()
