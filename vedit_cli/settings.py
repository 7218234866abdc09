"""Settings resolved once, at the edge: what the user asked for (ModelConfig) -> what runs (ResolvedRun).

`vedit edit`, `vedit benchmark` and `vedit evaluate` build their runs here; backends receive a ResolvedRun and
never resolve anything themselves. Hardware (device, dtype, threads) is resolved in the process that loads the
model (on a cluster: the worker), everything else on the command line's side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vedit_cli.config import ModelConfig, TrainedSchedule, sampling_defaults
from vedit_cli.hardware import Hardware, resolve_hardware


@dataclass(frozen=True)
class ResolvedRun:
    """A backend's settings with every default filled in: what will run, and on what."""

    model: ModelConfig  # the request, with backend defaults filled in (steps, guidance_scale never None)
    mode: str | None  # movie: "teacher" or "student"; None for backends without modes
    spacing: str | None  # timestep spacing (None: the checkpoint's scheduler config)
    trained: TrainedSchedule | None  # how a distilled model was trained to be sampled (None: not a distilled model)
    weights_dir: Path | None  # None for backends without checkpoints
    hardware: Hardware

    @property
    def trained_steps(self) -> int | None:
        return self.trained.steps if self.trained else None

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def steps(self) -> int | None:
        return self.model.steps

    @property
    def device(self) -> torch.device:
        return self.hardware.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hardware.dtype

    @property
    def off_recipe(self) -> bool:
        """True when --steps differs from the step count a distilled model was trained for."""
        return self.trained_steps is not None and self.model.steps != self.trained_steps

    def as_dict(self) -> dict:
        """The resolved settings, as `--json` and the benchmark report them."""
        model = self.model
        settings = {"backend": model.backend, "mode": self.mode, "steps": model.steps,
                    "guidance_scale": model.guidance_scale, "spacing": self.spacing,
                    "weights_dir": str(self.weights_dir) if self.weights_dir else None}
        if self.trained_steps is not None:
            settings["trained_steps"] = self.trained_steps
        return {**settings, **self.hardware.as_dict()}

    def summary(self) -> str:
        """One line: backend and mode, steps, guidance, device and dtype with the reason."""
        model = self.model
        name = f"{model.backend} {self.mode}" if self.mode else model.backend
        if model.steps is None:
            return f"{name} on {self.hardware.describe()}"
        recipe = " (off-recipe: trained for %d)" % self.trained_steps if self.off_recipe else ""
        return (f"{name}: {model.steps} step{'s' if model.steps != 1 else ''}{recipe}, guidance "
                f"{model.guidance_scale:g}, on {self.hardware.describe()}")


def resolve_run(model: ModelConfig, hardware: Hardware | None = None, random_weights: bool = False) -> ResolvedRun:
    """Fill in the backend's defaults (mode, steps, guidance, spacing, weights folder) and the hardware;
    `random_weights` (benchmarks) reads no weights folder."""
    from vedit_cli.editor import backend_class
    from vedit_cli.weights.registry import resolve_weights_dir

    model = model.validate()
    editor_class = backend_class(model.backend)
    needs_folder = editor_class.needs_weights and not random_weights
    weights_dir = resolve_weights_dir(model.weights_dir) if needs_folder else None
    mode, trained = editor_class.resolve_mode(model, weights_dir)
    defaults = sampling_defaults(model.backend, mode)
    if defaults is not None:
        steps = model.steps or (trained.steps if trained else defaults.steps)
        spacing = model.timestep_spacing or (trained.spacing if trained else defaults.spacing)
        guidance = defaults.guidance_scale if model.guidance_scale is None else model.guidance_scale
        model = replace(model, steps=steps, guidance_scale=guidance)
    else:
        spacing = None
    hardware = hardware or resolve_hardware(model.device, model.dtype)
    return ResolvedRun(model=model, mode=mode, spacing=spacing, trained=trained,
                       weights_dir=weights_dir, hardware=hardware)

