"""The benchmark orchestrator: build each row, time it, count its FLOPs, free it, then the next row."""

from __future__ import annotations

import gc
import platform
from typing import Callable

import torch

from vedit_cli.benchmark.measure import count_flops, make_clip, time_clip
from vedit_cli.benchmark.reference import REFERENCE_NAME
from vedit_cli.benchmark.report import report_payload, row_payload
from vedit_cli.benchmark.subjects import (Setup, build_reference, default_specs, parse_spec, resolve_setup,
                                          try_build_backend)
from vedit_cli.config import BenchmarkConfig

Progress = Callable[[str], None]


def run_benchmark(config: BenchmarkConfig, on_progress: Progress | None = None) -> dict:
    """Measure the reference row then each backend row, one at a time, in this process; returns the report dict."""
    say = on_progress or (lambda message: None)
    # 1. Resolve device, dtype and size once: every row runs the same clip
    setup = resolve_setup(config.validate())
    specs = list(config.backends) or default_specs()
    for spec in specs:
        parse_spec(spec)  # an unknown backend fails now, not after minutes of measuring the reference
    clip = make_clip(config.frames, setup.size, setup.size, setup.device, setup.dtype, config.seed)
    rows, skipped = [], []
    # 2. The reference recipe first: each backend's speed-up is read against it
    if config.reference:
        say(f"{REFERENCE_NAME}: building")
        rows.append(measure_row(REFERENCE_NAME, build_reference(config, setup), clip, config, setup, True, say))
    # 3. Each backend: asked for explicitly (errors raise) or every available one (errors skip the row)
    explicit = bool(config.backends)
    for spec in specs:
        say(f"{spec}: building")
        editor, run, reason = try_build_backend(spec, config, setup, explicit)
        if editor is None:
            skipped.append({"name": spec, "reason": reason})
            continue
        row = measure_row(spec, editor, clip, config, setup, False, say)
        rows.append({**row, "resolved": run.as_dict()})
        del editor  # free this row's weights before the next one is built
    return report_payload(settings_payload(config, setup), rows, skipped)


def measure_row(name: str, editor, clip, config: BenchmarkConfig, setup: Setup, is_reference: bool,
                say: Progress) -> dict:
    """Time the row on real weights (unless --flops-only), then count its FLOPs on meta; frees its weights."""
    stages = editor.stage_modules()
    params = {stage: sum(p.numel() for p in module.parameters()) for stage, module in stages.items()}
    times = None
    if not config.flops_only:
        say(f"{name}: timing {config.repeats} x {config.frames} frames after {config.warmup} warm-up frame(s)")
        times = time_clip(editor, clip, config.prompt, config.repeats, min(config.warmup, config.frames), setup.device,
                          on_progress=lambda done, total: say(f"{name}: repeat {done}/{total} done"))
    say(f"{name}: counting FLOPs")
    flops = count_flops(editor, clip, config.prompt, shape_only=True)
    row = row_payload(name, editor.description or name, is_reference, params, flops, times, config.frames)
    del editor, stages
    gc.collect()
    if setup.device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def settings_payload(config: BenchmarkConfig, setup: Setup) -> dict:
    """What the numbers depend on: sizes, counts, device, versions, machine."""
    import diffusers

    return {
        "size": setup.size, "height": setup.size, "width": setup.size, "frames": config.frames,
        "repeats": config.repeats, "warmup": min(config.warmup, config.frames), "device": setup.device.type,
        "device_name": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": setup.hardware.dtype_name, "dtype_reason": setup.hardware.dtype_reason,
        "random_weights": config.random_weights,
        "flops_only": config.flops_only, "reference_steps": config.reference_steps, "prompt": config.prompt,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
        "flop_counting": "torch.utils.flop_counter on meta, math attention; multiply-add = 2",
    }
