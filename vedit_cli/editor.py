"""The Editor contract every backend meets, and the lazy registry of backends by name."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from vedit_cli.config import ModelConfig, TrainedSchedule
from vedit_cli.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from vedit_cli.settings import ResolvedRun

BACKENDS: dict[str, str] = {
    "copy": "vedit_cli.backends.copy:CopyEditor",
    "movie": "vedit_cli.backends.movie.editor:MovieEditor",
    "eve": "vedit_cli.backends.eve.editor:EveEditor",
    "svdiff": "vedit_cli.backends.svdiff.editor:SvdiffEditor",
}


class Editor(ABC):
    """Edits frames given as float tensors [T, 3, H, W] in [-1, 1] at the processing size.

    The runner calls `prepare(prompt)` once per clip, `edit(frames)` with windows of `window_size` frames that
    overlap by `overlap`, then `flush()`. A streaming editor may hold back up to `latency` frames: `edit` then
    returns fewer frames than it got, and `flush` returns the rest. Frames out == frames in over a whole clip.
    """

    window_size: int = 1
    overlap: int = 0
    latency: int = 0
    size_multiple: int = 8  # H and W given to `edit` are multiples of this
    needs_prompt: bool = True
    needs_weights: bool = True  # False: no checkpoints (copy backend), so nothing to resolve or download
    resizes: bool = True  # False: the runner hands frames at the source size (copy backend: bit-exact path)
    description: str = ""  # one line the CLI shows, e.g. "movie teacher, 10 steps x 3 passes, full VAE"

    @abstractmethod
    def prepare(self, prompt: str) -> None:
        """Encode the prompt and set per-clip state; called once before the first `edit` of a clip."""

    @abstractmethod
    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        """Edit one window of frames; returns the edited frames that are ready, in order."""

    def seek(self, frame_index: int) -> None:
        """Told, just before `edit`, the clip index of that window's first frame; editors that need it override."""

    def flush(self) -> torch.Tensor | None:
        """Return the frames still held back at the end of a clip (None when there are none)."""
        return None

    def reset(self) -> None:
        """Forget per-clip state (memories, anchors, noise) before the next clip."""

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        """Modules whose forward calls make up each benchmark stage: keys among
        "text_encoder", "encode", "unet", "decode" (and backend extras such as "controlnet")."""
        return {}

    @classmethod
    def resolve_mode(cls, config: ModelConfig, weights_dir: "Path | None") -> tuple[str | None, TrainedSchedule | None]:
        """The mode the request runs in (backends with modes override) and, for a distilled model, its trained
        schedule; called once by settings.resolve_run, before any weights load."""
        return None, None

    @classmethod
    def from_run(cls, run: "ResolvedRun") -> "Editor":
        """Load the backend's weights for a resolved run."""
        raise NotImplementedError(f"{cls.__name__} has no loader")

    @classmethod
    def random_weights(cls, run: "ResolvedRun") -> "Editor":
        """The real-size architecture built from its configs with random weights (benchmarks: no download)."""
        raise NotImplementedError(f"{cls.__name__} has no random-weights constructor")


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def _backend_class(name: str) -> type[Editor]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(available_backends())}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def backend_class(name: str) -> type[Editor]:
    """The editor class registered under `name` (imports only that backend's module)."""
    return _backend_class(name)


def backend_needs_prompt(name: str) -> bool:
    """Whether the backend edits from an instruction (all but `copy`); imports only that backend's module."""
    return _backend_class(name).needs_prompt


def create_editor(run: "ResolvedRun") -> Editor:
    """Import the backend's module only now (diffusers is slow to import) and build its editor."""
    return _backend_class(run.backend).from_run(run)
