"""The distilled N-step (MoE) student as a sampler.

    student = Student.from_checkpoint("runs/x/checkpoints/ckpt_00000200.pt")        # builds the bundle
    student = Student.from_checkpoint("runs/x/checkpoints/ckpt_00000200.dcp")       # a distributed checkpoint
    student = Student.from_checkpoint(path, bundle=bundle, device="cpu")             # or reuse one
    x0 = student.sample(z, cond)          # CFG 1; step i runs expert `expert_of_step[i]`
    student.expert_of_step, student.timesteps
    student.save_export("run/student")                     # the student alone: its experts' weights + manifest
    student = Student.from_export("run/student")           # (LoRA: adapter tensors only; full: every weight)

Between steps the student uses the transport it was trained with (Euler, or x̂_0 + fresh noise, which then
needs `generator` for the fresh noise). With `use_ema`, a checkpoint's EMA weights replace the current
expert's (earlier experts already hold their EMA weights since phase end). On CUDA the bundle's
`extras["autocast_dtype"]` applies to the experts' forwards as in training (outputs back in z's dtype).

Both checkpoint layouts load here: a single file (tensors and plain data only), or a committed DCP folder, of
which only the generator experts (and their EMA) are read, each as a full tensor assembled from the ranks'
shards (no process group needed). A model built from a checkpoint's own config must be a registered kind: a
"package.module:function" kind would import and call whatever the file names (pass `bundle=` instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from pdmd_core.checkpoint import UnsafeCheckpointError, is_distributed_checkpoint, read_header
from pdmd_core.config import DistillConfig
from pdmd_core.models.registry import ModelBundle, build_model
from pdmd_core.protocols import Conditioning
from pdmd_core.role_sharding import materialize_modules
from pdmd_core.roles import EMA, GeneratorExperts
from pdmd_core.rollout import NoiseSource, transport_step

EXPORT_WEIGHTS = "student.safetensors"
EXPORT_MANIFEST = "student.json"


class Student:
    def __init__(self, generator: GeneratorExperts, transport: str = "euler", ema: EMA | None = None,
                 config: DistillConfig | None = None) -> None:
        self.generator = generator
        self.transport = transport
        self.ema = ema  # when given, its weights are swapped in for the duration of each sample() call
        self.config = config  # the run's config (from_checkpoint / from_export): what save_export records

    @property
    def timesteps(self) -> list[float]:
        return list(self.generator.timesteps)

    @property
    def expert_of_step(self) -> list[int]:
        return list(self.generator.expert_of_step)

    @classmethod
    def from_generator(cls, generator: GeneratorExperts, transport: str = "euler",
                       ema: EMA | None = None) -> Student:
        """A sampler over the trainer's own experts (no copy; training state is left untouched)."""
        return cls(generator, transport, ema)

    @classmethod
    def from_checkpoint(cls, path: str | Path, bundle: ModelBundle | None = None,
                        device: str | torch.device = "cpu", use_ema: bool = True) -> Student:
        path = Path(path)
        state = read_header(path, device)
        cfg = DistillConfig.model_validate(state["config"] | {"device": str(device)})
        if bundle is None:
            bundle = bundle_from_checkpoint_config(cfg, path, device)
        gen = GeneratorExperts(bundle, cfg)
        materialize_modules(gen.modules(), bundle.materialize, torch.device(device))  # a bundle built empty
        distributed = is_distributed_checkpoint(path)
        if distributed:
            from pdmd_core.distributed_checkpoint import load_tensors

            experts = {str(e): gen.expert_tensors(e) for e in range(len(gen.experts))}
            load_tensors(path, {"generator": experts}, collective=False)
        else:
            for e, sd in enumerate(state["generator"]):
                gen.load_expert_state(e, sd)
        has_ema = state["contents"]["ema"] if distributed else bool(state.get("ema"))
        if use_ema and has_ema and state.get("phase_started"):
            gen.set_trainable(gen.experts_for_phase(int(state["phase"]), cfg.method))
            named = dict(gen.trainable_named_parameters())
            if distributed:  # the EMA weights straight into the current expert's parameters
                load_tensors(path, {"ema": {name: p.detach() for name, p in named.items()}}, collective=False)
            else:
                with torch.no_grad():
                    for name, value in state["ema"].items():
                        named[name].copy_(value)
        gen.set_trainable([])
        return cls(gen, cfg.transport, config=cfg)

    def save_export(self, folder: str | Path) -> Path:
        """Write the student alone: `student.safetensors` (expert k's trainable weights as `expert<k>/<name>`)
        and `student.json` (the run config, step times, expert of each step, transport). A small folder that
        `from_export` turns back into the same sampler, given the teacher the config names (or `bundle=`)."""
        from safetensors.torch import save_file

        if self.config is None:
            raise ValueError("this student has no run config (build it with from_checkpoint or from_export)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"expert{e}/{name}": value.contiguous()
                   for e in range(len(self.generator.experts))
                   for name, value in self.generator.expert_state(e).items()}
        save_file(tensors, str(folder / EXPORT_WEIGHTS))
        manifest = {"config": self.config.model_dump(mode="json"), "timesteps": self.timesteps,
                    "expert_of_step": self.expert_of_step, "transport": self.transport,
                    "experts": len(self.generator.experts)}
        (folder / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def from_export(cls, folder: str | Path, bundle: ModelBundle | None = None,
                    device: str | torch.device = "cpu") -> Student:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / EXPORT_MANIFEST).is_file():
            raise FileNotFoundError(f"{folder} is not a student export: {EXPORT_MANIFEST} is missing")
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
        cfg = DistillConfig.model_validate(manifest["config"] | {"device": str(device)})
        if bundle is None:
            if cfg.model is None:
                raise ValueError(f"export {folder} has no `model` section; pass bundle=")
            bundle = build_model(cfg.model.kind, cfg.model.params, device)
        gen = GeneratorExperts(bundle, cfg)
        materialize_modules(gen.modules(), bundle.materialize, torch.device(device))
        tensors = load_file(str(folder / EXPORT_WEIGHTS), device=str(device))
        for e in range(manifest["experts"]):
            prefix = f"expert{e}/"
            gen.load_expert_state(e, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        gen.set_trainable([])
        return cls(gen, manifest["transport"], config=cfg)

    @torch.no_grad()
    def sample(self, z: Tensor, cond: Conditioning | None = None, generator: torch.Generator | None = None,
               noise_source: NoiseSource | None = None) -> Tensor:
        """The student's samples from starting noise `z`. A re-noise (DMD2) student draws fresh noise between its
        steps: from `noise_source` (called with the batch shape; e.g. one stream per sample seed,
        `pdmd_core.sample_noise`) or else from `generator`; it refuses to sample with neither, rather than share one
        silent default stream across every call. An Euler student draws nothing."""
        if self.transport != "euler" and generator is None and noise_source is None:
            raise ValueError(f"a {self.transport!r}-transport student draws fresh noise between its steps: pass its "
                             "re-noise stream (noise_source=, or generator=), e.g. pdmd_core.sample_noise")
        if self.ema is None:
            return self._sample(z, cond, generator, noise_source)
        backup = {n: p.detach().clone() for n, p in self.ema.params.items()}
        self.ema.copy_to_params()
        try:
            return self._sample(z, cond, generator, noise_source)
        finally:
            for n, p in self.ema.params.items():
                p.copy_(backup[n])

    def _sample(self, z: Tensor, cond: Conditioning | None, generator: torch.Generator | None,
                noise_source: NoiseSource | None) -> Tensor:
        ts = self.generator.timesteps
        x = z
        for i in range(len(ts) - 1):
            t = torch.full((z.shape[0],), ts[i], device=z.device, dtype=z.dtype)
            v = self.generator.step_velocity(i, x, t, cond)
            x = transport_step(x, v, ts[i], ts[i + 1], self.transport, generator, noise_source)
        return x


def bundle_from_checkpoint_config(cfg: DistillConfig, path: Path, device: str | torch.device) -> ModelBundle:
    """The model a checkpoint's config names, if it is a registered kind (never an import path from the file)."""
    if cfg.model is None:
        raise ValueError(f"checkpoint {path} has no `model` section; pass bundle=")
    if ":" in cfg.model.kind:
        raise UnsafeCheckpointError(
            f"checkpoint {path} names model.kind = {cfg.model.kind!r}, an import path: building it would import "
            f"and call code chosen by the file. Build the bundle from a config you trust and pass bundle=")
    return build_model(cfg.model.kind, cfg.model.params, device)
