"""CLI of the real-scale engine: `pdmd embed-prompts`, `pdmd embed-images`, `pdmd export`.

Sampling into an evaluation sample set and SLURM jobs (`pdmd sample`, `pdmd train-distributed`,
`pdmd check-distributed`) are the pipeline package's."""

from __future__ import annotations

from pathlib import Path

import typer

PANEL = "Real scale"


def _read_prompts(path: Path) -> list[str]:
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise typer.BadParameter(f"{path} holds no prompts (one prompt per line)")
    return prompts


def _resolution(text: str) -> tuple[int, int, int]:
    try:
        frames, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected FRAMES,HEIGHT,WIDTH (e.g. 81,480,832), got {text!r}") from None
    return frames, height, width


def dtype_option(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise typer.BadParameter(f"dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def register(app: typer.Typer) -> None:
    @app.command("embed-prompts", rich_help_panel=PANEL)
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
                                               dtype=dtype_option(dtype))
        elif family == "qwen_image":
            pipe = QwenImagePipeline.from_pretrained(model_path, transformer=None, vae=None, dtype=dtype_option(dtype))
        else:
            raise typer.BadParameter(f"family must be 'wan' or 'qwen_image', got {family!r}")
        pipe.to(device)
        cache = encode_prompts(pipe, family, _read_prompts(prompts), batch_size=batch_size,
                               max_sequence_length=max_sequence_length, negative_prompt=negative_prompt)
        save_prompt_embeddings(cache, out)
        typer.echo(f"cached {len(cache.prompts)} prompts {tuple(cache.embeds.shape)} -> {out}")

    @app.command("embed-images", rich_help_panel=PANEL)
    def embed_images_cmd(
        pairs: Path = typer.Argument(..., exists=True, dir_okay=False,
                                     help='JSONL, one {"prompt": ..., "image": PATH} per line'),
        prompt_cache: Path = typer.Option(..., exists=True, dir_okay=False, help="the prompts' embedding cache"),
        model_path: str = typer.Option(..., help="diffusers Wan I2V/TI2V model folder (its vae/)"),
        out: Path = typer.Option(..., help="output .safetensors (rows aligned with the prompt cache)"),
        resolution: list[str] = typer.Option(..., help="FRAMES,HEIGHT,WIDTH of the training videos; repeat it for "
                                                       "every entry of a resolution mixture"),
        mode: str = typer.Option("i2v", help="i2v (Wan2.2-I2V-A14B) or ti2v (Wan2.2-TI2V-5B)"),
    ) -> None:
        """VAE-encode each prompt's first frame into the I2V condition the trainer feeds the transformer."""
        from diffusers import AutoencoderKLWan

        from pdmd_core.realscale.text_cache import load_prompt_embeddings
        from pdmd_core.realscale.vae import read_image_pairs, save_i2v_cache

        images = read_image_pairs(pairs)
        vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae").eval()
        resolutions = [_resolution(text) for text in resolution]
        prompts = load_prompt_embeddings(prompt_cache).prompts
        conditions = save_i2v_cache(vae, prompts, images, resolutions, mode, str(out))
        typer.echo(f"cached {', '.join(f'{k} {tuple(v.shape)}' for k, v in conditions.items())} -> {out}")

    @app.command("export", rich_help_panel=PANEL)
    def export_cmd(
        run: Path = typer.Argument(..., exists=True, help="run folder (latest complete checkpoint), a checkpoint "
                                                          "file or a distributed checkpoint folder (ckpt_*.dcp)"),
        out: Path = typer.Option(..., help="export folder"),
        fmt: str = typer.Option("lora", "--format", help="lora (per-expert LoRA files) or full (transformers)"),
        use_ema: bool = typer.Option(True, help="export the EMA weights when the checkpoint has them"),
    ) -> None:
        """Export a real-scale student's experts in diffusers-loadable form (+ pdmd_export.json)."""
        from pdmd_core.checkpoint import UnsafeCheckpointError
        from pdmd_core.realscale.export import export_student
        from pdmd_core.realscale.student_io import load_student

        try:
            student, bundle, cfg = load_student(run, use_ema=use_ema)
        except (UnsafeCheckpointError, FileNotFoundError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        manifest = export_student(student.generator, bundle, cfg, out, fmt)
        typer.echo(f"exported {len(manifest.experts)} {fmt} experts -> {out}")
