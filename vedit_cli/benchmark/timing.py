"""Wall time per stage and per window: perf_counter on CPU, CUDA events on a GPU (no sync inside the timed work)."""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack

import torch

from vedit_cli.benchmark.hooks import StageHooks


class CpuClock:
    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start

    def synchronize(self) -> None:
        pass


class CudaClock:
    """Events recorded on the current stream; read after one synchronize, so timing adds no stalls."""

    def mark(self) -> "torch.cuda.Event":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1000.0

    def synchronize(self) -> None:
        torch.cuda.synchronize()


def make_clock(device: torch.device):
    return CudaClock() if device.type == "cuda" else CpuClock()


class StageTimer:
    """Times each stage's outermost calls while active; `take()` returns seconds per stage since the last take."""

    def __init__(self, stage_modules: dict[str, torch.nn.Module], clock):
        self.clock = clock
        self.hooks = StageHooks(stage_modules, self._enter_stage, self._exit_stage)
        self.spans: list[tuple[str, object, object]] = []
        self.started: tuple[str, object] | None = None
        self.stack = ExitStack()

    def __enter__(self) -> "StageTimer":
        self.stack.enter_context(torch.no_grad())
        self.stack.enter_context(self.hooks)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()

    def take(self) -> dict[str, float]:
        self.clock.synchronize()
        seconds: dict[str, float] = {}
        for stage, start, end in self.spans:
            seconds[stage] = seconds.get(stage, 0.0) + self.clock.seconds(start, end)
        self.spans.clear()
        return seconds

    def _enter_stage(self, stage: str, args: tuple, kwargs: dict):
        self.started = (stage, self.clock.mark())

    def _exit_stage(self, stage: str, output):
        self.spans.append((stage, self.started[1], self.clock.mark()))


def summarise(samples: list[float]) -> dict[str, float]:
    """min / median / max of a list of seconds."""
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples), "samples": len(samples)}
