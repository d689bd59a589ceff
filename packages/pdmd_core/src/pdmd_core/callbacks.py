"""Trainer callbacks: what happens around the training loop without being part of it.

`Trainer(cfg, bundle, run_dir, callbacks=[...])`. A callback overrides the events it needs (all optional; every
one receives the trainer):

    on_fit_begin(trainer)                            after resuming, before this fit() call's first iteration
    on_phase_begin(trainer, phase)                   a phase starts (fake reset to the teacher, new optimisers);
                                                     not fired again when a run resumes in the middle of it
    on_iteration_end(trainer, step, phase, metrics)  after every generator iteration (`step` counts generator
                                                     iterations over all phases, from 1); may call trainer.save()
    on_phase_end(trainer, phase)                     the phase's expert is final (EMA copied in) and frozen
    on_before_save(trainer)                          a checkpoint is about to be written
    on_after_save(trainer, path)                     the checkpoint at `path` is durable
    on_fit_end(trainer)                              every phase is done
    state_dict() / load_state_dict(state)            state kept in each checkpoint under `callbacks[state_key]`
                                                     and restored on resume (None: nothing to keep)

Events fire in the order the callbacks were given. An exception raised by a callback propagates out of `fit()`
(that is how pre-emption stops a run after its checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdmd_core.trainer import Trainer

Metrics = dict[str, float]


class Callback:
    """Base class: every event is a no-op; `state_key` names this callback's slot in checkpoints."""

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_fit_begin(self, trainer: Trainer) -> None:
        pass

    def on_phase_begin(self, trainer: Trainer, phase: int) -> None:
        pass

    def on_iteration_end(self, trainer: Trainer, step: int, phase: int, metrics: Metrics) -> None:
        pass

    def on_phase_end(self, trainer: Trainer, phase: int) -> None:
        pass

    def on_before_save(self, trainer: Trainer) -> None:
        pass

    def on_after_save(self, trainer: Trainer, path: Path) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class CallbackList:
    """Dispatches each event to every callback in order; collects and restores their checkpoint state."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be pdmd_core.callbacks.Callback instances, got {type(cb).__name__}"
                                f" (wrap a plain function fn(step, phase, metrics) in OnIteration(fn))")
        keys = [cb.state_key for cb in callbacks if cb.state_dict() is not None]
        if len(keys) != len(set(keys)):
            raise ValueError(f"two stateful callbacks share a state_key: {keys}")
        self.callbacks = list(callbacks)

    def append(self, callback: Callback) -> None:
        self.callbacks = CallbackList([*self.callbacks, callback]).callbacks

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.callbacks)

    def fire(self, event: str, trainer: Trainer, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(trainer, *args)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {cb.state_key: state for cb in self.callbacks if (state := cb.state_dict()) is not None}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for cb in self.callbacks:
            if cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])


class OnIteration(Callback):
    """A plain function `fn(step, phase, metrics)` called after every generator iteration."""

    def __init__(self, fn: Callable[[int, int, Metrics], None]) -> None:
        self.fn = fn

    def on_iteration_end(self, trainer: Trainer, step: int, phase: int, metrics: Metrics) -> None:
        self.fn(step, phase, metrics)


class MetricsJsonl(Callback):
    """Appends `{"step", "phase", **metrics}` per generator iteration to a JSONL file.

    A run resumed from a checkpoint recomputes the steps after it bit-identically and appends them again, so a
    reader keys records by step (pdmd_pipeline.reliability checks that repeated steps carry identical values)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_begin(self, trainer: Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_iteration_end(self, trainer: Trainer, step: int, phase: int, metrics: Metrics) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, "phase": phase, **metrics}) + "\n")
