"""FLOPs per stage with torch's flop counter (a multiply-add counts 2; norms, activations and softmax are free).

Stage modules can be moved to the meta device first: they then run shape-only (seconds, even at 480x480) while the
backend's glue (scheduler, guidance arithmetic) runs on its real device with zero tensors standing in for stage
outputs. The math attention path is forced while counting: torch's counter has no formula for the fused CPU kernel
and would read the UNet 14% low (FACTS.md).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_map_only

from vedit_cli.benchmark.hooks import StageHooks, first_tensor

OTHER = "other"  # counted work outside every stage module (quant convs, glue): reported so nothing hides


@dataclass
class StageCounts:
    """FLOPs, calls and passes (batch items summed over calls) of each stage, over some span of work."""

    flops: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.flops.values())

    def scaled(self, divisor: int) -> "StageCounts":
        """Per-unit counts (e.g. per frame); calls and passes become averages."""
        return StageCounts(
            {k: v / divisor for k, v in self.flops.items()},
            {k: v / divisor for k, v in self.calls.items()},
            {k: v / divisor for k, v in self.passes.items()},
        )


def move_to_meta(stage_modules: dict[str, torch.nn.Module]) -> None:
    """Free the stage modules' weights: from now on they only compute shapes (and FLOPs)."""
    for module in stage_modules.values():
        module.to("meta")


class FlopProbe:
    """Counts FLOPs by stage while active; `take()` returns the counts since the previous `take()`."""

    def __init__(self, stage_modules: dict[str, torch.nn.Module], redirect_to_meta: bool = False):
        self.redirect_to_meta = redirect_to_meta
        self.hooks = StageHooks(stage_modules, self._enter_stage, self._exit_stage)
        self.counter = None
        self.stack = ExitStack()
        self.pending = StageCounts()
        self.stage_started_at = 0
        self.caller_device: torch.device | None = None
        self.taken_total = 0

    def __enter__(self) -> "FlopProbe":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        self.counter = FlopCounterMode(display=False)
        self.stack.enter_context(torch.no_grad())
        self.stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        self.stack.enter_context(self.counter)
        self.stack.enter_context(self.hooks)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()

    def take(self) -> StageCounts:
        """Counts since the last take, with the work outside any stage module under "other"."""
        total = self.counter.get_total_flops()
        counts, self.pending = self.pending, StageCounts()
        counts.flops[OTHER] = total - self.taken_total - counts.total
        self.taken_total = total
        return counts

    def _enter_stage(self, stage: str, args: tuple, kwargs: dict):
        self.stage_started_at = self.counter.get_total_flops()
        batch = first_tensor(args, kwargs)
        self.pending.calls[stage] = self.pending.calls.get(stage, 0) + 1
        self.pending.passes[stage] = self.pending.passes.get(stage, 0) + (batch.shape[0] if batch is not None and batch.dim() else 1)
        self.pending.flops.setdefault(stage, 0)
        if not self.redirect_to_meta or batch is None or batch.is_meta:
            self.caller_device = None
            return None
        self.caller_device = batch.device
        return tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))

    def _exit_stage(self, stage: str, output):
        self.pending.flops[stage] += self.counter.get_total_flops() - self.stage_started_at
        if self.caller_device is None:
            return None
        device = self.caller_device
        return tree_map_only(torch.Tensor, lambda t: torch.zeros(t.shape, dtype=t.dtype, device=device), output)
