"""Real-scale tier: diffusers Wan2.1/2.2 and Qwen-Image teachers distilled with the pdmd engine.

Module map:
- `timesteps`: the one place where pdmd t in [0, 1] meets diffusers' timesteps (Wan 0..1000, Qwen sigma),
  scheduler sigmas, the WanPipeline expert boundary.
- `wan`, `qwen_image`: `WanVelocity` (t2v / i2v first-frame concat / ti2v first-frame pinning) and
  `QwenImageVelocity` (2x2 latent packing, img_shapes, text masks) — pdmd `VelocityModel`s.
- `architectures`: published transformer configs (Wan2.1 1.3B/14B, Wan2.2 A14B T2V/I2V, TI2V-5B, Qwen-Image)
  and tiny CPU stand-ins; `latent_shape`.
- `models`: registry kinds `wan` and `qwen_image` (MoE teachers for A14B, prompt caches, meta-device builds for
  dry runs, memory plans); `memory_plan`: per-GPU plan.
- `text_cache`: prompt-embedding cache made with the pipelines' own encoders; `CachedPromptEncoder`.
- `vae`: I2V/TI2V first-frame conditions (the I2V pipeline's own construction), decoding to [0, 1].
- `scheduler`: `FixedScheduleEulerScheduler` (WanPipeline steps through the student's exact times).
- `export`: experts -> diffusers LoRA files or full transformer folders + `pdmd_export.json`.
- `pipelines`: exported student -> WanPipeline / WanImageToVideoPipeline / QwenImagePipeline at CFG 1.
- `student_io`, `commands`: loading a trained student; `pdmd embed-prompts`, `embed-images`, `export` (sampling into
  sample sets and SLURM jobs are the pipeline package's).
- `distributed`, `ddp_check`: process groups from torchrun-style variables, DDP, FSDP2 (`fully_shard`),
  activation checkpointing, bf16 autocast, gradient accumulation.
- `sharded_weights`: transformers built empty (meta) and filled rank by rank with their FSDP2 shards read
  from the diffusers safetensors (`weights: sharded`), so 14B/20B roles never exist whole in one process.
- `tiny`: tiny random diffusers/transformers components built from configs (tests, smoke runs).
"""
