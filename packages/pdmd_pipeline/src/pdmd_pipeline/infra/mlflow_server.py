"""A local MLflow tracking server: loopback only, sqlite backend, artifacts in a project folder.

Lean settings (one worker, no job execution) keep it at ~0.5 GB. The server runs in its own process
session; its pid and URL are kept in `<root>/server.json` so `stop` ends exactly that server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pdmd_core.paths import state_dir
from pdmd_pipeline.infra.processes import pid_alive, terminate, wait_for

DEFAULT_PORT = 5005


class MlflowServerError(RuntimeError):
    pass


@dataclass
class ServerInfo:
    pid: int
    host: str
    port: int
    root: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def default_root() -> Path:
    return state_dir() / "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _info_file(root: Path) -> Path:
    return root / "server.json"


def read_info(root: Path | None = None) -> ServerInfo | None:
    root = root or default_root()
    try:
        return ServerInfo(**json.loads(_info_file(root).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _mlflow_executable() -> str:
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else (shutil.which("mlflow") or "mlflow")


def start(root: Path | None = None, port: int | None = None, host: str = "127.0.0.1",
          timeout: float = 120.0) -> ServerInfo:
    """Start a server (or return the one already running for this root)."""
    root = (root or default_root()).resolve()
    existing = read_info(root)
    if existing and pid_alive(existing.pid) and healthy(existing.url):
        return existing
    root.mkdir(parents=True, exist_ok=True)
    port = port or DEFAULT_PORT
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    log = open(root / "server.log", "ab")
    proc = subprocess.Popen(
        [_mlflow_executable(), "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", host, "--port", str(port), "--workers", "1"],
        stdout=log, stderr=log, env=env, start_new_session=True,
    )
    info = ServerInfo(pid=proc.pid, host=host, port=port, root=str(root))
    _info_file(root).write_text(json.dumps(asdict(info)))
    if not wait_for(lambda: healthy(info.url) or proc.poll() is not None, timeout, 0.5) or proc.poll() is not None:
        stop(root)
        raise MlflowServerError(f"MLflow server on port {port} did not become healthy; see {root / 'server.log'}")
    return info


def stop(root: Path | None = None) -> bool:
    """Stop the server recorded for this root; True if one was running."""
    root = (root or default_root()).resolve()
    info = read_info(root)
    _info_file(root).unlink(missing_ok=True)
    if info is None or not pid_alive(info.pid):
        return False
    terminate(info.pid, timeout=15, group=True)
    return True


def status(root: Path | None = None) -> dict[str, object]:
    info = read_info(root)
    if info is None:
        return {"running": False}
    return {"running": pid_alive(info.pid) and healthy(info.url), "url": info.url, "pid": info.pid,
            "root": info.root}
