"""Orchestration: the `dvc repro` pipeline, its executors, MLflow tracking and the claim report.

Modules (one job each):
- `params`    — the pipeline's params file (params.yaml / experiments/presets/*.yaml), validated; resolves
                every arm × seed into a DistillConfig dict with the same teacher, CFG, schedule and budget.
- `jobs`      — what one arm × seed job does (train, save the student) as a picklable function, and the
                checkpointable wrapper that SLURM requeues on preemption.
- `executors` — run a list of jobs locally (a pool of worker processes, one log file per job) or as a SLURM
                array through submitit with a profile from `slurm/profiles/`; both block and fail with the
                failing job's log path.
- `tracking`  — MLflow runs through a write-ahead spool (JSONL) so that an unreachable server loses nothing;
                `replay` pushes spooled records once the server is back.
- `claims`    — the paper's claims as data (paired comparisons, coverage twins, metric roles per sample kind)
                and the verdict rules as functions (seed-clustered intervals, artefact flag, budget directions).
- `stages/`   — one module per DVC stage (toy1d, data, teacher, teacher_check, distill, sample, evaluate; tables and
                report in `report`), each importing only what it runs (dvc.yaml's code deps are their import
                closures).
- `convergence` — the convergence stage (the claims' arms at several budgets, one seed) and its summary/figure.
- `report`    — the tables stage (tables, figures, claim outcomes) and the report stage (reports/README.md).
- `changes`   — which verdicts changed since reports/verdicts_before.json, and why.
- `system_metrics` — CPU / memory / GPU metrics of a job, sampled into its spool.
- `compare`   — `pdmd compare`: arms side by side (means, CIs over seeds) and the MLflow UI addresses.
- `commands`  — `pdmd stage ...`, `pdmd launch`, `pdmd pipeline sandbox`, `pdmd mlflow ui|replay`.
"""
