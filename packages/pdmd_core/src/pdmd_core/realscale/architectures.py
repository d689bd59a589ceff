"""Published architectures of the real-scale teachers, so presets validate and plan without weights.

Each entry is the diffusers transformer config of a released checkpoint (its `transformer/config.json`) plus
what pdmd needs around it: which subfolders hold the experts, the MoE boundary, the Wan mode and the VAE's
latent channels and compression. `tiny-*` entries are the CPU-sized stand-ins used by tests and smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pdmd_core.realscale.tiny import TINY_QWEN_TRANSFORMER, TINY_TI2V_Z_DIM, TINY_WAN_TRANSFORMER, TINY_Z_DIM

_WAN_COMMON: dict[str, Any] = dict(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256,
                                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                   rope_max_seq_len=1024)
_WAN_14B: dict[str, Any] = dict(_WAN_COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40,
                                in_channels=16, out_channels=16)


@dataclass(frozen=True)
class Architecture:
    family: str  # "wan" | "qwen_image"
    repo_id: str  # the diffusers-format checkpoint on the Hugging Face hub
    transformer: dict[str, Any]
    expert_subfolders: tuple[str, ...] = ("transformer",)
    boundary: float | None = None  # MoE: transformer serves t >= boundary, transformer_2 t < boundary
    mode: str = "t2v"
    z_dim: int = 16
    spatial_factor: int = 8  # VAE spatial compression
    temporal_factor: int = 4  # VAE temporal compression (Wan)
    transformer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_moe(self) -> bool:
        return len(self.expert_subfolders) == 2

    def config_for(self, subfolder: str) -> dict[str, Any]:
        return {**self.transformer, **self.transformer_overrides.get(subfolder, {})}


ARCHITECTURES: dict[str, Architecture] = {
    "wan2.1-t2v-1.3b": Architecture(
        "wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        dict(_WAN_COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16)),
    "wan2.1-t2v-14b": Architecture("wan", "Wan-AI/Wan2.1-T2V-14B-Diffusers", _WAN_14B),
    "wan2.2-t2v-a14b": Architecture("wan", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", _WAN_14B,
                                    ("transformer", "transformer_2"), boundary=0.875),
    "wan2.2-i2v-a14b": Architecture("wan", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", dict(_WAN_14B, in_channels=36),
                                    ("transformer", "transformer_2"), boundary=0.9, mode="i2v"),
    "wan2.2-ti2v-5b": Architecture(
        "wan", "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        dict(_WAN_COMMON, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48),
        mode="ti2v", z_dim=48, spatial_factor=16),
    "qwen-image": Architecture(
        "qwen_image", "Qwen/Qwen-Image",
        dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
             num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56))),
    # CPU stand-ins (tests, smoke presets): same classes, tiny sizes.
    "tiny-wan2.1": Architecture("wan", "", TINY_WAN_TRANSFORMER, z_dim=TINY_Z_DIM, spatial_factor=4),
    "tiny-wan2.2": Architecture("wan", "", TINY_WAN_TRANSFORMER, ("transformer", "transformer_2"),
                                boundary=0.875, z_dim=TINY_Z_DIM, spatial_factor=4),
    "tiny-wan2.2-i2v": Architecture("wan", "", dict(TINY_WAN_TRANSFORMER, in_channels=3 * TINY_Z_DIM),
                                    ("transformer", "transformer_2"), boundary=0.9, mode="i2v",
                                    z_dim=TINY_Z_DIM, spatial_factor=4),
    "tiny-wan2.2-ti2v": Architecture(
        "wan", "", dict(TINY_WAN_TRANSFORMER, in_channels=TINY_TI2V_Z_DIM, out_channels=TINY_TI2V_Z_DIM),
        mode="ti2v", z_dim=TINY_TI2V_Z_DIM, spatial_factor=16),
    "tiny-qwen-image": Architecture("qwen_image", "", TINY_QWEN_TRANSFORMER, z_dim=TINY_Z_DIM, spatial_factor=4),
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def latent_shape(arch: Architecture, frames: int, height: int, width: int) -> tuple[int, ...]:
    """Latent shape of one sample: Wan (C, F, H, W); Qwen-Image (C, H, W) (pdmd keeps latents unpacked)."""
    f = arch.spatial_factor
    if arch.family == "qwen_image":
        if frames != 1:
            raise ValueError(f"Qwen-Image makes images: frames must be 1, got {frames}")
        return (arch.z_dim, 2 * (height // (2 * f)), 2 * (width // (2 * f)))
    patch_h, patch_w = arch.transformer["patch_size"][1:]
    if height % (f * patch_h) or width % (f * patch_w):
        raise ValueError(f"Wan needs height/width divisible by {f * patch_h}, got {height}x{width}")
    if (frames - 1) % arch.temporal_factor:
        raise ValueError(f"Wan needs frames = {arch.temporal_factor}k + 1, got {frames}")
    return (arch.z_dim, (frames - 1) // arch.temporal_factor + 1, height // f, width // f)
