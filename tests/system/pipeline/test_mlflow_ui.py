"""The MLflow UI as a user meets it: `pdmd mlflow ui` on the smoke run's store, opened in headless Chromium
(Debian's package) with a fresh profile. The address it prints for each benchmark lands on the runs table of the
latest sweep grouped by arm, one row per arm × seed, the headline `eval/*` metrics as columns; the compare
address of `pdmd compare` lists every one of those runs. Assertions are on the rendered page (the DOM after the
UI's scripts ran), with retries and a growing time budget for a slow first render."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_smoke import run_in, seeds_of, smoke_preset

from pdmd_pipeline.dvc_views import headline_metrics
from pdmd_pipeline.infra.mlflow_server import free_port, healthy
from pdmd_pipeline.infra.processes import wait_for
from pdmd_pipeline.sandbox import sandbox_env

BIN = Path(sys.executable).parent
KIND = {"mog2d": "points", "moving_digits": "video"}
BUDGETS_MS = (15_000, 30_000, 60_000)  # virtual time per attempt: the first render compiles MLflow's JS bundle


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # `make test` installs it (scripts/install_system_packages.sh browser); a missing one is an error
        pytest.fail("chromium is not installed: run `bash scripts/install_system_packages.sh browser` as root")
    return path


def render(url: str, expected: list[str], workdir: Path, name: str) -> str:
    """The page's text after its scripts ran; retried with a longer budget until every expected string shows.
    A screenshot of the last attempt is kept in `workdir` for whoever debugs a failure."""
    text = ""
    for attempt, budget in enumerate(BUDGETS_MS):
        profile = workdir / f"profile-{name}-{attempt}"  # a new user: no remembered layout or view
        common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", f"--user-data-dir={profile}", f"--virtual-time-budget={budget}",
                  "--window-size=1920,1400"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=budget / 1000 + 90)
        text = re.sub(r"<[^>]+>", " ", dom.stdout)  # the visible text (and attribute-free markup) of the page
        text = re.sub(r"\s+", " ", text)
        if all(s in text for s in expected):
            break
    subprocess.run([*common, f"--screenshot={workdir / f'{name}.png'}", url], capture_output=True, timeout=180)
    missing = [s for s in expected if s not in text]
    assert not missing, f"{name}: {missing} not on the page after {len(BUDGETS_MS)} attempts ({url}); see {workdir}"
    return text


@pytest.mark.slow
@pytest.mark.mlflow
def test_first_screen_groups_runs_by_arm_and_compare_view_lists_them(smoke_repo, tmp_path):
    root, result = smoke_repo
    assert result.returncode == 0, result.output[-4000:]
    preset = smoke_preset()
    port = free_port()
    env = sandbox_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "pdmd"), "mlflow", "ui", "--port", str(port)], cwd=root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 180, 0.5)
        assert proc.poll() is None, log.read_text()
        printed = log.read_text()
        ui = f"http://127.0.0.1:{port}"
        for bench, spec in preset["benchmarks"].items():
            match = re.search(rf"pdmd/{bench}: arms table (\S+)", printed)
            assert match, printed
            url = match.group(1)
            assert url.startswith(f"{ui}/#/experiments/") and "workflowType=machine_learning" in url
            seeds = {arm: seeds_of(preset, arm) for arm in spec["arms"]}
            runs = [f"{arm}/seed{seed}" for arm in spec["arms"] for seed in seeds[arm]]
            headline = [f"eval/{m}" for m in headline_metrics(KIND[bench])]
            # the count the page states: arm × seed runs (extra seeds included), the sweep's parent and the
            # convergence runs filtered out
            text = render(url, [f"pdmd/{bench}", f"{len(runs)} matching runs", *runs, *headline], tmp_path,
                          f"runs-{bench}")
            for arm in spec["arms"]:  # one group per arm holding its seeds
                assert re.search(rf"Group: {re.escape(arm)} {len(seeds[arm])}\b", text), arm
            assert "Traces 0" not in text and "GenAI apps" not in text  # the training layout, not the GenAI one
            cmp = json.loads(run_in(root, str(BIN / "pdmd"), "compare", "-b", bench, "--ui", ui, "--json"))
            assert len(cmp["run_ids"]) == len(runs)
            text = render(cmp["compare_url"], [f"Comparing {len(runs)} Runs from 1 Experiment", *runs], tmp_path,
                          f"compare-{bench}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
