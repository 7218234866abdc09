"""What a benchmark measures: the reference pipeline and each backend, built on the resolved device and dtype."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace

import torch

from vedit_cli.editor import BACKENDS, Editor
from vedit_cli.config import BACKEND_DEFAULTS, BenchmarkConfig, ModelConfig
from vedit_cli.errors import ConfigError, VeditError
from vedit_cli.hardware import Hardware, resolve_hardware
from vedit_cli.settings import ResolvedRun, resolve_run

NOT_BENCHMARKED = ("copy",)  # no model: nothing to measure
DEFAULT_MODES = {"movie": "student"}  # the row the papers compare: MoViE's one-step student
CPU_SIZE, GPU_SIZE = 256, 512


@dataclass(frozen=True)
class Setup:
    """The resolved settings every row shares."""

    hardware: Hardware
    size: int

    @property
    def device(self) -> torch.device:
        return self.hardware.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hardware.dtype


def resolve_setup(config: BenchmarkConfig) -> Setup:
    """Device and dtype resolved by the one rule `vedit edit` uses (vedit_cli.hardware); FLOPs count on the CPU."""
    hardware = resolve_hardware("cpu" if config.flops_only else config.device, config.dtype)
    size = config.size or (GPU_SIZE if hardware.device.type == "cuda" else CPU_SIZE)
    return Setup(hardware=hardware, size=size)


def default_specs() -> list[str]:
    """Every registered backend with a model, in the mode the papers report."""
    names = [name for name in sorted(BACKENDS) if name not in NOT_BENCHMARKED]
    return [f"{name}:{DEFAULT_MODES[name]}" if name in DEFAULT_MODES else name for name in names]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`movie:student` -> ("movie", "student"); `svdiff` -> ("svdiff", None)."""
    name, _, mode = spec.partition(":")
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} in --backend {spec!r}; choose among {', '.join(sorted(BACKENDS))}")
    if mode and name != "movie":
        raise ConfigError(f"--backend {spec!r}: only movie has modes (movie:teacher, movie:student)")
    return name, mode or None


def model_config(spec: str, config: BenchmarkConfig, setup: Setup) -> ModelConfig:
    name, mode = parse_spec(spec)
    model = ModelConfig(backend=name, size=setup.size, device=config.device, dtype=config.dtype,
                        seed=config.seed, weights_dir=config.weights_dir)
    return replace(model, movie_mode=mode) if mode else model


def resolve_row(spec: str, config: BenchmarkConfig, setup: Setup) -> ResolvedRun:
    """The row's settings, resolved by `vedit edit`'s own resolver on the benchmark's hardware."""
    return resolve_run(model_config(spec, config, setup), hardware=setup.hardware,
                       random_weights=config.random_weights)


def build_backend(spec: str, config: BenchmarkConfig, setup: Setup) -> tuple[Editor, ResolvedRun]:
    """The backend's editor and its resolved settings: real-size random weights, or its downloaded weights
    (WeightsMissingError if absent)."""
    name, _ = parse_spec(spec)
    module_name, class_name = BACKENDS[name].split(":")
    try:
        editor_class = getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ConfigError(f"backend {name!r} is not part of this build of vedit yet") from None
    run = resolve_row(spec, config, setup)  # builds and validates the row's ModelConfig once
    if not config.random_weights:
        return editor_class.from_run(run), run
    try:
        return editor_class.random_weights(run), run
    except NotImplementedError as error:
        raise ConfigError(f"backend {name!r} cannot build random weights: {error}") from None


def build_reference(config: BenchmarkConfig, setup: Setup):
    """The stock InstructPix2Pix pipeline recipe; with --flops-only its heavy modules are built on meta."""
    from vedit_cli.benchmark.reference import ReferenceEditor, downloaded_pipeline, random_weights_pipeline
    from vedit_cli.weights.registry import resolve_weights_dir

    if config.random_weights:
        pipeline = random_weights_pipeline(setup.dtype, meta_stages=config.flops_only)
    else:
        pipeline = downloaded_pipeline(resolve_weights_dir(config.weights_dir), setup.dtype)
    if not config.flops_only:
        pipeline = pipeline.to(setup.device)
    return ReferenceEditor(pipeline, setup.device, config.reference_steps,
                           BACKEND_DEFAULTS["movie:teacher"].guidance_scale, ModelConfig().image_guidance_scale,
                           config.seed)


def try_build_backend(spec: str, config: BenchmarkConfig, setup: Setup,
                      explicit: bool) -> tuple[Editor | None, ResolvedRun | None, str]:
    """Build a row's editor; a backend that cannot be built is skipped with its reason unless it was asked for."""
    try:
        return *build_backend(spec, config, setup), ""
    except VeditError as error:
        if explicit:
            raise
        return None, None, str(error)
