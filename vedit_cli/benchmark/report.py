"""Benchmark results as a JSON-ready dict (schema below) and as rich tables for people."""

from __future__ import annotations

from vedit_cli.benchmark.flops import OTHER
from vedit_cli.benchmark.measure import FlopResult, TimeResult
from vedit_cli.benchmark.timing import summarise

SCHEMA = "vedit-benchmark/1"
UNET_STAGE = "unet"
# MoViE (Table 1), TFLOPs per frame at 480x480: base InstructPix2Pix recipe, and the one-step student with TAESD.
# Its middle row (5.50: 10 steps x 1 pass + TAESD, with the paper's slimmer UNet) has no vedit counterpart.
PAPER_TFLOPS_480 = {"reference": 21.31, "movie:student": 0.76}


def row_payload(name: str, description: str, is_reference: bool, params: dict[str, int], flops: FlopResult,
                times: TimeResult | None, frames: int) -> dict:
    """One row: params per stage, FLOPs per clip (text) and per frame, timing and memory when measured."""
    per_frame = dict(flops.per_frame.flops)
    per_frame_total = sum(per_frame.values())
    per_clip_total = sum(flops.per_clip.flops.values())
    return {
        "name": name,
        "description": description,
        "reference": is_reference,
        "params": {**params, "total": sum(params.values())},
        "flops": {
            "per_clip": dict(flops.per_clip.flops),
            "per_clip_total": per_clip_total,
            "per_frame": per_frame,
            "per_frame_total": per_frame_total,
            "per_frame_with_text": per_frame_total + per_clip_total / frames,
            "unet_share": per_frame.get(UNET_STAGE, 0) / per_frame_total if per_frame_total else None,
        },
        "calls_per_clip": dict(flops.per_clip.calls),
        "calls_per_frame": dict(flops.per_frame.calls),
        "passes_per_frame": dict(flops.per_frame.passes),
        "time": _time_payload(times) if times else None,
        "memory": times.memory if times else None,
        "speedup_vs_reference": None,
        "flops_ratio_vs_reference": None,
    }


def _time_payload(times: TimeResult) -> dict:
    per_frame = summarise(times.per_frame)
    return {
        "per_frame_s": per_frame,
        "frames_per_second": 1.0 / per_frame["median"] if per_frame["median"] > 0 else None,
        "prepare_per_clip_s": summarise(times.prepare_per_clip),
        "stages_per_frame_s": {stage: summarise(samples) for stage, samples in sorted(times.stages_per_frame.items())},
    }


def add_ratios(rows: list[dict]) -> None:
    """Speed-up (reference median s/frame over the row's) and FLOP ratio, against the reference row of this run."""
    reference = next((row for row in rows if row["reference"]), None)
    if reference is None:
        return
    for row in rows:
        if row["flops"]["per_frame_total"]:
            row["flops_ratio_vs_reference"] = reference["flops"]["per_frame_total"] / row["flops"]["per_frame_total"]
        if row["time"] and reference["time"]:
            row["speedup_vs_reference"] = reference["time"]["per_frame_s"]["median"] / row["time"]["per_frame_s"]["median"]


def report_payload(settings: dict, rows: list[dict], skipped: list[dict]) -> dict:
    add_ratios(rows)
    return {"schema": SCHEMA, "settings": settings, "rows": rows, "skipped": skipped}


def human_flops(count: float | None) -> str:
    if count is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.3f} {unit}"
    return f"{count:.0f}"


def human_bytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**30:.2f} GiB"


def _seconds(summary: dict | None) -> str:
    if not summary:
        return "-"
    return f"{summary['median']:.3f} ({summary['min']:.3f}-{summary['max']:.3f})"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def summary_table(report: dict):
    """One line per row: what a user compares when picking a backend."""
    from rich.table import Table

    size = report["settings"]["size"]
    table = Table(title=f"vedit benchmark: {size}x{size}, {report['settings']['frames']} frames, "
                        f"{report['settings']['device']} {report['settings']['dtype']}")
    for column in ("row", "params", "FLOPs/frame", "UNet share", "UNet passes/frame", "text FLOPs/clip",
                   "s/frame median (min-max)", "frames/s", "speed-up", "FLOP ratio", "peak host", "peak GPU"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in report["rows"]:
        table.add_row(*_summary_cells(row))
    if size == 480:
        table.caption = "MoViE Table 1 at 480x480 (TFLOPs/frame): " + ", ".join(
            f"{name} {value}" for name, value in PAPER_TFLOPS_480.items()) + "; 10 steps x 1 pass + TAESD: 5.50"
    return table


def _summary_cells(row: dict) -> list[str]:
    flops, time, memory = row["flops"], row["time"], row["memory"] or {}
    share = flops["unet_share"]
    return [
        row["name"], f"{row['params']['total'] / 1e6:.1f} M", human_flops(flops["per_frame_total"]),
        "-" if share is None else f"{share:.0%}", f"{row['passes_per_frame'].get(UNET_STAGE, 0):g}",
        human_flops(flops["per_clip_total"]), _seconds(time and time["per_frame_s"]),
        "-" if not time or not time["frames_per_second"] else f"{time['frames_per_second']:.3f}",
        _ratio(row["speedup_vs_reference"]), _ratio(row["flops_ratio_vs_reference"]),
        human_bytes(memory.get("host_peak_rss_bytes")), human_bytes(memory.get("gpu_peak_bytes")),
    ]


def stage_table(report: dict):
    """FLOPs, calls, passes and seconds per frame of every stage (text encoding per clip) of every row."""
    from rich.table import Table

    table = Table(title="per stage (text_encoder: per clip; the rest: per frame)")
    for column in ("row", "stage", "params", "FLOPs", "calls", "passes", "seconds median (min-max)"):
        table.add_column(column, justify="left" if column in ("row", "stage") else "right")
    for row in report["rows"]:
        for cells in _stage_cells(row):
            table.add_row(*cells)
    return table


def _stage_cells(row: dict) -> list[list[str]]:
    """Per-clip stages first (text), then per-frame stages; "other" only when something was counted there."""
    timing = row["time"] or {}
    per_clip = [(stage, count, True) for stage, count in row["flops"]["per_clip"].items() if stage != OTHER]
    per_frame = [(stage, count, False) for stage, count in row["flops"]["per_frame"].items()]
    lines = []
    for stage, count, once_per_clip in per_clip + per_frame:
        if stage == OTHER and not count:
            continue
        seconds = timing.get("prepare_per_clip_s") if once_per_clip else timing.get("stages_per_frame_s", {}).get(stage)
        calls = row["calls_per_clip" if once_per_clip else "calls_per_frame"].get(stage)
        passes = None if once_per_clip else row["passes_per_frame"].get(stage)
        params = row["params"].get(stage)
        lines.append([row["name"], stage + (" (clip)" if once_per_clip else ""),
                      "-" if params is None else f"{params / 1e6:.1f} M", human_flops(count),
                      "-" if calls is None else f"{calls:g}", "-" if passes is None else f"{passes:g}",
                      _seconds(seconds)])
    return lines
