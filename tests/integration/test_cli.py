import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import pdmd_core
from pdmd_core.cli import app

runner = CliRunner()
PDMD = str(Path(sys.executable).with_name("pdmd"))


def test_version_matches_package():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pdmd {pdmd_core.__version__}"


def test_console_script_help_lists_service_commands():
    out = subprocess.run([PDMD, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("env", "cluster", "mlflow"):
        assert command in out


def test_env_json_reports_versions_device_and_services():
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for pkg in ("torch", "diffusers", "transformers", "mlflow", "dvc", "submitit"):
        assert info["packages"][pkg] != "not installed", pkg
    assert info["compute"]["device"] in ("cpu",) or info["compute"]["cuda_devices"] > 0
    assert info["compute"]["torch_threads"] >= 1
    assert set(info["services"]) == {"slurm", "mlflow"}
    assert isinstance(info["services"]["slurm"]["reachable"], bool)


def test_unknown_command_fails_with_message():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code != 0
    assert "no-such-command" in result.output
