"""Small process helpers shared by the service managers: pid files, liveness, polite termination."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def terminate(pid: int, timeout: float = 15.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `timeout`; `group` signals the whole process group led by pid."""
    send = (lambda sig: os.killpg(pid, sig)) if group else (lambda sig: os.kill(pid, sig))
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_for(lambda: not pid_alive(pid), timeout):
        if group:  # children of the leader may outlive it briefly
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    try:
        send(signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(lambda: not pid_alive(pid), 5.0)
