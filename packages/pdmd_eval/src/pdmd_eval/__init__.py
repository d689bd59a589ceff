"""pdmd_eval: diversity, fidelity, motion and adherence metrics for sample sets; statistics and tables."""

__version__ = "0.1.0"
