"""Forward hooks on a backend's stage modules: see each stage's outermost calls, nested calls fold into their caller."""

from __future__ import annotations

from typing import Any, Callable

import torch

EnterHook = Callable[[str, tuple, dict], "tuple[tuple, dict] | None"]
ExitHook = Callable[[str, Any], Any]


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first tensor among a call's arguments: its batch size is the number of passes of that call."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


class StageHooks:
    """Calls `on_enter(stage, args, kwargs)` and `on_exit(stage, output)` around each outermost stage call.

    A stage module called from inside another stage module (nested) is attributed to the outer stage, so no work
    is counted twice. Post hooks run even when a call raises, so a failed call does not leave the depth behind. `on_enter` may return replacement (args, kwargs); `on_exit` may return a replacement output.
    """

    def __init__(self, stage_modules: dict[str, torch.nn.Module], on_enter: EnterHook, on_exit: ExitHook):
        if len({id(module) for module in stage_modules.values()}) < len(stage_modules):
            raise ValueError(f"one module serves two stages in {sorted(stage_modules)}: give each stage its own module")
        self.stage_modules = stage_modules
        self.on_enter = on_enter
        self.on_exit = on_exit
        self.depth = 0
        self.handles: list = []

    def __enter__(self) -> "StageHooks":
        for stage, module in self.stage_modules.items():
            self.handles.append(module.register_forward_pre_hook(self._pre_hook(stage), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post_hook(stage), with_kwargs=True, always_call=True))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.depth = 0

    def _pre_hook(self, stage: str):
        def hook(module, args, kwargs):
            self.depth += 1
            return self.on_enter(stage, args, kwargs) if self.depth == 1 else None

        return hook

    def _post_hook(self, stage: str):
        def hook(module, args, kwargs, output):
            self.depth -= 1
            return self.on_exit(stage, output) if self.depth == 0 else None

        return hook
