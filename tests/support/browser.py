"""Headless Chromium (Debian's package) as a user's browser: the rendered text of a page after its scripts ran."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
