"""dvc.yaml's code deps equal the code each stage runs (scripts/stage_code_deps.py, also run by `make lint`): the
check passes on the project's dvc.yaml, names a missing and a superfluous path, and the closures keep an edit of
a metric away from the teachers and the distillation, and an edit of the trainer away from data and teachers.
The real-scale study's experiments/realscale/dvc.yaml is held to the same rule: an edit of the trainer marks its
distill stage (and everything downstream of it through the data deps), not its prompts stage; an edit of the
table writer only `tables`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CORE = "packages/pdmd_core/src/pdmd_core"
EVAL = "packages/pdmd_eval/src/pdmd_eval"


@pytest.fixture(scope="module")
def deps():
    spec = importlib.util.spec_from_file_location("stage_code_deps", ROOT / "scripts" / "stage_code_deps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def code(deps) -> dict[str, list[str]]:
    import grimp

    graph = grimp.build_graph(*deps.PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    return {name: deps.stage_code(name, graph) for name in
            ("data", "teacher", "teacher_check", "distill", "sample", "evaluate", "tables", "report")}


def _covers(paths: list[str], file: str) -> bool:
    return any(file == p or file.startswith(p + "/") for p in paths)


def test_project_dvc_yaml_matches_the_code(deps):
    assert deps.check(ROOT / "dvc.yaml") == []


STUDY_YAML = ROOT / "experiments" / "realscale" / "dvc.yaml"


def test_the_real_scale_study_lists_the_code_each_stage_runs(deps):
    assert deps.check(STUDY_YAML) == []
    listed = {key: paths for key, (_, paths) in deps.dvc_stages(STUDY_YAML).items()}
    assert set(listed) == {"prompts", "distill", "export", "sample", "evaluate", "tables"}
    assert all(listed.values())  # every stage has code deps
    # the trainer and the real-scale adapters: distill runs them; encoding the prompts does not train
    assert _covers(listed["distill"], f"{CORE}/trainer.py") and _covers(listed["distill"], f"{CORE}/realscale/wan.py")
    assert not _covers(listed["prompts"], f"{CORE}/trainer.py")
    table_writer = "packages/pdmd_pipeline/src/pdmd_pipeline/study/tables.py"
    assert [key for key, paths in listed.items() if _covers(paths, table_writer)] == ["tables"]
    # both files are checked by default (make lint)
    assert [p.relative_to(ROOT).as_posix() for p in deps.DVC_YAMLS] == ["dvc.yaml", "experiments/realscale/dvc.yaml"]


def test_check_of_the_study_names_a_removed_trainer(deps, tmp_path):
    spec = yaml.safe_load(STUDY_YAML.read_text())
    spec["stages"]["distill"]["do"]["deps"].remove(f"{CORE}/trainer.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    problems = deps.check(tmp_path / "dvc.yaml")
    assert len(problems) == 1 and problems[0].startswith(f"stage distill: missing ['{CORE}/trainer.py']")


def test_check_names_a_missing_and_a_superfluous_dep(deps, tmp_path):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = spec["stages"]["distill"]["do"]["deps"]
    listed.remove(f"{CORE}/trainer.py")
    listed.append(f"{EVAL}/metrics")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    problems = deps.check(tmp_path / "dvc.yaml")
    assert len(problems) == 1
    assert problems[0].startswith(f"stage distill: missing ['{CORE}/trainer.py'], not run by the stage "
                                  f"['{EVAL}/metrics']")


def test_a_metric_edit_reaches_evaluate_but_no_teacher_or_distillation(code):
    metric = f"{EVAL}/metrics/diversity.py"
    assert _covers(code["evaluate"], metric) and _covers(code["tables"], metric)
    for stage in ("data", "teacher", "teacher_check", "distill", "sample"):
        assert not _covers(code[stage], metric), stage
    # the teacher's quality check uses the pure FD/mode/flow math; training the teacher uses none of pdmd_eval
    assert _covers(code["teacher_check"], f"{EVAL}/functional/fidelity.py")
    assert not any(p.startswith(EVAL) for p in code["teacher"] + code["distill"])


def test_a_trainer_edit_reaches_distill_but_not_data_or_teachers(code):
    for file in (f"{CORE}/trainer.py", f"{CORE}/dmd.py", f"{CORE}/rollout.py"):
        assert _covers(code["distill"], file)
        for stage in ("data", "teacher", "teacher_check", "evaluate"):
            assert not _covers(code[stage], file), (file, stage)
    # the student sampler is what `sample` runs; the real-scale adapters are imported by no CPU-tier stage
    assert _covers(code["sample"], f"{CORE}/student.py")
    assert not any(p.startswith(f"{CORE}/realscale") for paths in code.values() for p in paths)


def test_write_restores_the_code_deps_and_keeps_everything_else(deps, tmp_path):
    text = (ROOT / "dvc.yaml").read_text()
    broken = text.replace(f"        - {CORE}/trainer.py\n", "").replace(
        f"        - {CORE}/rollout.py\n", f"        - {CORE}/rollout.py\n        - {EVAL}/metrics\n", 1)
    assert broken != text
    (tmp_path / "dvc.yaml").write_text(broken)
    assert deps.write(tmp_path / "dvc.yaml") == ["convergence", "distill"]  # the two stages that train
    assert (tmp_path / "dvc.yaml").read_text() == text  # comments, data deps and order untouched
