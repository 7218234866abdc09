"""`vedit evaluate`: the papers' metrics for one edited clip, a manifest of clips, or a TGVE submission folder;
--min/--max METRIC=VALUE turn it into a CI regression gate (exit 1 with one line per failing clip)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vedit_cli.commands.common import Device, JsonOutput, WeightsDir
from vedit_cli.config import EvaluateConfig

_EVALUATE = EvaluateConfig()


def evaluate(
    ctx: typer.Context,
    edited: Annotated[Optional[Path], typer.Argument(help="Edited clip: a video file or a folder of frames.", show_default=False)] = None,
    source: Annotated[Optional[Path], typer.Option(help="Source clip the edit was made from (warp error, CLIP direction).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Edit instruction; scored as the text only when --caption is absent.")] = None,
    caption: Annotated[Optional[str], typer.Option(help="Caption of the edited video (TGVE's edited prompt).")] = None,
    source_caption: Annotated[Optional[str], typer.Option(help="Caption of the source video (CLIP direction).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference (ground-truth) clip: PSNR and SSIM per frame.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="CSV or JSONL: edited[, source, prompt, caption, source_caption, name].")] = None,
    tgve: Annotated[Optional[Path], typer.Option(help="TGVE submission folder (<subset>/<video>/<type>/*.jpg or <video>/<type>.mp4).")] = None,
    tgve_prompts: Annotated[Optional[list[Path]], typer.Option(help="TGVE configs folder, prompts CSV and/or instruction JSON (repeatable).")] = None,
    tgve_source: Annotated[Optional[Path], typer.Option(help="Folder of the TGVE source videos (<video>.mp4 or the zip's layout).")] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Comma-separated metrics (default: every one whose inputs are given).")] = None,
    minimum: Annotated[Optional[list[str]], typer.Option("--min", help="METRIC=VALUE: fail (exit 1) when a clip scores below.")] = None,
    maximum: Annotated[Optional[list[str]], typer.Option("--max", help="METRIC=VALUE: fail (exit 1) when a clip scores above.")] = None,
    weights_dir: WeightsDir = None,
    device: Device = _EVALUATE.device,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per CLIP forward.")] = _EVALUATE.batch_size,
    frame_size: Annotated[int, typer.Option(min=32, help="Frames are resized to this square before CLIP (TGVE: 480).")] = _EVALUATE.frame_size,
    json_output: JsonOutput = False,
) -> None:
    """Score edited videos: warp error, flicker, CLIPFrame, CLIP text/direction, PickScore, PSNR/SSIM against a
    reference (conventions in --json)."""
    from vedit_cli.commands.common import print_json, quiet_libraries, stderr_console

    given = [name for name, value in (("EDITED", edited), ("--manifest", manifest), ("--tgve", tgve)) if value is not None]
    if len(given) != 1:  # a missing or extra argument: a usage error
        raise typer.BadParameter(f"give exactly one of EDITED, --manifest or --tgve (got {', '.join(given) or 'none'})",
                                 ctx=ctx, param_hint="'EDITED / --manifest / --tgve'")
    quiet_libraries()
    from vedit_cli.metrics.report import build_report, parse_thresholds

    config = EvaluateConfig(
        metrics=_parse_metric_list(metrics), frame_size=frame_size, batch_size=batch_size, device=device,
        weights_dir=weights_dir,
    ).validate()
    thresholds = parse_thresholds(minimum or [], maximum or [])
    clips = _clips_to_evaluate(edited, source, prompt, caption, source_caption, manifest, tgve, tgve_prompts, tgve_source,
                               reference)
    console = stderr_console(quiet=json_output)
    results = _evaluate_all(clips, config, console)
    report = build_report(results, thresholds)
    if json_output:
        print_json(report)
    else:
        _print_table(report)
    for line in report["errors"] + report["threshold_failures"]:
        stderr_console().print(f"vedit: evaluate: {line}", markup=False, highlight=False)
    if report["errors"] or report["threshold_failures"]:
        raise SystemExit(1)  # not typer.Exit: cli.main runs the app with standalone_mode=False


def _parse_metric_list(text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip() in ("", "all"):
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _clips_to_evaluate(edited, source, prompt, caption, source_caption, manifest, tgve, tgve_prompts, tgve_source,
                       reference=None):
    """Exactly one of EDITED, --manifest, --tgve chooses the clips."""
    from vedit_cli.errors import EvaluationError
    from vedit_cli.metrics.evaluation import ClipToEvaluate

    given = [name for name, value in (("EDITED", edited), ("--manifest", manifest), ("--tgve", tgve)) if value is not None]
    if len(given) != 1:
        raise EvaluationError(f"give exactly one of EDITED, --manifest or --tgve (got {', '.join(given) or 'none'})")
    if manifest is not None:
        from vedit_cli.metrics.manifest import read_manifest

        return read_manifest(manifest)
    if tgve is not None:
        from vedit_cli.metrics.tgve import read_tgve_prompts, tgve_clips

        if not tgve_prompts:
            raise EvaluationError("--tgve needs --tgve-prompts (the TGVE configs folder or tgve_prompts_from_configs.csv)")
        return tgve_clips(tgve, read_tgve_prompts(list(tgve_prompts)), tgve_source)
    return [ClipToEvaluate(edited, source, prompt, caption, source_caption, reference=reference)]


def _evaluate_all(clips, config: EvaluateConfig, console) -> list[dict]:
    """Each clip on its own: a bad file is reported and the batch goes on; missing weights asked for stop it."""
    from vedit_cli.commands.common import debug_enabled
    from vedit_cli.errors import VeditError, WeightsMissingError
    from vedit_cli.metrics.evaluation import MetricModels, evaluate

    models = MetricModels(config)
    results = []
    for number, clip in enumerate(clips, start=1):
        console.print(f"[{number}/{len(clips)}] {clip.name or clip.edited}", markup=False, highlight=False)
        try:
            results.append(evaluate(clip, config, models))
        except WeightsMissingError:
            raise
        except VeditError as error:
            if debug_enabled():
                raise
            results.append({"name": clip.name or Path(clip.edited).stem, "edited": str(clip.edited),
                            "error": str(error), "metrics": {}, "unavailable": {}})
    return results


def _print_table(report: dict) -> None:
    """A rich table: one row per clip, one column per metric, the mean last; conventions below."""
    from rich.console import Console
    from rich.table import Table

    from vedit_cli.metrics.names import METRIC_NAMES

    columns = [m for m in METRIC_NAMES if m in report["conventions"] and m in report["mean"]]
    table = Table(title="vedit evaluate")
    table.add_column("clip")
    for metric in columns:
        table.add_column(metric, justify="right")
    for result in report["clips"]:
        cells = [_cell(result, metric) for metric in columns]
        table.add_row(result["name"], *cells)
    if len(report["clips"]) > 1:
        table.add_row("mean", *[f"{report['mean'][m]['mean']:.5g}" for m in columns], style="bold")
    console = Console()
    console.print(table)
    for metric in columns:
        console.print(f"{metric}: {report['conventions'][metric]}", markup=False, highlight=False, style="dim")
    for why, metrics in _unavailable_by_reason(report["clips"]).items():
        console.print(f"not computed ({', '.join(metrics)}): {why}", markup=False, highlight=False, style="yellow")


def _unavailable_by_reason(results: list[dict]) -> dict[str, list[str]]:
    """Each distinct reason once, with the metrics it stops."""
    grouped: dict[str, list[str]] = {}
    for result in results:
        for metric, why in result.get("unavailable", {}).items():
            if metric not in grouped.setdefault(why, []):
                grouped[why].append(metric)
    return grouped


def _cell(result: dict, metric: str) -> str:
    if result.get("error"):
        return "error"
    value = result["metrics"].get(metric)
    return f"{value:.5g}" if value is not None else "n/a"


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
