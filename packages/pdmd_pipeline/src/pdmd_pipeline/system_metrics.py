"""System metrics of a job (CPU, memory; GPU when nvidia-ml-py finds one), sampled in a background thread and
written to the run's spool as `system/*` metrics, so MLflow's "System metrics" tab shows them and an MLflow
outage loses none.

MLflow's own `SystemMetricsMonitor` sends straight to the server from its thread (and stops when it cannot reach
it); here its monitors (`mlflow.system_metrics.metrics`: CPUMonitor needs psutil, GPUMonitor needs
nvidia-ml-py) only measure, and the spooled tracker records. Metric names are MLflow's
(`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`, `system/gpu_0_utilization_percentage`,
...) plus this job's own process (`system/process_cpu_percentage`, `system/process_rss_megabytes`), which on a
shared node says more than the machine-wide numbers. Steps count samples (resumed runs continue the count).
"""

from __future__ import annotations

import threading
import time
from typing import Any

PREFIX = "system/"
DEFAULT_INTERVAL_S = 5.0


class _ProcessMonitor:
    """This process and its children: CPU percent (of one core) and resident memory."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.process.cpu_percent()  # the first call only starts the interval
        self.samples: dict[str, list[float]] = {"process_cpu_percentage": [], "process_rss_megabytes": []}

    def collect_metrics(self) -> None:
        self.samples["process_cpu_percentage"].append(self.process.cpu_percent())
        self.samples["process_rss_megabytes"].append(self.process.memory_info().rss / 1e6)

    def aggregate_metrics(self) -> dict[str, float]:
        return {k: round(sum(v) / len(v), 1) for k, v in self.samples.items() if v}

    def clear_metrics(self) -> None:
        for values in self.samples.values():
            values.clear()


def default_monitors() -> list[Any]:
    """MLflow's CPU monitor, this process, and MLflow's GPU monitor when NVML finds a GPU."""
    import psutil
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

    psutil.cpu_percent()  # prime the machine-wide counter too
    monitors: list[Any] = [CPUMonitor(), _ProcessMonitor()]
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        monitors.append(GPUMonitor())
    except (ImportError, RuntimeError):  # nvidia-ml-py missing, or no GPU/driver: CPU and memory only
        pass
    return monitors


class SystemMetricsSampler:
    """`with SystemMetricsSampler(tracker):` samples every `interval_s` (and once at the end) into the spool."""

    def __init__(self, tracker: Any, interval_s: float = DEFAULT_INTERVAL_S, monitors: list[Any] | None = None,
                 first_step: int | None = None) -> None:
        self.tracker = tracker
        self.interval_s = interval_s
        self.monitors = monitors if monitors is not None else default_monitors()
        self.step = first_step if first_step is not None else next_system_step(tracker)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, float]:
        """Measure once and spool the values as one step."""
        values: dict[str, float] = {}
        for monitor in self.monitors:
            monitor.collect_metrics()
            values.update(monitor.aggregate_metrics())
            monitor.clear_metrics()
        record = {PREFIX + k: float(v) for k, v in values.items()}
        if record:
            self.tracker.spool.append({"op": "metrics", "metrics": record, "step": self.step,
                                       "time": int(time.time() * 1000)})
            self.step += 1
        return record

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> SystemMetricsSampler:
        self._thread = threading.Thread(target=self._loop, name="pdmd-system-metrics", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def next_system_step(tracker: Any) -> int:
    """One past the last system-metrics step already in the spool (0 for a new run)."""
    steps = [int(op["step"]) for op in tracker.spool.ops()
             if op["op"] == "metrics" and any(k.startswith(PREFIX) for k in op["metrics"])]
    return max(steps) + 1 if steps else 0
