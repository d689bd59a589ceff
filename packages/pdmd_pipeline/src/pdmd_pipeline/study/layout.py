"""Where each study stage writes, relative to the project root (experiments/realscale/dvc.yaml names the same).

    runs/realscale/prompts/<m>/    info.json (base weights, fingerprint, prompt sets), base/ (tiny models only),
                                   train.safetensors, eval.safetensors, train_frames.safetensors (I2V)
    runs/realscale/distill/<m>/    sweep.json (the runs: arm, seed, run folder, MLflow run key, SLURM job), logs/
    runs/realscale/checkpoints/<m>/<arm>/seed<k>-<config hash>/   rank 0's run folder (checkpoints, metrics.jsonl;
                                   other ranks' shards under ranks/<r>), not a DVC output: at real scale a run's
                                   sharded fake-score and optimiser state is hundreds of GB, which DVC should
                                   neither hash nor cache. The hash of the resolved run config names the folder, so
                                   resubmitting the same config resumes it and a changed config starts afresh.
    runs/realscale/exports/<m>/    <arm>/seed<k>/ (diffusers LoRA export + pdmd_export.json), logs/
    runs/realscale/samples/<m>/    teacher_<n>/ and <arm>/seed<k>/ sample sets (+ timing.json), logs/
    runs/realscale/eval/<m>/       units.jsonl (every metric's per-unit values), summary.json, logs/
    runs/realscale/feature_cache/<m>/  pdmd_eval's per-sample feature cache (keyed by each sample set's content),
                                   so a killed evaluation resumes; not a DVC output
    <report_dir>/                  README.md, table2.md, table3.md, table6.md, speed.md, claims.json, figures
"""

from __future__ import annotations

from pathlib import Path

from pdmd_core.paths import project_root

RUNS = Path("runs") / "realscale"


class StudyLayout:
    def __init__(self, root: Path | None = None, report_dir: str = "reports/realscale") -> None:
        self.root = (root or project_root()).resolve()
        self.report_dir = report_dir

    def prompts(self, m: str) -> Path:
        return self.root / RUNS / "prompts" / m

    def base(self, m: str) -> Path:
        return self.prompts(m) / "base"

    def distill(self, m: str) -> Path:
        return self.root / RUNS / "distill" / m

    def run_dir(self, m: str, arm: str, seed: int, config_hash: str) -> Path:
        return self.root / RUNS / "checkpoints" / m / arm / f"seed{seed}-{config_hash}"

    def exports(self, m: str) -> Path:
        return self.root / RUNS / "exports" / m

    def export(self, m: str, arm: str, seed: int) -> Path:
        return self.exports(m) / arm / f"seed{seed}"

    def samples(self, m: str) -> Path:
        return self.root / RUNS / "samples" / m

    def sample_set(self, m: str, arm: str, seed: int | None) -> Path:
        return self.samples(m) / arm / ("" if seed is None else f"seed{seed}")

    def eval(self, m: str) -> Path:
        return self.root / RUNS / "eval" / m

    def feature_cache(self, m: str) -> Path:
        return self.root / RUNS / "feature_cache" / m

    def report(self) -> Path:
        return self.root / self.report_dir

    def rel(self, path: Path) -> str:
        """A path relative to the project (what the stages record, so the folder can move)."""
        return str(Path(path).resolve().relative_to(self.root))
