"""One line that says what machine a measurement was taken on."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def hardware() -> str:
    """CPU model, cores/threads, torch version and thread count: one line."""
    import torch  # lazy: importing this module stays torch-free

    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", "?").strip()
        per_core = fields.get("Thread(s) per core", "?").strip()
    except (OSError, subprocess.CalledProcessError):
        cores = str(os.cpu_count())
        per_core = "?"
    return (f"{model}, {cores} CPUs ({per_core} thread(s) per core), torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}")


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (every core, from /proc/stat);
    None where the system has no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores other processes kept busy while the block ran.

    Timings taken while other jobs hold the cores are off in ways a ratio does not
    cancel (preemption hits short calls unevenly), so latency measurements say when
    the machine was busy.  The load average counts this process's own threads too
    (a quiet 2-thread run reads as busy on a 2-core machine), so this subtracts our
    own CPU time from the machine's busy time instead.
    ``with OtherLoad() as load: ...; load.cores`` (None where it cannot be read).
    """

    def __enter__(self) -> "OtherLoad":
        self.cores = None
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = time.perf_counter(), _busy_seconds(), _own_seconds()
        if busy is not None and self._start[1] is not None:
            self.cores = max(0.0, (busy - self._start[1]) - (own - self._start[2])) / max(wall - self._start[0], 1e-9)

    @property
    def busy(self) -> bool:
        """Other jobs held more than a quarter of one core on average."""
        return self.cores is not None and self.cores > 0.25

    def describe(self) -> str:
        if self.cores is None:
            return "the load of other processes could not be read"
        return (f"other processes kept {self.cores:.2f} of {os.cpu_count()} cores busy on average"
                f" ({'shared machine' if self.busy else 'quiet'})")
