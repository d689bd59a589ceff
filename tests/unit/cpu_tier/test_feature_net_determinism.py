"""The exported feature net is a function of the config seed alone, not of earlier use of the global RNG."""

import torch

from pdmd_core.cpu_tier.config import load_config
from pdmd_core.cpu_tier.data import build_dataset
from pdmd_core.cpu_tier.teacher import train_benchmark_feature_net


def test_feature_net_weights_do_not_depend_on_prior_rng_use(tmp_path):
    cfg = load_config("experiments/benchmarks/digits.yaml")
    cfg.features.epochs = 1  # type: ignore[union-attr]
    data = build_dataset(cfg.data, cfg.seed)
    weights = []
    for burn in (0, 1000):
        torch.randn(burn)  # e.g. a fresh vs. cached teacher consumed different amounts of the stream
        net, _ = train_benchmark_feature_net(cfg, data, tmp_path / f"burn{burn}", progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_teacher_weights_do_not_depend_on_prior_rng_use(tmp_path):
    """mog2d has no feature net to seed the stream first: the teacher's own build must be seeded (torch seeds its
    default generator differently in every process, so an unseeded teacher differed on every `dvc repro`)."""
    from pdmd_core.cpu_tier.config import BenchmarkConfig
    from pdmd_core.cpu_tier.teacher import train_teacher

    cfg = BenchmarkConfig.model_validate({"data": {"kind": "mog2d", "num_points": 500},
                                          "model": {"hidden": 32, "depth": 1}, "train": {"iterations": 3}})
    weights = []
    for burn in (0, 1000):
        torch.randn(burn)
        teacher = train_teacher(cfg, tmp_path / f"burn{burn}", progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in teacher.model.parameters()]))
    assert torch.equal(weights[0], weights[1])
