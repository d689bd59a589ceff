"""What `pdmd env` reports: library versions, compute device, and which services are reachable."""

from __future__ import annotations

import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version

from pdmd_pipeline.infra import mlflow_server, slurm_cluster

PACKAGES = ["pdmd-core", "pdmd-eval", "torch", "torchvision", "diffusers", "transformers", "peft",
            "mlflow", "dvc", "submitit", "open-clip-torch", "lpips", "torch-fidelity", "cd-fvd"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def compute_info() -> dict[str, object]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda_devices": torch.cuda.device_count() if cuda else 0,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def services() -> dict[str, object]:
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith("http"):
        mlflow_state: dict[str, object] = {"url": tracking, "reachable": mlflow_server.healthy(tracking)}
    else:
        local = mlflow_server.status()
        mlflow_state = {"url": local.get("url"), "reachable": bool(local.get("running"))}
    return {
        "slurm": {"sbatch_on_path": shutil.which("sbatch") is not None, "reachable": slurm_cluster.is_up()},
        "mlflow": mlflow_state,
    }


def collect() -> dict[str, object]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": package_versions(), "compute": compute_info(), "services": services()}
