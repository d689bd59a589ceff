"""Model kind `cpu_tier` for the distillation trainer: a trained CPU-tier teacher as a `ModelBundle`.

params: {"teacher": path to teacher.pt (or its folder)}. The prompt source samples the benchmark's training
prompts uniformly with the trainer's generator and returns them with their null (empty-prompt) conditionings;
the unconditional toy1d teacher gets (None, None). LoRA targets the residual blocks' Linear layers.
"""

from __future__ import annotations

from typing import Any

import torch

from pdmd_core.cpu_tier.data import benchmark_prompts
from pdmd_core.cpu_tier.teacher import load_teacher
from pdmd_core.models.registry import ModelBundle, register_model
from pdmd_core.protocols import Conditioning, PromptEncoder

LORA_TARGET_MODULES = ["fc1", "fc2"]


class BenchmarkPromptSource:
    """Uniformly sampled benchmark prompts, encoded once; `sample` returns (cond, null_cond) on `device`."""

    def __init__(self, encoder: PromptEncoder, prompts: list[str], device: torch.device) -> None:
        self.prompts = list(prompts)
        self.unconditional = self.prompts == [""]
        self.table = encoder.encode(self.prompts).to(device)
        self.null_row = encoder.null(1).to(device)
        self.device = device

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Conditioning | None,
                                                                          Conditioning | None]:
        if self.unconditional:
            return None, None
        ids = torch.randint(len(self.prompts), (batch_size,), generator=generator, device=generator.device)
        cond = self.table.index(ids.to(self.device))
        null = self.null_row.index(torch.zeros(batch_size, dtype=torch.long, device=self.device))
        return cond, null


@register_model("cpu_tier")
def build_cpu_tier_bundle(params: dict[str, Any], device: torch.device) -> ModelBundle:
    unknown = set(params) - {"teacher"}
    if unknown or "teacher" not in params:
        raise ValueError(f"model kind 'cpu_tier' takes exactly {{'teacher': checkpoint path}}, got {sorted(params)}")
    loaded = load_teacher(params["teacher"])
    teacher = loaded.model.to(device)
    prompts = benchmark_prompts(loaded.config.data)
    return ModelBundle(
        teacher=teacher,
        prompt_source=BenchmarkPromptSource(loaded.encoder, prompts, device),
        sample_shape=loaded.sample_shape,
        lora_target_modules=list(LORA_TARGET_MODULES),
        name=f"cpu_tier-{loaded.config.benchmark}",
        extras={"benchmark": loaded.config.benchmark, "prompts": prompts, "encoder": loaded.encoder,
                "config": loaded.config.model_dump(mode="json")},
    )
