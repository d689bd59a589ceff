"""Local services pdmd runs for users and tests: a single-node SLURM cluster and an MLflow server."""
