"""The trainer's checkpoint state: what a checkpoint holds, how a run resumes from it, and which config changes
a resume refuses.

A checkpoint (`pdmd_core.checkpoint`, atomic, keep last K) holds every role (generator experts, the phase's fake
score), the optimisers, the EMA, the RNG states (trainer generator, torch, CUDA, Python), phase / step counters,
the non-finite guard's skip count and the callbacks' states, so a resumed run equals an uninterrupted one
(bit-identical on CPU). With sharded (DTensor) roles every rank keeps its own shards of the fake scores and the
optimiser moments; the generator experts and their EMA are gathered full into rank 0's checkpoint (export reads
it). A rank resuming from a checkpoint written by another rank re-seeds its generator from (seed, rank, step)
(`resume_seed`) rather than adopting the writer's stream.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pdmd_core.checkpoint import latest_checkpoint, load_checkpoint, remove_stale_temporaries, save_checkpoint
from pdmd_core.config import DistillConfig
from pdmd_core.dtensor_state import gather_for_checkpoint, local_shards, shard_optimizer_state
from pdmd_core.non_finite import NonFiniteError

if TYPE_CHECKING:
    from pdmd_core.trainer import Trainer

CHECKPOINT_FORMAT = 1
# Fields a resume may change: where checkpoints go, the device, where the model is read from, the guard.
RESUME_INSENSITIVE = {"checkpoint", "device", "model", "non_finite"}


def state_dict(trainer: Trainer) -> dict[str, Any]:
    started = trainer.phase_started
    return {
        "format": CHECKPOINT_FORMAT,
        "config": trainer.cfg.model_dump(mode="json"),
        "phase": trainer.phase,
        "iter_in_phase": trainer.iter_in_phase,
        "global_step": trainer.global_step,
        "phase_started": started,
        "rank": trainer.rank,
        "non_finite_skipped": trainer.guard.skipped,
        "generator": [trainer.generator.expert_state(e) for e in range(len(trainer.generator.experts))],
        "fake": trainer.fake.state_dict() if started else None,
        "opt_generator": trainer.opt_gen.state_dict() if started and trainer.opt_gen else None,
        "opt_fake": trainer.opt_fake.state_dict() if started and trainer.opt_fake else None,
        "ema": trainer.ema.state_dict() if started and trainer.ema else None,
        "rng": {"trainer": trainer.rng.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python": random.getstate()},
        "callbacks": trainer.callbacks.state_dict(),
    }


def check_weights(trainer: Trainer) -> None:
    """Never write a checkpoint with non-finite trainable weights (the last good one must stay last)."""
    for role, params in (("generator", trainer.generator.trainable_parameters()),
                         ("fake", [p for m in trainer.fake.experts for p in m.parameters()])):
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise NonFiniteError(role, "weights", trainer.phase, trainer.global_step, float("nan"))


def save(trainer: Trainer) -> Path:
    check_weights(trainer)
    remove_stale_temporaries(trainer.checkpoint_dir)  # a killed earlier write left only a temp file
    state = state_dict(trainer)
    if trainer.sharded:  # generator + EMA full on rank 0 (export), the rest sharded (pdmd_core.dtensor_state)
        full = gather_for_checkpoint({key: state.pop(key) for key in ("generator", "ema")})
        state = local_shards(state) | full
    return save_checkpoint(trainer.checkpoint_dir, trainer.global_step, state, trainer.cfg.checkpoint.keep_last)


def load_state_dict(trainer: Trainer, state: dict[str, Any]) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
    saved = DistillConfig.model_validate(state["config"])
    mismatch = training_mismatch(saved, trainer.cfg)
    if mismatch:
        raise ValueError(f"checkpoint was written with a different config: {mismatch}")
    for e, sd in enumerate(state["generator"]):
        trainer.generator.load_expert_state(e, sd)
    trainer.phase = int(state["phase"])
    trainer.global_step = int(state["global_step"])
    trainer.guard.skipped = int(state.get("non_finite_skipped", 0))
    if state["phase_started"]:
        trainer.begin_phase(trainer.phase)
        trainer.fake.load_state_dict(state["fake"])
        assert trainer.opt_gen is not None and trainer.opt_fake is not None
        trainer.opt_gen.load_state_dict(state["opt_generator"])
        trainer.opt_fake.load_state_dict(state["opt_fake"])
        shard_optimizer_state(trainer.opt_gen)  # no-op for unsharded parameters
        shard_optimizer_state(trainer.opt_fake)
        if trainer.ema is not None:
            trainer.ema.load_state_dict(state["ema"])
    else:
        trainer.phase_started = False
    trainer.iter_in_phase = int(state["iter_in_phase"])
    rng = state["rng"]  # RNG states are CPU byte tensors whatever map_location did
    if int(state.get("rank", 0)) == trainer.rank:
        trainer.rng.set_state(rng["trainer"].cpu())
    else:  # another rank's stream: continue with a distinct, reproducible one of our own
        trainer.rng.manual_seed(resume_seed(trainer.rank_seed, trainer.global_step))
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    random.setstate(rng["python"])
    trainer.callbacks.load_state_dict(state.get("callbacks") or {})


def resume(trainer: Trainer) -> Path | None:
    """Load the latest checkpoint of the trainer's run dir if there is one; returns its path. Writes nothing:
    temp files of a checkpoint write that was killed are never read (and are removed by the next save)."""
    path = latest_checkpoint(trainer.checkpoint_dir)
    if path is not None:
        load_state_dict(trainer, load_checkpoint(path, trainer.device))
    return path


def training_mismatch(saved: DistillConfig, current: DistillConfig) -> str:
    """The config differences a resume refuses ('' if none): everything but RESUME_INSENSITIVE fields and the
    last phase's iteration budget (extending a run is fine)."""
    a, b = saved.model_dump(mode="json"), current.model_dump(mode="json")
    diffs = [f"{k}: {a[k]!r} != {b.get(k)!r}" for k in a if k not in RESUME_INSENSITIVE and a[k] != b.get(k)]
    return "; ".join(d for d in diffs if not d.startswith("iterations:"))


def resume_seed(rank_seed: int, global_step: int) -> int:
    """Generator seed of a rank resuming from another rank's checkpoint at `global_step` (distinct per rank)."""
    return (rank_seed * 1_000_003 + global_step) % (2**63)
