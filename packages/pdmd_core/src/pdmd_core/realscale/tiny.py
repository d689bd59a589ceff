"""Tiny randomly initialised Wan / Qwen-Image components built from configs (no weights needed).

They are the real diffusers / transformers classes, only small: tests, CI and the `smoke` presets use them
to run the full real-scale code path (text encoding, adapters, MoE, LoRA experts, export, pipelines) on a
CPU in seconds. Sizes are the smallest known to construct and run here.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_WAN_TRANSFORMER: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
    text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)
TINY_QWEN_TRANSFORMER: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6),
)
TINY_Z_DIM = 4
TINY_VAE: dict[str, Any] = dict(
    base_dim=8, z_dim=TINY_Z_DIM, dim_mult=[1, 1, 1], num_res_blocks=1, temperal_downsample=[True, True],
    latents_mean=[0.1, -0.2, 0.05, 0.0], latents_std=[1.5, 0.8, 1.2, 1.0],
)
# Wan2.2 VAE family (TI2V-5B): residual blocks, 2x2 pixel patchify before the encoder (12 = 3 x 2 x 2 input
# channels), 16x spatial / 4x temporal compression as in the released config; z_dim 6 (48 there) so that no
# channel count coincides with the temporal factor.
TINY_TI2V_Z_DIM = 6
TINY_WAN22_VAE: dict[str, Any] = dict(
    base_dim=8, decoder_base_dim=12, z_dim=TINY_TI2V_Z_DIM, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4,
    latents_mean=[0.1, -0.2, 0.05, 0.0, 0.3, -0.1], latents_std=[1.5, 0.8, 1.2, 1.0, 0.7, 1.3],
)


def tiny_wan_transformer(seed: int, **overrides: Any) -> Any:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model: Any = WanTransformer3DModel(**{**TINY_WAN_TRANSFORMER, **overrides})
    return model.eval()


def tiny_qwen_transformer(seed: int, **overrides: Any) -> Any:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    model: Any = QwenImageTransformer2DModel(**{**TINY_QWEN_TRANSFORMER, **overrides})
    return model.eval()


def tiny_wan_vae(seed: int) -> Any:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    # WanPipeline reads the compression factors from the config; state the tiny VAE's true ones (4x, 4x).
    model: Any = AutoencoderKLWan(**TINY_VAE, scale_factor_spatial=4, scale_factor_temporal=4)
    return model.eval()


def tiny_wan22_vae(seed: int) -> Any:
    """The Wan2.2 (TI2V-5B) VAE class and layout, tiny: AutoencoderKLWan with is_residual and patch_size 2."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    model: Any = AutoencoderKLWan(**TINY_WAN22_VAE)
    return model.eval()


def tiny_wan22_pipeline(prompts: list[str]) -> Any:
    """A Wan2.2-style two-expert WanPipeline (boundary 0.875), tiny, with a UMT5 text encoder knowing `prompts`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer = tiny_tokenizer(prompts)
    return WanPipeline(tokenizer=tokenizer, text_encoder=tiny_umt5_encoder(1, len(tokenizer)), vae=tiny_wan_vae(2),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=tiny_wan_transformer(3),
                       transformer_2=tiny_wan_transformer(4), boundary_ratio=0.875)


def tiny_wan22_i2v_pipeline(prompts: list[str]) -> Any:
    """A Wan2.2-I2V-style two-expert WanImageToVideoPipeline (boundary 0.9; 3 x z_dim input channels: noisy
    latent, frame mask (temporal factor 4 = z_dim here), image latent), tiny."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    tokenizer = tiny_tokenizer(prompts)
    channels = 3 * TINY_Z_DIM
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5_encoder(1, len(tokenizer)), vae=tiny_wan_vae(2),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=tiny_wan_transformer(3, in_channels=channels),
        transformer_2=tiny_wan_transformer(4, in_channels=channels), boundary_ratio=0.9)


# Words of QwenImagePipeline's prompt template: the tiny word-level tokenizer must know them too.
QWEN_TEMPLATE_WORDS = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
                       "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
                       "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n")


def tiny_qwen_pipeline(prompts: list[str]) -> Any:
    """A QwenImagePipeline (shift 3), tiny, with a Qwen2.5-VL text encoder knowing `prompts`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    tokenizer = tiny_tokenizer([*prompts, QWEN_TEMPLATE_WORDS])
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_qwen_vae(2),
                             text_encoder=tiny_qwen25vl_encoder(1, len(tokenizer)), tokenizer=tokenizer,
                             transformer=tiny_qwen_transformer(3))


TINY_PIPELINES = {"tiny-wan2.2": tiny_wan22_pipeline, "tiny-wan2.2-i2v": tiny_wan22_i2v_pipeline,
                  "tiny-qwen-image": tiny_qwen_pipeline}


def save_tiny_base(architecture: str, prompts: list[str], folder: Any) -> Any:
    """Write a tiny random base model of `architecture` as a diffusers folder whose tokenizer knows `prompts`
    (smoke studies and tests: same classes as the released models, random weights)."""
    if architecture not in TINY_PIPELINES:
        raise ValueError(f"no tiny base model for architecture {architecture!r}; tiny ones: {sorted(TINY_PIPELINES)}")
    TINY_PIPELINES[architecture](prompts).save_pretrained(folder)
    return folder


def tiny_qwen_vae(seed: int) -> Any:
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    model: Any = AutoencoderKLQwenImage(**TINY_VAE)
    return model.eval()


def tiny_tokenizer(texts: list[str]) -> Any:
    """A word-level fast tokenizer whose vocabulary is every word of `texts` (a real tokenizer, tiny)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    vocab: dict[str, int] = {"<pad>": 0, "<unk>": 1, "</s>": 2}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="</s>")


def tiny_umt5_encoder(seed: int, vocab_size: int, d_model: int = 32) -> Any:
    """Wan's text encoder class (UMT5EncoderModel), tiny; d_model must equal the transformer's text_dim."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16)
    return UMT5EncoderModel(config).eval()


def tiny_qwen25vl_encoder(seed: int, vocab_size: int, hidden_size: int = 32) -> Any:
    """Qwen-Image's text encoder class (Qwen2.5-VL), tiny; hidden_size must equal joint_attention_dim."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, bos_token_id=0, eos_token_id=2)
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    kwargs: dict[str, Any] = dict(text_config=text, vision_config=vision, bos_token_id=0, eos_token_id=2)
    config = Qwen2_5_VLConfig(**kwargs)
    return Qwen2_5_VLForConditionalGeneration(config).eval()
