"""Real-scale studies: a params file + the DVC pipeline `experiments/realscale/dvc.yaml` (prompts → distill on
SLURM → export → sample with the stock diffusers pipelines → evaluate → the paper's Tables 2, 3, 6 and claims)."""
