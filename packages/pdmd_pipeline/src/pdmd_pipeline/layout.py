"""Where each stage writes, relative to the project root (dvc.yaml names the same paths).

    runs/data/<b>/            info.json (kind, prompts, shape, md5) and real/ (test split as a sample set)
    runs/teachers/<b>/        teacher.pt, features.pt2, train_stats.json
    runs/teacher_checks/<b>/  samples/ (the quality check's), gate.json   reports/teachers/<b>.json (full report)
    reports/metrics/teachers/<b>.json   the teacher's quality bar, flat (DVC metrics)
    runs/distill/<b>/         sweep.json, <arm>/seed<k>/{checkpoints, student, config.yaml, result.json}, logs/
    runs/samples/<b>/         <arm>/seed<k>/ and teacher_<n>/ sample sets
    runs/eval/<b>/            units.jsonl (every metric's per-unit values), summary.json
    reports/<b>/              results.{md,csv,tex}, claims.{md,json}
    reports/figures/<b>/      figures (*.png: DVC's image plots)     reports/metrics/<b>.json (DVC metrics)
    runs/convergence/<b>/     the convergence stage: train/, samples/, units.jsonl, convergence.json
    runs/claims/<b>.json      the benchmark's claim outcomes (input of the report stage)
    reports/toy1d/            the Fig. 2 toy: subinterval.{json,png}
    reports/README.md         the one-page summary of every claim
"""

from __future__ import annotations

from pathlib import Path

from pdmd_core.paths import project_root

RUN_METRICS_FILE = "metrics.jsonl"  # in each run folder: every iteration's training metrics (the tables plot them)


class Layout:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or project_root()).resolve()

    def data(self, b: str) -> Path:
        return self.root / "runs" / "data" / b

    def teacher(self, b: str) -> Path:
        return self.root / "runs" / "teachers" / b

    def teacher_report(self, b: str) -> Path:
        return self.root / "reports" / "teachers" / f"{b}.json"

    def teacher_check(self, b: str) -> Path:
        return self.root / "runs" / "teacher_checks" / b

    def teacher_gate(self, b: str) -> Path:
        return self.teacher_check(b) / "gate.json"

    def distill(self, b: str) -> Path:
        return self.root / "runs" / "distill" / b

    def run_dir(self, b: str, arm: str, seed: int) -> Path:
        return self.distill(b) / arm / f"seed{seed}"

    def samples(self, b: str) -> Path:
        return self.root / "runs" / "samples" / b

    def sample_set(self, b: str, arm: str, seed: int | None) -> Path:
        return self.samples(b) / arm / ("" if seed is None else f"seed{seed}")

    def eval(self, b: str) -> Path:
        return self.root / "runs" / "eval" / b

    def convergence(self, b: str) -> Path:
        return self.root / "runs" / "convergence" / b

    def toy1d(self) -> Path:
        return self.root / "reports" / "toy1d"

    def report(self, b: str) -> Path:
        return self.root / "reports" / b

    def figures(self, b: str) -> Path:
        return self.root / "reports" / "figures" / b

    def teacher_metrics(self, b: str) -> Path:
        return self.root / "reports" / "metrics" / "teachers" / f"{b}.json"

    def metrics(self, b: str) -> Path:
        return self.root / "reports" / "metrics" / f"{b}.json"

    def claims(self, b: str) -> Path:
        return self.root / "runs" / "claims" / f"{b}.json"

    def readme(self) -> Path:
        return self.root / "reports" / "README.md"
