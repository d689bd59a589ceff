"""The non-finite guard: what a NaN/Inf loss, gradient norm or weight does to a run (config `non_finite`).

Policy `stop` (default): `NonFiniteError` naming role, quantity, phase and generator step, raised before any
optimiser step, so the checkpoints on disk stay good. Policy `skip`: the update is dropped (the caller takes no
optimiser or EMA step), counted, and the run still stops with `NonFiniteError` once more than `max_skipped`
updates were dropped. The count is part of the trainer's checkpoint state.
"""

from __future__ import annotations

import logging
import math

from pdmd_core.config import NonFiniteSpec

_log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    def __init__(self, role: str, quantity: str, phase: int, step: int, value: float,
                 skipped: int | None = None, max_skipped: int | None = None) -> None:
        budget = "" if skipped is None else f" after skipping {skipped} non-finite updates (max_skipped={max_skipped})"
        super().__init__(f"non-finite {quantity} ({value}) for role '{role}' in phase {phase} at generator "
                         f"step {step}{budget}; stopping (last good checkpoint kept)")
        self.role, self.quantity, self.phase, self.step = role, quantity, phase, step
        self.skipped = skipped


class NonFiniteGuard:
    def __init__(self, config: NonFiniteSpec) -> None:
        self.config = config
        self.skipped = 0  # updates dropped by the `skip` policy over the whole run

    @property
    def skips(self) -> bool:
        return self.config.policy == "skip"

    def check(self, value: float, role: str, quantity: str, phase: int, step: int) -> bool:
        """True if `value` is finite. Otherwise policy `stop` raises; `skip` counts the dropped update (raising
        past `max_skipped`) and returns False so the caller drops its gradients without an optimiser step."""
        if math.isfinite(value):
            return True
        if self.config.policy == "stop":
            raise NonFiniteError(role, quantity, phase, step, value)
        if self.skipped >= self.config.max_skipped:
            raise NonFiniteError(role, quantity, phase, step, value, self.skipped, self.config.max_skipped)
        self.skipped += 1
        _log.warning("skipped a non-finite %s (%s) of role '%s' in phase %d at generator step %d (%d/%d skipped)",
                     quantity, value, role, phase, step, self.skipped, self.config.max_skipped)
        return False
