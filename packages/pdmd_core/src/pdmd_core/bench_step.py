"""`pdmd bench step`: cost of one generator iteration (with its TTUR fake updates) per method.

For one fixed MLP velocity model (model kind `mlp`, random weights) and batch, each arm — dmd (1 step),
dmd_full (N=4), sgts (N=4), phased K=2 and K=4 (N=4, backprop inside a phase) — runs `repeats` timed
iterations after 2 warm-up ones. Measured per iteration:

- wall time (median, seconds; CUDA synchronised), with only the model-call timers attached;
- peak memory above the resting state. On CUDA: torch.cuda.max_memory_allocated() during the iteration minus
  memory_allocated() before it (weights, optimiser state and grads of earlier iterations are resting state).
  On CPU: the peak over the iteration's autograd graphs of the bytes of tensors saved for backward (unique
  storages, parameters excluded, via torch.autograd.graph.saved_tensors_hooks) — the activation memory that
  depends on the method; temporaries freed during the forward are not counted. Measured in separate
  iterations from the timing. The JSON says which measure was used.
- model time: forward time inside the teacher / fake / generator modules (forward pre/post hooks) plus the
  time inside `.backward()` calls; `overhead_ratio` = iteration time / model time of the phased K=2 arm
  (also given per arm), i.e. how much the engine (rollout bookkeeping, loss math, optimiser steps, clipping)
  adds on top of the model calls the iteration must make.

For phased arms, the measured phase is the last one (the deepest rollout: all earlier phases run no-grad).
The headline keys `peak_mem_ratio_phased_vs_dmd`, `peak_mem_ratio_phased_vs_full` and `overhead_ratio` use
phased K=4 (one gradient-recorded step per phase, as the paper's memory argument assumes); the K=2 arms
(backprop inside the phase, and SGTS inside the phase) are reported under their own keys.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from pdmd_core.config import config_from_dict
from pdmd_core.models.registry import build_model

ARMS: dict[str, dict[str, Any]] = {
    "dmd": {"method": "dmd", "num_steps": 1},
    "dmd_full": {"method": "dmd_full", "num_steps": 4},
    "sgts": {"method": "sgts", "num_steps": 4},
    "phased_k2": {"method": "phased", "num_steps": 4, "phases": 2},
    "phased_k4": {"method": "phased", "num_steps": 4, "phases": 4},
    "phased_k2_sgts": {"method": "phased", "num_steps": 4, "phases": 2, "in_phase": "sgts"},
}
# The headline ratios use phased K=4 (one gradient-recorded step per phase: the paper's memory claim, §3.3);
# K=2 with backprop through both steps of a phase and K=2 with SGTS inside the phase get their own keys.
HEADLINE_ARM = "phased_k4"


@dataclass
class BenchSpec:
    device: str = "cpu"
    dim: int = 256
    hidden: int = 512
    depth: int = 3
    batch_size: int = 128
    ttur_ratio: int = 5
    repeats: int = 5
    threads: int = 1
    shift: float = 5.0


class _SavedBytes:
    """Bytes of unique storages saved for backward, per graph; reports the largest graph of an iteration."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude  # parameter storages (weights exist anyway; linear layers save them)
        self.current: dict[int, int] = {}
        self.peak = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.current[storage.data_ptr()] = storage.nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def close_graph(self) -> None:
        self.peak = max(self.peak, sum(self.current.values()))
        self.current = {}


class _ModelTimer:
    def __init__(self, modules: list[nn.Module], cuda: bool) -> None:
        self.cuda, self.total, self._start = cuda, 0.0, 0.0
        self._depth = 0
        self.handles = []
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre(self, *_: Any) -> None:
        if self._depth == 0:
            self._start = self._now()
        self._depth += 1

    def _post(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.total += self._now() - self._start

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _bench_arm(name: str, arm: dict[str, Any], spec: BenchSpec) -> dict[str, Any]:
    from pdmd_core.trainer import Trainer

    cuda = spec.device.startswith("cuda")
    cfg = config_from_dict({**arm, "shift": spec.shift, "batch_size": spec.batch_size,
                            "ttur_ratio": spec.ttur_ratio, "teacher_cfg": {"scale": 3.0}, "device": spec.device,
                            "optim": {"lr_generator": 1e-5, "lr_fake": 1e-5}})
    bundle = build_model("mlp", {"dim": spec.dim, "hidden": spec.hidden, "depth": spec.depth, "cond_dim": 64},
                         spec.device)
    trainer = Trainer(cfg, bundle, run_dir="/nonexistent-bench", progress=False)
    phase = cfg.num_phases - 1
    trainer.phase = phase
    trainer.begin_phase(phase)
    modules = [trainer.teacher.module, *trainer.fake.experts, *trainer.generator.experts]
    saved = _SavedBytes({p.untyped_storage().data_ptr() for m in modules for p in m.parameters()})
    backward_time = 0.0
    original_backward = torch.Tensor.backward

    def timed_backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        nonlocal backward_time
        saved.close_graph()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        original_backward(self, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        backward_time += time.perf_counter() - t0

    walls, model_times, peaks = [], [], []
    torch.Tensor.backward = timed_backward  # type: ignore[method-assign]
    try:
        # timed iterations (model-call timers on, saved-tensor hooks off: they would slow the step down)
        for it in range(2 + spec.repeats):
            timer = _ModelTimer(modules, cuda)
            backward_time = 0.0
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.train_iteration()
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            timer.remove()
            if it >= 2:
                walls.append(wall)
                model_times.append(timer.total + backward_time)
        # memory iterations: peak above the resting state
        for _ in range(2):
            saved.peak, saved.current = 0, {}
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                resting = torch.cuda.memory_allocated()
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                trainer.train_iteration()
            peaks.append(torch.cuda.max_memory_allocated() - resting if cuda else saved.peak)
    finally:
        torch.Tensor.backward = original_backward  # type: ignore[method-assign]
    wall, model = statistics.median(walls), statistics.median(model_times)
    return {"wall_s": wall, "model_s": model, "overhead_ratio": wall / model, "peak_bytes": max(peaks),
            "steps": cfg.num_steps, "phases": cfg.num_phases, "measured_phase": phase}


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    from tqdm.auto import tqdm

    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    arms = {}
    for name in tqdm(ARMS, desc="bench step"):
        arms[name] = _bench_arm(name, ARMS[name], spec)
    cuda = spec.device.startswith("cuda")
    phased = arms[HEADLINE_ARM]
    ratios = {f"peak_mem_ratio_{name}_vs_{ref}": arms[name]["peak_bytes"] / arms[ref]["peak_bytes"]
              for name in ("phased_k2", "phased_k2_sgts", "phased_k4", "sgts") for ref in ("dmd", "dmd_full")}
    return {
        "peak_mem_ratio_phased_vs_dmd": phased["peak_bytes"] / arms["dmd"]["peak_bytes"],
        "peak_mem_ratio_phased_vs_full": phased["peak_bytes"] / arms["dmd_full"]["peak_bytes"],
        "overhead_ratio": phased["overhead_ratio"],
        "headline_arm": HEADLINE_ARM,
        **ratios,
        **{f"overhead_ratio_{name}": arm["overhead_ratio"] for name, arm in arms.items()},
        "memory_measure": ("cuda max_memory_allocated above resting" if cuda
                           else "bytes saved for backward (unique storages), max over the iteration's graphs"),
        "device": spec.device if not cuda else torch.cuda.get_device_name(),
        "spec": asdict(spec),
        "arms": arms,
    }
