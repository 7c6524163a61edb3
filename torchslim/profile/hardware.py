"""One line that says what machine a measurement was taken on."""

from __future__ import annotations

import os
import platform
import subprocess


def hardware() -> str:
    """CPU model, cores/threads, torch version and thread count: one line."""
    import torch

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
