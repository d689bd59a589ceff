"""Real-scale jobs: multi-rank SLURM training (launch, slurm), sampling into sample sets, their commands."""
