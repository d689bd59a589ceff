"""Import hook listed in `pdmd_core.models.registry.MODEL_MODULES`: importing it registers kind `cpu_tier`."""

from pdmd_core.cpu_tier.bundle import build_cpu_tier_bundle

__all__ = ["build_cpu_tier_bundle"]
