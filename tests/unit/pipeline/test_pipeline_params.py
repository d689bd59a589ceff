"""The params file: validation errors name the key; every arm gets the same generator budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdmd_pipeline.params import ParamsError, load_params, resolve_run_config

ROOT = Path(__file__).resolve().parents[3]
MODEL = {"kind": "mlp", "dim": 2}


@pytest.mark.parametrize("name", ["params.yaml", "experiments/presets/smoke.yaml"])
def test_shipped_params_resolve_for_every_arm(name):
    params = load_params(ROOT / name)
    assert len(params.seeds) >= (3 if name == "params.yaml" else 2)
    for bench_name, bench in params.benchmarks.items():
        budgets = set()
        for arm in bench.arms:
            cfg = resolve_run_config(params, bench_name, arm, params.seeds[0], MODEL)
            phases = cfg.phases or 1
            budgets.add(cfg.iterations * phases)
            assert cfg.seed == params.seeds[0]
        assert budgets == {params.budget(bench_name)}  # same iteration budget for every arm


def test_unknown_key_and_unknown_arm(tmp_path):
    base = (ROOT / "experiments/presets/smoke.yaml").read_text()
    (tmp_path / "a.yaml").write_text(base + "\nexecutr: slurm\n")
    with pytest.raises(ParamsError, match="unknown key 'executr'"):
        load_params(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(base.replace("arms: [dmd, dmd_full", "arms: [nope, dmd_full", 1))
    with pytest.raises(ParamsError, match=r"lists \['nope'\]"):
        load_params(tmp_path / "b.yaml")


def test_budget_must_divide_phases(tmp_path):
    base = (ROOT / "experiments/presets/smoke.yaml").read_text().replace("iterations: 8", "iterations: 6")
    (tmp_path / "p.yaml").write_text(base)
    with pytest.raises(ParamsError, match="not divisible by the 4 phases of arm 'phased_k4'"):
        load_params(tmp_path / "p.yaml")  # checked for every benchmark × arm when the params are loaded


def test_bad_arm_value_is_reported_at_load_naming_benchmark_arm_and_field(tmp_path):
    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["arms"]["phased_k4"]["shift"] = 0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "p.yaml")
    message = str(err.value)
    assert "phased_k4" in message and "shift = 0" in message and "greater than 0" in message
