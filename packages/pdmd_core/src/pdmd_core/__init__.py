"""pdmd_core: the Phased DMD distillation engine.

Engine modules (each starts with a docstring describing its API):
- flow (pure flow-matching math, Eq. 7-13), schedules (timesteps, phase partitions, re-noise t),
  guidance (CFG conventions), dmd (generator gradient, surrogate and fake-score losses), rollout
  (method-specific backward simulation and gradient routing);
- config (DistillConfig, load_config), models.registry (ModelBundle, register_model, build_model),
  models.mlp (model kind `mlp`), models.moe (two-expert MoE by t);
- roles (Teacher, FakeScore, GeneratorExperts full/LoRA, EMA), trainer (Trainer, NonFiniteError),
  checkpoint (atomic checkpoints), student (Student sampler), dry_run, bench_step, engine_commands
  (`pdmd train`, `pdmd bench step`);
- reliability (fault injection and `pdmd reliability report` → reports/reliability.md).
"""

__version__ = "0.1.0"
