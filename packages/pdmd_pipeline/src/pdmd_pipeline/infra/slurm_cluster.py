"""A real single-node SLURM cluster on this machine: munged, MariaDB + slurmdbd, slurmctld, slurmd.

`start()` writes the configs (sized to this machine's cores and memory), starts each daemon that is not
already running and waits until the node is idle; it records what it started in a state file so that
`stop()` ends exactly those daemons (by their pid files) and nothing else. Needs root and the Debian
packages installed by scripts/install_system_packages.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pdmd_pipeline.infra.processes import pid_alive, read_pid, terminate, wait_for

CLUSTER_NAME = "pdmd"
PARTITION = "debug"
CONF_DIR = Path(os.environ.get("PDMD_SLURM_CONF_DIR", "/etc/slurm"))
STATE_FILE = Path(os.environ.get("PDMD_CLUSTER_STATE", "/var/lib/pdmd-cluster/started.json"))
LOG_DIR = Path("/var/log/slurm")
MANAGED_MARK = "# managed by pdmd (pdmd cluster start); edits are overwritten"
DB_PASSWORD = "pdmd-local"  # loopback-only MariaDB that holds nothing but this cluster's accounting
# Requeued jobs wait for the credential lifetime before they start again (SLURM default 120 s);
# a local test cluster has no reason to wait that long.
CRED_EXPIRE_S = 30


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Daemon:
    name: str
    pid_file: Path


MUNGED = Daemon("munged", Path("/run/munge/munged.pid"))
MARIADB = Daemon("mariadbd", Path("/run/mysqld/pdmd-mariadb.pid"))
SLURMDBD = Daemon("slurmdbd", Path("/run/slurmdbd.pid"))
SLURMCTLD = Daemon("slurmctld", Path("/run/slurmctld.pid"))
SLURMD = Daemon("slurmd", Path("/run/slurmd.pid"))
START_ORDER = [MUNGED, MARIADB, SLURMDBD, SLURMCTLD, SLURMD]
REQUIRED_BINARIES = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sinfo", "sbatch", "sacctmgr"]


def machine_resources() -> tuple[int, int]:
    """(cpus, memory MB that SLURM may hand out): all cores, 85 % of RAM."""
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as fh:
        total_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal"))
    return cpus, int(total_kb / 1024 * 0.85)


def slurm_conf(cpus: int, mem_mb: int) -> str:
    # Without DefMemPerCPU every job takes the node's whole memory and jobs run one at a time.
    def_mem = max(256, mem_mb // (2 * cpus))
    return f"""{MANAGED_MARK}
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire={CRED_EXPIRE_S}
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile={SLURMCTLD.pid_file}
SlurmdPidFile={SLURMD.pid_file}
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
SchedulerType=sched/backfill
# A requeued job becomes eligible after cred_expire; a 5 s backfill pass starts it soon after.
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={def_mem}
ReturnToService=2
MpiDefault=none
MinJobAge=300
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


CGROUP_CONF = f"""{MANAGED_MARK}
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
"""


def slurmdbd_conf() -> str:
    return f"""{MANAGED_MARK}
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
LogFile={LOG_DIR}/slurmdbd.log
PidFile={SLURMDBD.pid_file}
"""


def _write_managed(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a config unless a hand-written (unmanaged) one is already there."""
    if path.exists() and MANAGED_MARK not in path.read_text():
        return
    path.write_text(text)
    path.chmod(mode)


def write_configs() -> None:
    cpus, mem_mb = machine_resources()
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    _write_managed(CONF_DIR / "slurm.conf", slurm_conf(cpus, mem_mb))
    _write_managed(CONF_DIR / "cgroup.conf", CGROUP_CONF)
    _write_managed(CONF_DIR / "slurmdbd.conf", slurmdbd_conf(), mode=0o600)


INSTALL_SCRIPT = Path("scripts") / "install_system_packages.sh"


def _check_prerequisites() -> None:
    """Root, and the Debian packages (installed here, by scripts/install_system_packages.sh, when missing)."""
    if os.geteuid() != 0:
        raise ClusterError("`pdmd cluster start` needs root: it installs (when missing) and starts system daemons "
                           "(munged, MariaDB, slurmdbd, slurmctld, slurmd). A normal user needs none of this: "
                           "`executor: local` runs without SLURM, and `executor: slurm` needs only `sbatch` on "
                           "PATH and a reachable cluster.")
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        from pdmd_core.paths import project_root

        script = project_root() / INSTALL_SCRIPT
        if not script.is_file():
            raise ClusterError(f"missing SLURM/MariaDB binaries: {', '.join(missing)}; install the Debian packages "
                               "slurm-wlm slurmdbd mariadb-server munge (scripts/install_system_packages.sh slurm)")
        proc = subprocess.run(["bash", str(script), "slurm"], capture_output=True, text=True)
        still = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
        if proc.returncode or still:
            raise ClusterError(f"installing the SLURM packages failed ({script} slurm, exit {proc.returncode}); "
                               f"still missing: {', '.join(still)}\n{proc.stderr[-2000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running(daemon: Daemon) -> bool:
    return pid_alive(read_pid(daemon.pid_file))


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def _prepare_dirs() -> None:
    for folder, owner in [
        (Path("/run/munge"), "munge"),
        (Path("/run/mysqld"), "mysql"),
        (Path("/var/spool/slurmctld"), "root"),
        (Path("/var/spool/slurmd"), "root"),
        (LOG_DIR, "root"),
    ]:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, owner, owner)


def _start_munged() -> None:
    _run(["runuser", "-u", "munge", "--", "munged", f"--pid-file={MUNGED.pid_file}"])


def _start_mariadb() -> None:
    datadir = Path("/var/lib/mysql")
    if not (datadir / "mysql").exists():
        _run(["mariadb-install-db", "--user=mysql", f"--datadir={datadir}"])
    log = open(LOG_DIR / "mariadb.log", "ab")
    subprocess.Popen(
        ["mariadbd", "--user=mysql", "--bind-address=127.0.0.1", "--port=3306",
         f"--pid-file={MARIADB.pid_file}", "--socket=/run/mysqld/mysqld.sock"],
        stdout=log, stderr=log, start_new_session=True,
    )
    if not wait_for(lambda: Path("/run/mysqld/mysqld.sock").exists() and _port_open(3306), 60):
        raise ClusterError(f"MariaDB did not come up; see {LOG_DIR / 'mariadb.log'}")
    sql = (
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
        f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    )
    _run(["mariadb", "--socket=/run/mysqld/mysqld.sock", "-e", sql])


def _start_slurmdbd() -> None:
    _run(["slurmdbd"])
    if not wait_for(lambda: _port_open(6819), 60):
        raise ClusterError(f"slurmdbd did not listen on 6819; see {LOG_DIR / 'slurmdbd.log'}")


def _start_slurmctld() -> None:
    _run(["slurmctld"])
    if not wait_for(lambda: _port_open(6817), 60):
        raise ClusterError(f"slurmctld did not listen on 6817; see {LOG_DIR / 'slurmctld.log'}")


def _start_slurmd() -> None:
    _run(["slurmd", "-N", "localhost"])


STARTERS = {
    MUNGED.name: _start_munged,
    MARIADB.name: _start_mariadb,
    SLURMDBD.name: _start_slurmdbd,
    SLURMCTLD.name: _start_slurmctld,
    SLURMD.name: _start_slurmd,
}


def node_state() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _recorded() -> list[str]:
    try:
        return list(json.loads(STATE_FILE.read_text())["started"])
    except (FileNotFoundError, ValueError, KeyError):
        return []


def _record(names: list[str]) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({"started": names}))


def start(timeout: float = 120.0) -> list[str]:
    """Start whatever is not running; returns the names of the daemons this call started."""
    _check_prerequisites()
    write_configs()
    _prepare_dirs()
    started: list[str] = []
    try:
        for daemon in START_ORDER:
            if _running(daemon):
                continue
            STARTERS[daemon.name]()
            if not wait_for(partial(_running, daemon), 30):
                raise ClusterError(f"{daemon.name} did not start; see the logs under {LOG_DIR}")
            started.append(daemon.name)
            _record(sorted(set(_recorded()) | set(started)))
        # A node left DOWN/DRAIN by an unclean earlier stop is returned to service.
        if (node_state() or "").startswith(("down", "drain")):
            subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], capture_output=True)
        if not wait_for(lambda: (node_state() or "").startswith(("idle", "mix", "alloc")), timeout, 0.5):
            raise ClusterError(f"node not idle after {timeout:.0f} s (state {node_state()!r}); see {LOG_DIR}")
    except Exception:
        stop(only=started)
        raise
    return started


def stop(only: list[str] | None = None) -> list[str]:
    """Stop, in reverse start order, the daemons pdmd started (or just `only`); returns what it stopped."""
    names = _recorded() if only is None else list(only)
    stopped = []
    for daemon in reversed(START_ORDER):
        if daemon.name not in names:
            continue
        pid = read_pid(daemon.pid_file)
        if pid_alive(pid):
            terminate(pid, timeout=20)  # type: ignore[arg-type]
            stopped.append(daemon.name)
        daemon.pid_file.unlink(missing_ok=True)
    remaining = [n for n in _recorded() if n not in names]
    _record(remaining)
    return stopped


def status() -> dict[str, object]:
    daemons = {d.name: {"running": _running(d), "pid": read_pid(d.pid_file)} for d in START_ORDER}
    return {"daemons": daemons, "node_state": node_state(), "started_by_pdmd": _recorded()}


def is_up() -> bool:
    return (node_state() or "").startswith(("idle", "mix", "alloc", "comp"))
