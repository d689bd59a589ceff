"""Export distilled generator experts in diffusers-loadable form, with a manifest describing the student.

Layout of an export folder:
  pdmd_export.json   family, Wan mode, format, the N-step schedule, the transport between steps (euler, or
                     renoise: x̂_0 + fresh noise as the student was trained), which steps each expert runs,
                     which base-model subfolder each expert starts from, the WanPipeline boundary
  expert_<k>/        format "lora": pytorch_lora_weights.safetensors in diffusers' LoRA format with its
                     rank/alpha metadata (`pipeline.load_lora_weights(folder)` reads it);
                     format "full": a diffusers transformer folder (`save_pretrained`), LoRA merged if any
  scheduler/         FixedScheduleEulerScheduler holding the student's own step times and transport
                     (`stochastic_sampling=True` for renoise)
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pdmd_core.realscale.scheduler import FixedScheduleEulerScheduler
from pdmd_core.realscale.timesteps import expert_boundary_ratio, scheduler_sigmas

MANIFEST_NAME = "pdmd_export.json"
FORMATS = ("lora", "full")
TRANSPORTS = ("euler", "renoise")


@dataclass
class ExpertEntry:
    name: str
    path: str
    first_step: int
    num_steps: int
    base_subfolder: str


@dataclass
class ExportManifest:
    family: str
    format: str
    timesteps: list[float]
    experts: list[ExpertEntry]
    wan_mode: str = "t2v"
    boundary_ratio: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    transport: str = "euler"  # written by every export; `read` refuses manifests that do not state it

    @property
    def num_steps(self) -> int:
        return len(self.timesteps) - 1

    def expert_of_step(self, step: int) -> int:
        for index, entry in enumerate(self.experts):
            if entry.first_step <= step < entry.first_step + entry.num_steps:
                return index
        raise IndexError(f"step {step} is outside the {self.num_steps}-step schedule")

    @staticmethod
    def read(folder: Path | str) -> ExportManifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: {folder} is not a pdmd export folder (`pdmd export`)")
        raw = json.loads(path.read_text())
        if raw.get("transport") not in TRANSPORTS:
            raise ValueError(f"{path}: transport = {raw.get('transport')!r}, expected one of {TRANSPORTS}; an export "
                             f"without it may have been trained with re-noise steps but would sample with Euler "
                             f"steps: export the run again with `pdmd export`")
        raw["experts"] = [ExpertEntry(**e) for e in raw["experts"]]
        return ExportManifest(**raw)


def contiguous_expert_runs(expert_of_step: list[int]) -> list[tuple[int, int]]:
    """(first_step, num_steps) per expert; each expert must own one contiguous run of steps."""
    runs: list[tuple[int, int]] = []
    for step, expert in enumerate(expert_of_step):
        if expert == len(runs):
            runs.append((step, 1))
        elif expert == len(runs) - 1:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            raise ValueError(f"experts must run contiguous, increasing steps; got expert_of_step={expert_of_step}")
    return runs


def lora_state_of(transformer: nn.Module, adapter: str) -> dict[str, Tensor]:
    """Adapter `adapter`'s tensors keyed as diffusers/peft LoRA files expect (adapter name dropped)."""
    tag = f".{adapter}."
    state = {name.replace(tag, "."): p.detach().cpu().contiguous()
             for name, p in transformer.named_parameters() if tag in name and "lora_" in name}
    if not state:
        raise KeyError(f"the transformer has no LoRA adapter {adapter!r}")
    return state


def export_student(generator: Any, bundle: Any, cfg: Any, out_dir: Path | str, fmt: str = "lora") -> ExportManifest:
    """Export a trained `pdmd_core.roles.GeneratorExperts` of a real-scale bundle (kinds wan / qwen_image)."""
    from peft import LoraConfig

    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    family = bundle.extras.get("family")
    if family not in ("wan", "qwen_image"):
        raise ValueError(f"export needs a real-scale bundle (kind wan / qwen_image), got {bundle.name!r}")
    subfolders = bundle.extras["expert_subfolders"]
    runs = contiguous_expert_runs(list(generator.expert_of_step))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for e, (first, count) in enumerate(runs):
        name = f"expert_{e + 1}"
        module = generator.experts[e]
        lora = generator.kind == "lora"
        transformer = (module.backbone if lora else module).transformer
        if fmt == "lora":
            if not lora:
                raise ValueError("full-copy experts have no LoRA to export; use format 'full'")
            config = LoraConfig(r=cfg.generator.rank, lora_alpha=cfg.generator.alpha,
                                target_modules=cfg.generator.target_modules or bundle.lora_target_modules)
            _pipeline_class(family).save_lora_weights(
                out / name, transformer_lora_layers=lora_state_of(transformer, generator.adapter_name(e)),
                transformer_lora_adapter_metadata=config.to_dict())
        else:
            _save_full(transformer, generator.adapter_name(e) if lora else None, out / name)
        entries.append(ExpertEntry(name, name, first, count, subfolders[generator.source_of_expert[e]]))
    timesteps = [float(t) for t in generator.timesteps]
    boundary = _wan_boundary(entries, timesteps) if family == "wan" else None
    manifest = ExportManifest(family, fmt, timesteps, entries, bundle.extras.get("mode", "t2v"), boundary,
                              {"architecture": bundle.extras.get("architecture"), "method": cfg.method},
                              cfg.transport)
    scheduler_sigmas(timesteps)  # validates the schedule
    FixedScheduleEulerScheduler.for_schedule(timesteps, cfg.transport).save_pretrained(out / "scheduler")
    (out / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def wan_pipeline_slots(experts: list[ExpertEntry]) -> list[list[int]]:
    """Which experts each WanPipeline transformer runs: [[experts on `transformer`], [on `transformer_2`]].

    Up to two experts: one per transformer (its own base weights). More (e.g. 4 phases): the experts that start
    from the base `transformer` run on it and those from `transformer_2` on that one, each switched in for its
    own steps; the high-noise group must come first, as WanPipeline routes the early steps to `transformer`."""
    if len(experts) <= 2:
        return [[i] for i in range(len(experts))]
    order = list(dict.fromkeys(e.base_subfolder for e in experts))
    slots = [[i for i, e in enumerate(experts) if e.base_subfolder == base] for base in order]
    if any(slot != list(range(slot[0], slot[-1] + 1)) for slot in slots) or len(slots) > 2:
        raise ValueError(f"experts must run in contiguous groups per base transformer (at most two), got "
                         f"{[e.base_subfolder for e in experts]}")
    return slots


def _wan_boundary(entries: list[ExpertEntry], timesteps: list[float]) -> float | None:
    slots = wan_pipeline_slots(entries)
    return expert_boundary_ratio(timesteps, entries[slots[1][0]].first_step) if len(slots) == 2 else None


def _save_full(transformer: nn.Module, adapter: str | None, folder: Path) -> None:
    """Save a diffusers transformer folder; a LoRA expert is merged into a copy of its backbone first."""
    if adapter is not None:
        from peft.tuners.lora import LoraLayer

        transformer = copy.deepcopy(transformer)
        for module in transformer.modules():
            if isinstance(module, LoraLayer):
                module.merge(adapter_names=[adapter])
        _strip_lora(transformer)
    transformer.save_pretrained(folder)  # type: ignore[operator]


def _strip_lora(model: nn.Module) -> None:
    """Replace every (merged) peft LoRA layer by its base layer, leaving a plain diffusers model."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())


def _pipeline_class(family: str) -> Any:
    from diffusers import QwenImagePipeline, WanPipeline

    return WanPipeline if family == "wan" else QwenImagePipeline
