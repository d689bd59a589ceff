"""CLI of the real-scale jobs: `pdmd sample` (stock diffusers pipeline -> pdmd_eval sample set),
`pdmd train-distributed` and `pdmd check-distributed` (multi-task SLURM jobs through submitit)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pdmd_core.realscale.commands import dtype_option

PANEL = "Real scale"


def int_ranges(text: str) -> list[int]:
    try:
        values: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            values.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
        return values
    except ValueError:
        raise typer.BadParameter(f"expected integers like '0-7' or '0,3,5', got {text!r}") from None


def register(app: typer.Typer) -> None:
    from pdmd_pipeline.study.commands import register as register_study

    register_study(app, PANEL)

    @app.command("sample", rich_help_panel=PANEL)
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
        from pdmd_core.realscale.vae import read_image_pairs
        from pdmd_pipeline.realscale.sample_set import sample_to_set

        frames, height, width = (int(v) for v in resolution.split(","))
        ids = None if prompt_ids is None else int_ranges(prompt_ids)
        pairs = None if images is None else read_image_pairs(images)
        written = sample_to_set(export, model_path, prompt_cache, out, (frames, height, width), int_ranges(seeds), ids,
                                method, device, dtype_option(dtype), pairs)
        typer.echo(json.dumps({"samples": written, "out": str(out)}))

    @app.command("check-distributed", rich_help_panel=PANEL)
    def check_distributed_cmd(
        profile: Path = typer.Option(Path("slurm/profiles/realscale_local_2tasks.yaml"),
                                     help="distributed SLURM profile (nodes x tasks_per_node ranks)"),
        mode: str = typer.Option("ddp", help="ddp or fsdp2"),
        steps: int = typer.Option(3, help="AdamW steps of the tiny fake score"),
        folder: Path = typer.Option(Path(".pdmd/submitit-check"), help="submitit log folder"),
    ) -> None:
        """Train a tiny fake score as a multi-task SLURM job and compare with one process (same global batch)."""
        from pdmd_core.realscale.ddp_check import compare_states, train_fake_score_steps
        from pdmd_pipeline.realscale.slurm import distributed_executor, load_distributed_profile, submit_ranks

        if mode not in ("ddp", "fsdp2"):
            raise typer.BadParameter(f"mode must be 'ddp' or 'fsdp2', got {mode!r}")
        spec = load_distributed_profile(profile)
        global_batch = 2 * spec.world_size  # micro-batch 1, two accumulation micro-steps per rank
        job = submit_ranks(distributed_executor(spec, folder, name="pdmd-check"), train_fake_score_steps, mode,
                           global_batch, 1, steps, 0)
        typer.echo(f"submitted {job.job_id}: {spec.world_size} ranks ({spec.nodes} node(s) x {spec.tasks_per_node})")
        distributed = job.results()[0]
        single = train_fake_score_steps("single", global_batch, global_batch, steps, 0)
        initial = train_fake_score_steps("single", global_batch, global_batch, 0, 0)
        report = compare_states(distributed, single, initial)
        typer.echo(json.dumps(report, indent=2))
        if not report["same_training"]:
            raise typer.Exit(1)

    @app.command("train-distributed", rich_help_panel=PANEL)
    def train_distributed_cmd(
        config: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML run config (global batch_size)"),
        profile: Path = typer.Option(..., help="distributed SLURM profile, e.g. slurm/profiles/realscale_64xh100.yaml"),
        run_dir: Path = typer.Option(..., help="run folder (every rank's checkpoint shards; rank 0's metrics)"),
        wait: bool = typer.Option(True, help="block until the job ends"),
        tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI: rank 0 logs params, each step's "
                                                            "metrics once over requeues, SLURM job ids"),
        experiment: str = typer.Option("pdmd/realscale", help="MLflow experiment (with --tracking-uri)"),
    ) -> None:
        """Data-parallel distillation as one SLURM job (one rank per task, global batch split over the ranks),
        requeued on pre-emption / time-out from a checkpoint all ranks committed; resumes on any rank count."""
        from pdmd_pipeline.jobs import TrackingTarget
        from pdmd_pipeline.realscale.launch import submit_training

        folder = run_dir.resolve()
        target = None if tracking_uri is None else TrackingTarget(
            uri=tracking_uri, experiment=experiment, run_key=f"realscale/{folder.name}", parent_key=None,
            spool_root=str(folder / "mlflow-spool"), run_name=folder.name)
        job = submit_training(config, run_dir, profile, tracking=target)
        typer.echo(f"submitted SLURM job {job.job_id} -> {run_dir}")
        if wait:
            job.results()
            typer.echo(f"done: {run_dir}")
