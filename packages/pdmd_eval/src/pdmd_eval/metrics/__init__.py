"""Built-in metrics; importing this package registers them in :data:`pdmd_eval.registry.REGISTRY`."""

from pdmd_eval.metrics import adherence, diversity, fidelity, modes, motion, protocol

__all__ = ["adherence", "diversity", "fidelity", "modes", "motion", "protocol"]
