"""The main job as a researcher without root would run it: a user created for the test (removed afterwards) runs
`make repro` in its own copy of the repository, i.e. the set-up (`scripts/setup.sh`, Python only) and `dvc
repro` of a one-benchmark tiny preset; then, as the same user, `executor: slurm` submits to the running cluster.
Nothing may ask for root or install system packages.

To stay fast the user's `.venv` reuses the project's installed packages read-only (a venv of the system's Python
of the same minor version whose site-packages is the project's, with the project's console scripts), so its
set-up finds a matching stamp and installs nothing; the project's own interpreter may live where the user cannot
read it (e.g. a pyenv under /root). Run as root (CI), the test creates the user; run by a normal user, it runs the
same commands as that user."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAMP_INPUTS = ("requirements/lock.txt", "pyproject.toml", "packages/pdmd_core/pyproject.toml",
                "packages/pdmd_eval/pyproject.toml", "packages/pdmd_pipeline/pyproject.toml")
ROOT_MARKERS = ("need root", "permission denied", "sudo", "must be root", "operation not permitted")


def _stamp() -> str:
    """scripts/setup.sh's stamp of its inputs (sha256 of the files in order, first 16 hex digits)."""
    data = b"".join((ROOT / p).read_bytes() for p in STAMP_INPUTS)
    return hashlib.sha256(data).hexdigest()[:16]


def tiny_preset() -> dict:
    """The smoke preset cut to one benchmark, two arms (1-step DMD, 2-phase Phased DMD), one seed."""
    params = yaml.safe_load((ROOT / "experiments" / "presets" / "smoke.yaml").read_text())
    params["seeds"] = [0]
    params["iterations"] = 4
    params["eval"]["seeds_per_prompt"] = 4  # the per-prompt k-NN precision/recall (k = 3) needs more than k
    params["arms"] = {k: params["arms"][k] for k in ("dmd", "phased_k2_sgts")}
    params["extra_seeds"] = {"seeds": [], "arms": []}
    params["convergence"]["arms"] = ["phased_k2_sgts"]
    mog2d = params["benchmarks"]["mog2d"]
    mog2d["arms"] = ["dmd", "phased_k2_sgts"]
    mog2d["teacher"]["train"]["iterations"] = 30
    params["benchmarks"] = {"mog2d": mog2d}
    return params


class User:
    """Runs commands as a normal user in a clean login-like environment (no root's variables)."""

    def __init__(self, name: str, home: Path, created: bool) -> None:
        self.name, self.home, self.created = name, home, created

    def run(self, command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
               "PATH": "/usr/local/bin:/usr/bin:/bin", "SHELL": "/bin/bash"}
        prefix = ["runuser", "-u", self.name, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, "env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c",
                               f"cd {cwd} && {command}"], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def normal_user(tmp_path_factory):
    if (ROOT / ".venv" / ".pdmd-setup-stamp").read_text().strip() != _stamp():
        pytest.fail("the project's .venv is older than its lock/pyproject files: run `make setup` first")
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        yield User(me.pw_name, Path(me.pw_dir), created=False)
        return
    name = f"pdmdu{os.getpid() % 100000}"
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name], check=True,
                   capture_output=True)
    try:
        yield User(name, Path(pwd.getpwnam(name).pw_dir), created=True)
    finally:
        # userdel refuses while a process of the user lives (a SLURM job step may take seconds to end)
        for _ in range(60):
            done = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
            if done.returncode == 0 or not _user_exists(name):
                break
            time.sleep(1)
        assert not _user_exists(name), f"could not remove the test user {name}: {done.stderr}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def user_clone(normal_user, tmp_path_factory):
    """The repository as the user's own files (what `git ls-files` holds, plus new files not yet committed), its
    .venv a link to the project's (read-only for the user), the tiny preset as params.yaml, a git repository."""
    base = normal_user.home if normal_user.created else tmp_path_factory.mktemp("user")
    clone = base / "pdmd"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    share_venv(ROOT / ".venv", clone / ".venv")
    (clone / "params.yaml").write_text(yaml.safe_dump(tiny_preset(), sort_keys=False))
    # the project's own results: this user produces fresh ones (the report's input verdicts_before.json stays)
    (clone / "dvc.lock").unlink(missing_ok=True)
    for path in (clone / "reports").iterdir():
        if path.name != "verdicts_before.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if normal_user.created:
        subprocess.run(["chown", "-R", f"{normal_user.name}:{normal_user.name}", str(clone)], check=True)
    setup = normal_user.run("git init -q && git add -A && git -c user.email=u@pdmd.local -c user.name=u commit -qm "
                            "clone", clone, 120)
    assert setup.returncode == 0, setup.stderr
    return clone


def share_venv(source: Path, target: Path) -> None:
    """`target`: a venv of the system Python (same minor version as `source`'s) over `source`'s site-packages,
    with `source`'s console scripts pointed at its own interpreter and `source`'s set-up stamp."""
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system_python = shutil.which(minor, path="/usr/local/bin:/usr/bin:/bin")
    if system_python is None:
        pytest.fail(f"no system {minor} to build the user's venv with (the project's venv is {minor})")
    subprocess.run([system_python, "-m", "venv", "--without-pip", str(target)], check=True, capture_output=True)
    site = target / "lib" / minor / "site-packages"
    shutil.rmtree(site)
    site.symlink_to(source / "lib" / minor / "site-packages")
    shebang = f"#!{source / 'bin' / 'python'}"
    for script in (source / "bin").iterdir():
        if script.is_file() and not script.is_symlink() and not (target / "bin" / script.name).exists():
            text = script.read_bytes()
            if text.startswith(shebang.encode()):
                out = target / "bin" / script.name
                out.write_bytes(f"#!{target / 'bin' / 'python'}".encode() + text[len(shebang):])
                out.chmod(0o755)
    shutil.copy2(source / ".pdmd-setup-stamp", target / ".pdmd-setup-stamp")


def _asks_for_root(proc: subprocess.CompletedProcess) -> list[str]:
    text = (proc.stdout + proc.stderr).lower()
    return [m for m in ROOT_MARKERS if m in text]


@pytest.mark.slow
def test_make_repro_as_a_normal_user(normal_user, user_clone):
    assert pwd.getpwnam(normal_user.name).pw_uid != 0
    proc = normal_user.run("make repro", user_clone, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _asks_for_root(proc) == [], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "installing" not in proc.stdout  # the stamp matched: no pip install, no apt-get
    readme = user_clone / "reports" / "README.md"
    assert readme.is_file() and "mog2d" in readme.read_text()
    lock = yaml.safe_load((user_clone / "dvc.lock").read_text())["stages"]
    assert set(lock) == {f"{s}@mog2d" for s in ("data", "teacher", "teacher_check", "distill", "sample",
                                                 "evaluate", "convergence", "tables")} | {"report", "toy1d"}
    uid = pwd.getpwnam(normal_user.name).pw_uid
    for path in (user_clone / "mlflow.db", user_clone / "runs" / "distill" / "mog2d" / "sweep.json",
                 user_clone / ".pdmd" / "mlflow-spool"):
        assert path.exists() and path.stat().st_uid == uid, path
    sweep = json.loads((user_clone / "runs" / "distill" / "mog2d" / "sweep.json").read_text())
    assert sorted(r["arm"] for r in sweep["runs"]) == ["dmd", "phased_k2_sgts"]


def test_root_only_commands_tell_a_normal_user_what_to_do(normal_user, user_clone):
    proc = normal_user.run(".venv/bin/pdmd cluster start", user_clone, timeout=300)
    assert proc.returncode == 1
    assert "needs root" in proc.stderr and "`executor: local` runs without SLURM" in proc.stderr, proc.stderr
    # the test set-up's system packages are installed (make test did it as root): nothing to do, no root asked
    proc = normal_user.run("bash scripts/install_system_packages.sh slurm browser", user_clone, timeout=120)
    assert proc.returncode == 0 and proc.stdout == proc.stderr == "", proc.stderr


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_executor_as_a_normal_user(normal_user, user_clone, slurm_cluster):
    """`executor: slurm` needs only sbatch and a reachable cluster: the same user submits one arm to the running
    cluster and its job runs under that user's id."""
    if not (user_clone / "runs" / "teachers" / "mog2d").is_dir():
        proc = normal_user.run("make repro", user_clone, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = normal_user.run(".venv/bin/pdmd launch -b mog2d --arms dmd --seeds 0 --executor slurm", user_clone,
                           timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _asks_for_root(proc) == [], proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = json.loads((user_clone / "runs" / "distill" / "mog2d" / "sweep.json").read_text())
    (run,) = sweep["runs"]
    assert run["slurm"]["slurm_job_id"]
    account = subprocess.run(["sacct", "-n", "-X", "-P", "-j", run["slurm"]["slurm_job_id"], "-o", "User,State"],
                             capture_output=True, text=True, timeout=60).stdout.split()
    assert account and account[0].startswith(f"{normal_user.name}|"), account
