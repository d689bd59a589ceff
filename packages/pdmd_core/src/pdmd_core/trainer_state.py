"""The trainer's checkpoint state: what a checkpoint holds, how a run resumes from it, and which config changes
a resume refuses.

A checkpoint holds every role (generator experts, the phase's fake score), the optimisers, the EMA, the RNG
states (trainer generator, torch, CUDA, Python), phase / step counters, the non-finite guard's skip count and the
callbacks' states, so a resumed run equals an uninterrupted one (bit-identical on CPU). Two layouts
(pdmd_core.checkpoint), one loader (`resume`, `pdmd_core.student`):

- one process (the CPU tier): a single file `ckpt_<step>.pt` (atomic, keep last K), read with
  `torch.load(weights_only=True)`;
- a data-parallel trainer (`world_size` given) or sharded (DTensor) roles: a DCP folder `ckpt_<step>.dcp`
  written by every rank and committed once all are done (pdmd_core.distributed_checkpoint). Tensors go to DCP by
  name — module tensors by parameter name, optimiser moments by parameter FQN (torch.distributed.checkpoint's
  get/set_state_dict) — so a run resumes on any number of ranks; counters, config and callbacks' states go to
  `trainer.json`, each rank's RNG states to `rank_<r>.json`. A parameter that has not stepped yet (no rank used
  it, see the trainer's `_sync_grads`) has no optimiser state in the checkpoint and none after the resume.

RNG streams on resume: a rank restores its own saved stream. A rank without one (more ranks than wrote the
checkpoint, or another rank's single file) takes rank 0's stream when every rank draws from the shared stream
(`Trainer(world_size=...)`, where all ranks hold the same stream), and otherwise re-seeds from (seed, rank, step)
(`resume_seed`) rather than adopting another rank's stream.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pdmd_core.checkpoint import (
    adopt_interrupted_replacements,
    is_distributed_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from pdmd_core.config import DistillConfig
from pdmd_core.dtensor_state import shard_optimizer_state
from pdmd_core.non_finite import NonFiniteError

if TYPE_CHECKING:
    from pdmd_core.trainer import Trainer

CHECKPOINT_FORMAT = 1  # single file
DISTRIBUTED_FORMAT = 2  # DCP folder
# Fields a resume may change: where checkpoints go, the device, where the model is read from, the guard.
RESUME_INSENSITIVE = {"checkpoint", "device", "model", "non_finite"}


def state_dict(trainer: Trainer) -> dict[str, Any]:
    """The single-file checkpoint state (tensors and plain data only: it loads with weights_only=True)."""
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


def save(trainer: Trainer, wait: bool = True, on_commit: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint of the trainer's current state; `on_commit(path)` runs once it is durable (for an
    asynchronous distributed save, when it commits)."""
    check_weights(trainer)
    if trainer.distributed_checkpoints:
        return _save_distributed(trainer, wait, on_commit)
    remove_stale_temporaries(trainer.checkpoint_dir)  # a killed earlier write left only a temp file
    path = save_checkpoint(trainer.checkpoint_dir, trainer.global_step, state_dict(trainer),
                           trainer.cfg.checkpoint.keep_last)
    if on_commit is not None:
        on_commit(path)
    return path


def load_state_dict(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore a single-file checkpoint's state (the sharded layout of the trainer's roles is applied here)."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
    _restore_counters(trainer, state)
    for e, sd in enumerate(state["generator"]):
        trainer.generator.load_expert_state(e, sd)
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
    own = int(state.get("rank", 0)) == trainer.rank
    _restore_rng(trainer, rng["trainer"].cpu(), rng["torch"].cpu(), rng["cuda"], rng["python"], own)
    trainer.callbacks.load_state_dict(state.get("callbacks") or {})


def resume(trainer: Trainer) -> Path | None:
    """Load the newest complete checkpoint of the trainer's run dir (either layout); returns its path. What a
    killed write left (temp files, uncommitted DCP folders) is never read; the one write is giving a committed DCP
    copy that a replace killed half-way left its final name back (`adopt_interrupted_replacements`)."""
    if trainer.distributed_checkpoints:
        from pdmd_core.distributed_checkpoint import newest_committed

        path = newest_committed(trainer.checkpoint_dir)
    else:
        adopt_interrupted_replacements(trainer.checkpoint_dir)
        path = latest_checkpoint(trainer.checkpoint_dir)
    if path is None:
        return None
    if is_distributed_checkpoint(path):
        _load_distributed(trainer, path)
    else:
        load_state_dict(trainer, load_checkpoint(path, trainer.device))
    return path


def finish(trainer: Trainer) -> Path | None:
    """Commit a pending asynchronous distributed save (collective); None when there was none."""
    writer = trainer._checkpointer
    return None if writer is None else writer.finish()


def training_mismatch(saved: DistillConfig, current: DistillConfig) -> str:
    """The config differences a resume refuses ('' if none): everything but RESUME_INSENSITIVE fields and the
    last phase's iteration budget (extending a run is fine)."""
    a, b = saved.model_dump(mode="json"), current.model_dump(mode="json")
    diffs = [f"{k}: {a[k]!r} != {b.get(k)!r}" for k in a if k not in RESUME_INSENSITIVE and a[k] != b.get(k)]
    return "; ".join(d for d in diffs if not d.startswith("iterations:"))


def resume_seed(rank_seed: int, global_step: int) -> int:
    """Generator seed of a rank resuming from another rank's checkpoint at `global_step` (distinct per rank)."""
    return (rank_seed * 1_000_003 + global_step) % (2**63)


# ------------------------------------------------------------------------------------------------ shared parts
def _restore_counters(trainer: Trainer, state: dict[str, Any]) -> None:
    saved = DistillConfig.model_validate(state["config"])
    mismatch = training_mismatch(saved, trainer.cfg)
    if mismatch:
        raise ValueError(f"checkpoint was written with a different config: {mismatch}")
    trainer.phase = int(state["phase"])
    trainer.global_step = int(state["global_step"])
    trainer.guard.skipped = int(state.get("non_finite_skipped", 0))


def _restore_rng(trainer: Trainer, own_stream: torch.Tensor, torch_state: torch.Tensor, cuda: Any,
                 python: Any, own: bool) -> None:
    if own or trainer.shared_draws:  # shared draws: every rank holds the same stream
        trainer.rng.set_state(own_stream)
    else:  # another rank's stream: continue with a distinct, reproducible one of our own
        trainer.rng.manual_seed(resume_seed(trainer.rank_seed, trainer.global_step))
    torch.set_rng_state(torch_state)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    random.setstate(python)


# ------------------------------------------------------------------------------------------------ DCP layout
def _containers(trainer: Trainer) -> tuple[nn.Module, nn.Module]:
    """Modules whose parameter names key the fake's and the generator's optimiser state in DCP."""
    return nn.ModuleList(trainer.fake.experts), nn.ModuleList(trainer.generator.modules())


def tensor_state(trainer: Trainer) -> dict[str, Any]:
    """The trainer's tensor state as a distributed checkpoint names it (views of the live tensors)."""
    return _tensors(trainer, _contents(trainer))


def _contents(trainer: Trainer) -> dict[str, bool]:
    started = trainer.phase_started
    return {"fake": started, "ema": started and trainer.ema is not None,
            "opt_fake": started and bool(trainer.opt_fake and trainer.opt_fake.state),
            "opt_generator": started and bool(trainer.opt_gen and trainer.opt_gen.state)}


def _tensors(trainer: Trainer, contents: dict[str, bool]) -> dict[str, Any]:
    """The tensor state by name, as views of the live tensors (DTensors stay sharded): what DCP writes, and
    the template it loads into in place. `get_optimizer_state_dict` initialises an optimiser without state
    (one zero-lr step), so an optimiser is only included when `contents` says it had state."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    gen = trainer.generator
    tensors: dict[str, Any] = {"generator": {str(e): gen.expert_tensors(e) for e in range(len(gen.experts))}}
    fake_modules, gen_modules = _containers(trainer)
    if contents["fake"]:
        tensors["fake"] = get_model_state_dict(fake_modules)
    if contents["ema"]:
        assert trainer.ema is not None
        tensors["ema"] = dict(trainer.ema.shadow)
    if contents["opt_fake"]:
        assert trainer.opt_fake is not None
        tensors["opt_fake"] = get_optimizer_state_dict(fake_modules, trainer.opt_fake)
    if contents["opt_generator"]:
        assert trainer.opt_gen is not None
        tensors["opt_generator"] = get_optimizer_state_dict(gen_modules, trainer.opt_gen)
    return tensors


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def _rank_state(trainer: Trainer) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None
    return {"rank": trainer.rank, "trainer_rng": _b64(trainer.rng.get_state()),
            "torch_rng": _b64(torch.get_rng_state()), "cuda_rng": cuda, "python_rng": [version, list(internal), gauss]}


def _save_distributed(trainer: Trainer, wait: bool, on_commit: Callable[[Path], None] | None) -> Path:
    started = trainer.phase_started
    contents = _contents(trainer)
    shared = {"format": DISTRIBUTED_FORMAT, "config": trainer.cfg.model_dump(mode="json"), "phase": trainer.phase,
              "iter_in_phase": trainer.iter_in_phase, "global_step": trainer.global_step, "phase_started": started,
              "non_finite_skipped": trainer.guard.skipped, "callbacks": trainer.callbacks.state_dict(),
              "contents": contents, "world_size": trainer.world_size or 1, "shared_draws": trainer.shared_draws}
    tensors = _tensors(trainer, contents)
    return trainer.checkpointer().save(trainer.global_step, tensors, shared, _rank_state(trainer), wait, on_commit)


def keep_saved_optimizer_states(template: dict[str, Any], name: str, saved: set[str]) -> list[str]:
    """Drop from an optimiser's loading template (`get_optimizer_state_dict` layout, under `name` in the
    checkpoint) the per-parameter states the checkpoint does not hold: a parameter that had not stepped when it
    was written (e.g. an expert no SGTS exit step had called yet) has none, and must resume with none. A state
    with only some of its slots saved stays, so that DCP refuses the checkpoint. Returns the dropped FQNs."""
    states = template["state"]
    dropped = [fqn for fqn, slots in states.items() if not any(f"{name}.state.{fqn}.{slot}" in saved for slot in slots)]
    for fqn in dropped:
        del states[fqn]
    return dropped


def _load_distributed(trainer: Trainer, folder: Path) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from pdmd_core.distributed_checkpoint import SHARED_FILE, load_tensors, rank_file, read_json, read_metadata_safely

    shared = read_json(folder, SHARED_FILE)
    if shared.get("format") != DISTRIBUTED_FORMAT:
        raise ValueError(f"{folder / SHARED_FILE}: checkpoint format {shared.get('format')} is not "
                         f"{DISTRIBUTED_FORMAT}")
    _restore_counters(trainer, shared)
    contents = shared["contents"]
    if shared["phase_started"]:
        trainer.begin_phase(trainer.phase)
    else:
        trainer.phase_started = False
    template = _tensors(trainer, contents)
    saved = set(read_metadata_safely(folder / ".metadata").state_dict_metadata)
    for name in ("opt_fake", "opt_generator"):
        if contents[name]:
            keep_saved_optimizer_states(template[name], name, saved)
    load_tensors(folder, template)  # in place, resharded to this trainer's layout
    fake_modules, gen_modules = _containers(trainer)
    if contents["fake"]:
        set_model_state_dict(fake_modules, template["fake"])
    # strict=False: parameters without a saved state (never stepped) are left without one
    partial = StateDictOptions(strict=False)
    if contents["opt_fake"]:
        assert trainer.opt_fake is not None
        set_optimizer_state_dict(fake_modules, trainer.opt_fake, template["opt_fake"], options=partial)
    if contents["opt_generator"]:
        assert trainer.opt_gen is not None
        set_optimizer_state_dict(gen_modules, trainer.opt_gen, template["opt_generator"], options=partial)
    trainer.iter_in_phase = int(shared["iter_in_phase"])
    own = (folder / rank_file(trainer.rank)).is_file()
    rng = read_json(folder, rank_file(trainer.rank if own else 0))
    python = rng["python_rng"]
    cuda = None if rng["cuda_rng"] is None else [_unb64(s) for s in rng["cuda_rng"]]
    _restore_rng(trainer, _unb64(rng["trainer_rng"]), _unb64(rng["torch_rng"]), cuda,
                 (int(python[0]), tuple(int(v) for v in python[1]), python[2]), own)
    trainer.callbacks.load_state_dict(shared.get("callbacks") or {})
