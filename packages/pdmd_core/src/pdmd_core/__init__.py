"""pdmd_core: the Phased DMD distillation engine."""

__version__ = "0.1.0"
