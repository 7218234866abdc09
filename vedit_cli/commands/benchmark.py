"""`vedit benchmark`: FLOPs, latency, frames/s and memory per backend, beside the diffusers reference recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vedit_cli.commands.common import Device, Dtype, JsonOutput, WeightsDir
from vedit_cli.config import MOVIE_MODES, BenchmarkConfig
from vedit_cli.options import BACKEND_NAMES, MODEL_BACKENDS

_BENCH = BenchmarkConfig()
ROWS = MODEL_BACKENDS + tuple(f"movie:{mode}" for mode in MOVIE_MODES if mode != "auto")  # copy: nothing to measure


def _check_rows(rows: Optional[list[str]]) -> Optional[list[str]]:
    """--backend is one of ROWS (or a backend registered at run time, e.g. by a plugin or a test): a usage error."""
    if not rows:
        return rows
    from vedit_cli.editor import BACKENDS  # torch: only when rows are named, and the benchmark loads it anyway

    known = ROWS + tuple(name for name in BACKENDS if name not in BACKEND_NAMES)
    for row in rows:
        if row not in known:
            raise typer.BadParameter(f"{row!r} is not one of {', '.join(map(repr, known))}.")
    return rows


def benchmark(
    backend: Annotated[Optional[list[str]], typer.Option(callback=_check_rows, metavar="ROW", help=f"Row to measure, repeatable: {', '.join(ROWS)} (default: every available backend).", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option(min=64, max=4096, help="Frames are SIZE x SIZE pixels (default: 256 on CPU, 512 on GPU).", show_default=False)] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames per clip (text is encoded once per clip).")] = _BENCH.frames,
    repeats: Annotated[int, typer.Option(min=1, help="Timed clips after the warm-up (min/median/max over them).")] = _BENCH.repeats,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up frames per row.")] = _BENCH.warmup,
    device: Device = _BENCH.device,
    dtype: Dtype = _BENCH.dtype,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Real-size architectures with random weights: no download.")] = _BENCH.random_weights,
    flops_only: Annotated[bool, typer.Option("--flops-only", help="Count FLOPs on the meta device only: seconds, no timing.")] = _BENCH.flops_only,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="Add the diffusers InstructPix2Pix row (10 steps x 3 passes, full VAE).")] = _BENCH.reference,
    reference_steps: Annotated[int, typer.Option(min=1, help="Steps of the reference recipe (MoViE Table 1's base: 10).")] = _BENCH.reference_steps,
    prompt: Annotated[str, typer.Option(help="Instruction encoded once per clip.")] = _BENCH.prompt,
    weights_dir: WeightsDir = None,
    compare: Annotated[Optional[Path], typer.Option(help="A previous --json report: exit 1 when a row regressed.", show_default=False)] = None,
    threshold: Annotated[float, typer.Option(help="Relative change that --compare calls a regression.")] = _BENCH.threshold,
    json_output: JsonOutput = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Measure FLOPs, s/frame, frames/s and peak memory of each backend beside the InstructPix2Pix reference."""
    from vedit_cli.commands.common import quiet_libraries, stderr_console

    quiet_libraries()
    from vedit_cli.benchmark.compare import load_report
    from vedit_cli.benchmark.run import run_benchmark

    config = BenchmarkConfig(
        backends=tuple(backend or ()), size=size, frames=frames, repeats=repeats, warmup=warmup, device=device,
        dtype=dtype, random_weights=random_weights, flops_only=flops_only, reference=reference, reference_steps=reference_steps, prompt=prompt,
        threshold=threshold, weights_dir=weights_dir,
    ).validate()
    previous = load_report(compare) if compare else None  # a bad file fails before minutes of measuring
    console = stderr_console(quiet)
    report = run_benchmark(config, on_progress=lambda message: console.log(message))
    _show(report, json_output)
    if previous is not None:
        _check_regressions(previous, report, threshold, console)


def _show(report: dict, json_output: bool) -> None:
    from rich.console import Console

    from vedit_cli.benchmark.report import stage_table, summary_table
    from vedit_cli.commands.common import print_json

    if json_output:
        print_json(report)
        return
    console = Console()
    console.print(summary_table(report))
    console.print(stage_table(report))
    for row in report["skipped"]:
        console.print(f"skipped {row['name']}: {row['reason']}")


def _check_regressions(previous: dict, report: dict, threshold: float, console) -> None:
    """Raise (exit 1) listing every regression; say so when the two runs are not comparable."""
    from vedit_cli.benchmark.compare import BenchmarkRegressionError, comparable_settings, find_regressions
    from vedit_cli.errors import ConfigError

    differences = comparable_settings(previous, report)
    if differences:
        raise ConfigError(f"--compare: the runs differ ({'; '.join(differences)}); compare runs with the same settings")
    regressions = find_regressions(previous, report, threshold)
    if regressions:
        raise BenchmarkRegressionError(
            f"{len(regressions)} regression(s) beyond {threshold:.0%}: " + "; ".join(r.describe() for r in regressions))
    console.log(f"no regression beyond {threshold:.0%} against the previous report")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
