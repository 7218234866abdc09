"""Peak memory of one benchmark row: torch.cuda.max_memory_allocated on a GPU, peak RSS of this process on the host."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peaks(device: torch.device) -> bool:
    """Start a new peak window; returns whether the host peak could be reset (Linux: clear_refs 5 resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def read_peaks(device: torch.device, host_was_reset: bool) -> dict:
    """Bytes: GPU peak allocated (None off GPU) and host peak RSS (since reset, else over the process's life)."""
    gpu_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"gpu_peak_bytes": gpu_peak, "host_peak_rss_bytes": _host_peak_rss(), "host_peak_since_reset": host_was_reset}


def _host_peak_rss() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
