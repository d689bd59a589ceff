"""Model bundles: what the trainer distils (teacher, prompt source, sample shape), built by name.

See `pdmd_core.models.registry` for `ModelBundle`, `register_model` and `build_model`.
"""

from pdmd_core.models.registry import (
    MODEL_MODULES,
    ModelBundle,
    PromptSource,
    available_models,
    build_model,
    register_model,
)

__all__ = ["MODEL_MODULES", "ModelBundle", "PromptSource", "available_models", "build_model", "register_model"]
