"""FLOPs per stage with torch's flop counter (a multiply-add counts 2; norms, activations and softmax are free).

With `shape_only`, each outermost stage call runs on the meta device: its parameters are swapped for meta
stand-ins (torch.func.functional_call) and its inputs moved to meta, so it costs no arithmetic (seconds, even at
480x480), and the caller gets zeros of the right shape on its own device. The backend's glue (scheduler,
guidance arithmetic) keeps running on real tensors and its weights stay where they are. The math attention path
is forced while counting: torch's counter has no formula for the fused CPU kernel and would read the UNet 14% low
(0.600 T instead of 0.698 T for the InstructPix2Pix UNet at 480x480, measured on a CPU).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch.utils._pytree import tree_map_only

from vedit_cli.benchmark.hooks import StageHooks, first_tensor

OTHER = "other"  # counted work outside every stage module (quant convs, glue): reported so nothing hides


@dataclass
class StageCounts:
    """FLOPs, calls and passes (batch items summed over calls) of each stage, over some span of work."""

    flops: dict[str, float] = field(default_factory=dict)
    calls: dict[str, float] = field(default_factory=dict)
    passes: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.flops.values())

    def scaled(self, divisor: int) -> "StageCounts":
        """Per-unit counts (e.g. per frame); calls and passes become averages."""
        return StageCounts(
            {k: v / divisor for k, v in self.flops.items()},
            {k: v / divisor for k, v in self.calls.items()},
            {k: v / divisor for k, v in self.passes.items()},
        )


class ShapeOnlyCalls:
    """While active, the outermost call of each stage module computes on meta and returns zeros to its caller.

    A module that mixes in state kept outside its parameters (SVDiff's memories) cannot run on meta: its call is
    then re-run on real tensors (slower, same count) and the FLOPs of the failed attempt are discarded.
    """

    def __init__(self, stage_modules: dict[str, torch.nn.Module], flops_so_far):
        self.modules = list(stage_modules.values())
        self.flops_so_far = flops_so_far
        self.discarded = 0
        self.real_only: set[int] = set()  # ids of modules that failed on meta once
        self.inside = False
        self.saved: list[tuple[torch.nn.Module, object]] = []

    def __enter__(self) -> "ShapeOnlyCalls":
        for module in self.modules:
            self.saved.append((module, module.__dict__.get("forward")))
            module.forward = self._shape_only_forward(module, module.forward)
        return self

    def __exit__(self, *exc_info) -> None:
        for module, instance_forward in self.saved:
            del module.forward
            if instance_forward is not None:
                module.forward = instance_forward
        self.saved.clear()

    def _shape_only_forward(self, module: torch.nn.Module, real_forward):
        def forward(*args, **kwargs):
            if self.inside or id(module) in self.real_only:  # nested call, functional_call re-entering, or stateful
                return real_forward(*args, **kwargs)
            started_at = self.flops_so_far()
            try:
                return self._call_on_meta(module, args, kwargs)
            except RuntimeError as error:
                if "meta" not in str(error):
                    raise
                self.discarded += self.flops_so_far() - started_at
                self.real_only.add(id(module))
                return real_forward(*args, **kwargs)

        return forward


    def _call_on_meta(self, module: torch.nn.Module, args: tuple, kwargs: dict):
        batch = first_tensor(args, kwargs)
        caller_device = batch.device if batch is not None else torch.device("cpu")
        meta_state = {name: torch.empty_like(tensor, device="meta") for name, tensor in
                      chain(module.named_parameters(), module.named_buffers())}
        meta_args, meta_kwargs = tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
        self.inside = True
        try:
            output = torch.func.functional_call(module, meta_state, meta_args, meta_kwargs, strict=False)
        finally:
            self.inside = False
        return tree_map_only(torch.Tensor, lambda t: _zeros_like_on(t, caller_device), output)


def _zeros_like_on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.zeros(tensor.shape, dtype=tensor.dtype, device=device) if tensor.is_meta else tensor


class FlopProbe:
    """Counts FLOPs by stage while active; `take()` returns the counts since the previous `take()`."""

    def __init__(self, stage_modules: dict[str, torch.nn.Module], shape_only: bool = True):
        self.hooks = StageHooks(stage_modules, self._enter_stage, self._exit_stage)
        self.shape_only = ShapeOnlyCalls(stage_modules, self._flops_so_far) if shape_only else None
        self.counter = None
        self.stack = ExitStack()
        self.pending = StageCounts()
        self.stage_started_at = 0
        self.taken_total = 0

    def __enter__(self) -> "FlopProbe":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        self.counter = FlopCounterMode(display=False)
        self.stack.enter_context(torch.no_grad())
        self.stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        self.stack.enter_context(self.counter)
        self.stack.enter_context(self.hooks)
        if self.shape_only is not None:
            self.stack.enter_context(self.shape_only)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()

    def _flops_so_far(self) -> int:
        """The counter's total, less the work of meta attempts that failed and were re-run on real tensors."""
        return self.counter.get_total_flops() - (self.shape_only.discarded if self.shape_only else 0)

    def take(self) -> StageCounts:
        """Counts since the last take, with the work outside any stage module under "other"."""
        total = self._flops_so_far()
        counts, self.pending = self.pending, StageCounts()
        counts.flops[OTHER] = total - self.taken_total - counts.total
        self.taken_total = total
        return counts

    def _enter_stage(self, stage: str, args: tuple, kwargs: dict) -> None:
        self.stage_started_at = self._flops_so_far()
        batch = first_tensor(args, kwargs)
        self.pending.calls[stage] = self.pending.calls.get(stage, 0) + 1
        passes = batch.shape[0] if batch is not None and batch.dim() else 1
        self.pending.passes[stage] = self.pending.passes.get(stage, 0) + passes

    def _exit_stage(self, stage: str, output) -> None:
        spent = self._flops_so_far() - self.stage_started_at
        self.pending.flops[stage] = self.pending.flops.get(stage, 0) + spent


def flops_of(fn) -> int:
    """FLOPs of one call of `fn` (multiply-add = 2); on meta tensors attention is counted by its math formula."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()
