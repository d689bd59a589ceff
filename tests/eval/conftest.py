"""Registers the pdmd_eval fixtures defined in eval_helpers."""

from eval_helpers import image_net_path, lpips_random, tiny_clip, video_net_path  # noqa: F401
