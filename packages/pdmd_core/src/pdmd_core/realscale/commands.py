"""CLI of the real-scale tier: `pdmd embed-prompts`, `pdmd export`, `pdmd sample`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _read_prompts(path: Path) -> list[str]:
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise typer.BadParameter(f"{path} holds no prompts (one prompt per line)")
    return prompts


def _dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise typer.BadParameter(f"dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _ints(text: str) -> list[int]:
    try:
        values: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            values.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
        return values
    except ValueError:
        raise typer.BadParameter(f"expected integers like '0-7' or '0,3,5', got {text!r}") from None


def register(app: typer.Typer) -> None:
    @app.command("embed-prompts")
    def embed_prompts_cmd(
        prompts: Path = typer.Argument(..., exists=True, dir_okay=False, help="text file, one prompt per line"),
        family: str = typer.Option(..., help="wan or qwen_image"),
        model_path: str = typer.Option(..., help="diffusers model folder (or hub id) with text_encoder/tokenizer"),
        out: Path = typer.Option(..., help="output .safetensors"),
        negative_prompt: str = typer.Option("", help="the null prompt cached for CFG"),
        max_sequence_length: int | None = typer.Option(None, help="Wan default 512, Qwen-Image 1024"),
        batch_size: int = typer.Option(8),
        device: str = typer.Option("cpu"),
        dtype: str = typer.Option("float32", help="text-encoder dtype (bfloat16 on GPU)"),
    ) -> None:
        """Encode prompts with the pipeline's own text encoder and cache the embeddings (training needs no encoder)."""
        from diffusers import QwenImagePipeline, WanPipeline

        from pdmd_core.realscale.text_cache import encode_prompts, save_prompt_embeddings

        if family == "wan":
            pipe = WanPipeline.from_pretrained(model_path, transformer=None, transformer_2=None, vae=None,
                                               dtype=_dtype(dtype))
        elif family == "qwen_image":
            pipe = QwenImagePipeline.from_pretrained(model_path, transformer=None, vae=None, dtype=_dtype(dtype))
        else:
            raise typer.BadParameter(f"family must be 'wan' or 'qwen_image', got {family!r}")
        pipe.to(device)
        cache = encode_prompts(pipe, family, _read_prompts(prompts), batch_size=batch_size,
                               max_sequence_length=max_sequence_length, negative_prompt=negative_prompt)
        save_prompt_embeddings(cache, out)
        typer.echo(f"cached {len(cache.prompts)} prompts {tuple(cache.embeds.shape)} -> {out}")

    @app.command("embed-images")
    def embed_images_cmd(
        pairs: Path = typer.Argument(..., exists=True, dir_okay=False,
                                     help='JSONL, one {"prompt": ..., "image": PATH} per line'),
        prompt_cache: Path = typer.Option(..., exists=True, dir_okay=False, help="the prompts' embedding cache"),
        model_path: str = typer.Option(..., help="diffusers Wan I2V/TI2V model folder (its vae/)"),
        out: Path = typer.Option(..., help="output .safetensors (rows aligned with the prompt cache)"),
        resolution: str = typer.Option(..., help="FRAMES,HEIGHT,WIDTH of the training videos"),
        mode: str = typer.Option("i2v", help="i2v (Wan2.2-I2V-A14B) or ti2v (Wan2.2-TI2V-5B)"),
    ) -> None:
        """VAE-encode each prompt's first frame into the I2V condition the trainer feeds the transformer."""
        from diffusers import AutoencoderKLWan

        from pdmd_core.realscale.text_cache import load_prompt_embeddings
        from pdmd_core.realscale.vae import read_image_pairs, save_i2v_cache

        images = read_image_pairs(pairs)
        vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae").eval()
        frames, height, width = (int(v) for v in resolution.split(","))
        prompts = load_prompt_embeddings(prompt_cache).prompts
        conditions = save_i2v_cache(vae, prompts, images, (frames, height, width), mode, str(out))
        typer.echo(f"cached {', '.join(f'{k} {tuple(v.shape)}' for k, v in conditions.items())} -> {out}")

    @app.command("export")
    def export_cmd(
        run: Path = typer.Argument(..., exists=True, help="run folder (latest checkpoint) or a checkpoint file"),
        out: Path = typer.Option(..., help="export folder"),
        fmt: str = typer.Option("lora", "--format", help="lora (per-expert LoRA files) or full (transformers)"),
        use_ema: bool = typer.Option(True, help="export the EMA weights when the checkpoint has them"),
    ) -> None:
        """Export a real-scale student's experts in diffusers-loadable form (+ pdmd_export.json)."""
        from pdmd_core.realscale.export import export_student
        from pdmd_core.realscale.student_io import load_student

        student, bundle, cfg = load_student(run, use_ema=use_ema)
        manifest = export_student(student.generator, bundle, cfg, out, fmt)
        typer.echo(f"exported {len(manifest.experts)} {fmt} experts -> {out}")

    @app.command("sample")
    def sample_cmd(
        export: Path = typer.Option(..., exists=True, file_okay=False, help="folder written by `pdmd export`"),
        model_path: str = typer.Option(..., help="the base model folder (transformers, VAE)"),
        prompt_cache: Path = typer.Option(..., exists=True, dir_okay=False, help="from `pdmd embed-prompts`"),
        out: Path = typer.Option(..., help="sample-set folder to write"),
        resolution: str = typer.Option(..., help="FRAMES,HEIGHT,WIDTH in pixels (frames 1 for images)"),
        seeds: str = typer.Option("0", help="e.g. 0-7"),
        prompt_ids: str | None = typer.Option(None, help="rows of the cache, e.g. 0-20 (default: all)"),
        method: str = typer.Option("student", help="method name written to the manifest"),
        device: str = typer.Option("cpu"),
        dtype: str = typer.Option("float32"),
        images: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                           help='I2V/TI2V students: JSONL, one {"prompt": ..., "image": PATH} '
                                                'per line (as for embed-images)'),
    ) -> None:
        """Generate N-step CFG-1 samples with the stock diffusers pipeline and write a pdmd_eval sample set."""
        from pdmd_core.realscale.sample_set import sample_to_set
        from pdmd_core.realscale.vae import read_image_pairs

        frames, height, width = (int(v) for v in resolution.split(","))
        written = sample_to_set(export, model_path, prompt_cache, out, (frames, height, width), _ints(seeds),
                                None if prompt_ids is None else _ints(prompt_ids), method, device, _dtype(dtype),
                                None if images is None else read_image_pairs(images))
        typer.echo(json.dumps({"samples": written, "out": str(out)}))

    @app.command("check-distributed")
    def check_distributed_cmd(
        profile: Path = typer.Option(Path("slurm/profiles/realscale_local_2tasks.yaml"),
                                     help="distributed SLURM profile (nodes x tasks_per_node ranks)"),
        mode: str = typer.Option("ddp", help="ddp or fsdp2"),
        steps: int = typer.Option(3, help="AdamW steps of the tiny fake score"),
        folder: Path = typer.Option(Path(".pdmd/submitit-check"), help="submitit log folder"),
    ) -> None:
        """Train a tiny fake score as a multi-task SLURM job and compare with one process (same global batch)."""
        from pdmd_core.realscale.ddp_check import compare_states, train_fake_score_steps
        from pdmd_core.realscale.slurm import distributed_executor, load_distributed_profile

        if mode not in ("ddp", "fsdp2"):
            raise typer.BadParameter(f"mode must be 'ddp' or 'fsdp2', got {mode!r}")
        spec = load_distributed_profile(profile)
        global_batch = 2 * spec.world_size  # micro-batch 1, two accumulation micro-steps per rank
        job = distributed_executor(spec, folder, name="pdmd-check").submit(
            train_fake_score_steps, mode, global_batch, 1, steps, 0)
        typer.echo(f"submitted {job.job_id}: {spec.world_size} ranks ({spec.nodes} node(s) x {spec.tasks_per_node})")
        distributed = job.results()[0]
        single = train_fake_score_steps("single", global_batch, global_batch, steps, 0)
        initial = train_fake_score_steps("single", global_batch, global_batch, 0, 0)
        report = compare_states(distributed, single, initial)
        typer.echo(json.dumps(report, indent=2))
        if not report["same_training"]:
            raise typer.Exit(1)

    @app.command("train-distributed")
    def train_distributed_cmd(
        config: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML run config (global batch_size)"),
        profile: Path = typer.Option(..., help="distributed SLURM profile, e.g. slurm/profiles/realscale_64xh100.yaml"),
        run_dir: Path = typer.Option(..., help="run folder (rank 0 writes checkpoints and metrics here)"),
        wait: bool = typer.Option(True, help="block until the job ends"),
    ) -> None:
        """Data-parallel distillation as one SLURM job: one rank per task, gradients averaged across ranks."""
        from pdmd_core.realscale.launch import submit_training

        job = submit_training(config, run_dir, profile)
        typer.echo(f"submitted SLURM job {job.job_id} -> {run_dir}")
        if wait:
            job.results()
            typer.echo(f"done: {run_dir}")
