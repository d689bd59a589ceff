"""The code each DVC stage runs, as dvc.yaml deps: print them, or check dvc.yaml against them. Both pipelines:
the CPU study (dvc.yaml) and the real-scale study (experiments/realscale/dvc.yaml).

A stage `pdmd stage <name>` runs one function (pdmd_pipeline.commands.STAGE_FUNCTIONS), a stage `pdmd study
<name>` one of pdmd_pipeline.study.commands.STUDY_STAGE_FUNCTIONS (after the study's params loading,
STUDY_COMMON_MODULES). Its code is the import closure of that function's module over the three packages: every
first-party module it imports, directly or not, at module level or inside a function (grimp reads both), plus
each module's parent packages (Python runs their `__init__`) and the builder modules the model registry imports
by name for the model kinds the stage builds (the CPU tier's kind; the real-scale kinds for the study).
The `pdmd` command-line wiring (pdmd_core.cli, the `commands` modules) is not part of any stage's code: it only
parses arguments. A directory is listed when every Python file under it is in the closure, else its files.

    python scripts/stage_code_deps.py            # the deps block of every stage of both dvc.yaml files
    python scripts/stage_code_deps.py toy1d      # one stage (CPU study; `study:tables` for the real-scale one)
    python scripts/stage_code_deps.py --check    # exit 1 naming every stage whose code deps differ (make lint)
    python scripts/stage_code_deps.py --write    # rewrite each stage's `packages/...` deps in place

Convention for dvc.yaml: each stage lists, after its data deps, exactly these paths (entries starting with
`packages/`). A stage is a pdmd stage when its cmd is `pdmd stage <name>`, or when its key is itself an entry of
STAGE_FUNCTIONS (a stage with another command, e.g. `pdmd toy1d`). A new stage gets its function in
STAGE_FUNCTIONS (in a module of its own if it must not inherit another stage's imports), then `--write`. Needs
the dev extras (grimp).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pdmd_core", "pdmd_eval", "pdmd_pipeline")
CODE_PREFIX = "packages/"
STAGE_CMD = re.compile(r"\bpdmd (stage|study) (\w+)")
DVC_YAMLS = (ROOT / "dvc.yaml", ROOT / "experiments" / "realscale" / "dvc.yaml")
STUDY_PREFIX = "study:"  # a real-scale study stage's name here: study:<stage>
STUDY_MODEL_KINDS = ("wan", "qwen_image")


def registry_imports(kind: str, graph: object) -> list[str]:
    """The builder modules `build_model(kind)` imports by name (importlib, invisible to grimp): MODEL_MODULES in
    order, up to the first one whose imports register `kind` (independent of what this process imported)."""
    from pdmd_core.models import registry

    registry._load_known_modules(until=kind)
    builder = registry._BUILDERS[kind].__module__
    imported = []
    for name in registry.MODEL_MODULES:
        imported.append(name)
        upstream = graph.find_upstream_modules(name)  # type: ignore[attr-defined]
        if name == builder or builder in upstream:
            return imported
    raise RuntimeError(f"model kind {kind!r} is registered by {builder}, which no MODEL_MODULES entry imports")


def closure(modules: Iterable[str], graph: object, kinds: Iterable[str]) -> set[str]:
    dynamic = {"pdmd_core.models.registry": sorted({m for kind in kinds for m in registry_imports(kind, graph)})}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PACKAGES:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages' __init__ run first
        todo += list(graph.find_modules_directly_imported_by(name))  # type: ignore[attr-defined]
        todo += dynamic.get(name, [])
    return seen


def source_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot locate the source of {module}")
    return Path(spec.origin).resolve()


def compress(files: set[Path]) -> list[str]:
    """Repo-relative paths: a package directory when all its Python files are in `files`, else the files."""
    out: list[str] = []

    def walk(folder: Path) -> None:
        every = {p.resolve() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
        if every and every <= files:
            out.append(folder.relative_to(ROOT).as_posix())
            return
        for path in sorted(folder.iterdir()):
            if path.is_dir() and (path / "__init__.py").exists():
                walk(path)
            elif path.suffix == ".py" and path.resolve() in files:
                out.append(path.relative_to(ROOT).as_posix())

    for package in PACKAGES:
        walk(ROOT / "packages" / package / "src" / package)
    return sorted(out)


def stage_code(name: str, graph: object | None = None) -> list[str]:
    import grimp

    from pdmd_pipeline.commands import STAGE_FUNCTIONS
    from pdmd_pipeline.stages.teacher_files import MODEL_KIND
    from pdmd_pipeline.study.commands import STUDY_COMMON_MODULES, STUDY_STAGE_FUNCTIONS

    if name.startswith(STUDY_PREFIX):
        functions, common, kinds = STUDY_STAGE_FUNCTIONS, STUDY_COMMON_MODULES, STUDY_MODEL_KINDS
        key, where = name.removeprefix(STUDY_PREFIX), "pdmd_pipeline.study.commands.STUDY_STAGE_FUNCTIONS"
    else:
        functions, common, kinds = STAGE_FUNCTIONS, (), (MODEL_KIND,)
        key, where = name, "pdmd_pipeline.commands.STAGE_FUNCTIONS"
    if key not in functions:
        raise KeyError(f"stage {key!r} has no function in {where}")
    graph = graph or grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    roots = [functions[key].split(":")[0], *common]
    return compress({source_file(m) for m in closure(roots, graph, kinds)})


def stage_name(key: str, body: dict | str) -> str | None:
    """The function a dvc.yaml stage runs: `<name>` for `pdmd stage <name>`, `study:<name>` for `pdmd study <name>`,
    else its own key when that is a STAGE_FUNCTIONS entry (a stage with another command), else None (not pdmd
    code: no code deps checked)."""
    from pdmd_pipeline.commands import STAGE_FUNCTIONS

    match = STAGE_CMD.search(body if isinstance(body, str) else str(body.get("cmd", "")))
    if match:
        return match.group(2) if match.group(1) == "stage" else STUDY_PREFIX + match.group(2)
    return key if key in STAGE_FUNCTIONS else None


def dvc_stages(dvc_yaml: Path) -> dict[str, tuple[str, list[str]]]:
    """dvc.yaml stage key → (the function's name in STAGE_FUNCTIONS, the `packages/...` deps listed for it)."""
    spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    out = {}
    for key, stage in (spec.get("stages") or {}).items():
        body = stage.get("do", stage)
        name = stage_name(key, body)
        if name is not None:
            deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
            out[key] = (name, [d for d in deps if d.startswith(CODE_PREFIX)])
    return out


def check(dvc_yaml: Path) -> list[str]:
    """One message per stage whose code deps differ from its import closure (empty: all match)."""
    import grimp

    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    problems = []
    for key, (name, listed) in dvc_stages(dvc_yaml).items():
        expected = stage_code(name, graph)
        missing, extra = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
        if missing or extra:
            problems.append(f"stage {key}: missing {missing}, not run by the stage {extra}; its code deps are:\n"
                            + _block(expected))
    return problems


def write(dvc_yaml: Path) -> list[str]:
    """Replace each pdmd stage's `packages/...` deps in dvc.yaml by its closure, keeping every other line (comments,
    order); a stage without code deps gets them after its last dep. Returns the stages changed."""
    import grimp

    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    lines = dvc_yaml.read_text().splitlines()
    spans = _stage_spans(lines)
    changed = []
    for key in sorted(spans, key=lambda k: -spans[k][0]):  # bottom-up, so earlier spans keep their positions
        start, end, _ = spans[key]
        body = lines[start:end]
        name = stage_name(key, "\n".join(body))
        if name is None:
            continue
        dep_lines = [i for i, line in enumerate(body) if line.strip().startswith("- ") and
                     _in_deps(body, i)]
        if not dep_lines:
            continue
        indent = body[dep_lines[0]][: len(body[dep_lines[0]]) - len(body[dep_lines[0]].lstrip())]
        keep = [i for i in dep_lines if not body[i].strip()[2:].startswith(CODE_PREFIX)]
        new = [f"{indent}- {p}" for p in stage_code(name, graph)]
        old = [body[i] for i in dep_lines if i not in keep]
        if old == new:
            continue
        first, last = dep_lines[0], dep_lines[-1]
        body = body[:first] + [body[i] for i in keep] + new + body[last + 1:]
        lines[start:end] = body
        changed.append(key)
    dvc_yaml.write_text("\n".join(lines) + "\n")
    return sorted(changed)


def _stage_spans(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """stage key → (first line, end line) in dvc.yaml's text (stages are the 2-space-indented keys)."""
    starts = [(i, line.strip()[:-1]) for i, line in enumerate(lines)
              if re.match(r"^  [A-Za-z0-9_@-]+:\s*$", line)]
    out = {}
    for n, (i, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        out[key] = (i, end, key)
    return out


def _in_deps(body: list[str], i: int) -> bool:
    """Whether list item i belongs to the stage's `deps:` list (the closest key above it at lower indent)."""
    indent = len(body[i]) - len(body[i].lstrip())
    for line in reversed(body[:i]):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        own = len(line) - len(line.lstrip())
        if own < indent and stripped.endswith(":"):
            return stripped == "deps:"
    return False


def _block(paths: Iterable[str]) -> str:
    return "\n".join(f"        - {p}" for p in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="*", help="stage names (default: every pdmd stage in dvc.yaml)")
    parser.add_argument("--check", action="store_true", help="compare with dvc.yaml; exit 1 on a difference")
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml in place")
    parser.add_argument("--dvc-yaml", type=Path, action="append",
                        help="a dvc.yaml (repeatable; default: dvc.yaml and experiments/realscale/dvc.yaml)")
    args = parser.parse_args(argv)
    files = args.dvc_yaml or list(DVC_YAMLS)
    if args.write:
        for dvc_yaml in files:
            changed = write(dvc_yaml)
            print(f"{_shown(dvc_yaml)}: code deps rewritten for {changed or 'no stage (all matched)'}")
        return 0
    if args.check:
        failed = False
        for dvc_yaml in files:
            problems = check(dvc_yaml)
            for problem in problems:
                print(f"{_shown(dvc_yaml)}: {problem}", file=sys.stderr)
            if not problems:
                print(f"{_shown(dvc_yaml)}: every stage's code deps match the code it runs")
            failed = failed or bool(problems)
        return 1 if failed else 0
    import grimp

    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    names = args.stages or [name for f in files for name, _ in dvc_stages(f).values()]
    for name in dict.fromkeys(names):
        print(f"{name}:\n{_block(stage_code(name, graph))}")
    return 0


def _shown(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
