"""`vedit edit`: one clip, several, a folder, or a manifest; each clip fails on its own, the batch goes on.

Options are grouped into help panels; choices list their registries; an option the chosen backend does not use is
refused before any clip starts (the table is vedit_cli/options.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from vedit_cli.commands.common import (
    PANEL_ENCODING, PANEL_EVE, PANEL_IO, PANEL_MODEL, PANEL_MOVIE, PANEL_SVDIFF, AllowDownload, Device, Dtype,
    JsonOutput, Quiet, WeightsDir,
)
from vedit_cli.commands.edit_ray import ClipTimeout, GpusPerWorker, MaxRetries, RayAddress, Workers, check_ray_options
from vedit_cli.config import (
    BACKEND_DEFAULTS, MOVIE_MODES, OUTPUT_SIZES, SVDIFF_INITS, TIMESTEP_SPACINGS, VAE_CHOICES, EditConfig, EncodeConfig,
    ModelConfig,
)
from vedit_cli.io.encode import PRESETS, SUPPORTED_CODECS
from vedit_cli.options import BACKEND_NAMES

_MODEL = ModelConfig()
_ENCODE = EncodeConfig()
_EDIT = EditConfig()
_GUIDANCE_HELP = "Text guidance scale (default: " + ", ".join(
    f"{name} {row.guidance_scale:g}" for name, row in BACKEND_DEFAULTS.items()) + ")."
_STEPS_HELP = "Denoising steps (default: " + ", ".join(f"{name} {row.steps}" for name, row in BACKEND_DEFAULTS.items()) + ")."


def _above_zero(value: float) -> float:
    if value <= 0:
        raise typer.BadParameter(f"{value:g} is not in the range 0<x<=1.")
    return value


def edit(
    ctx: typer.Context,
    arguments: Annotated[list[str], typer.Argument(help="Video files or folders, then the instruction.", show_default=False, metavar="INPUT... PROMPT")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (one clip only).", rich_help_panel=PANEL_IO)] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Folder for outputs of many clips; mirrors input folders.", rich_help_panel=PANEL_IO)] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="CSV or JSONL with columns input, prompt[, output].", rich_help_panel=PANEL_IO)] = None,
    prompt: Annotated[Optional[str], typer.Option(help="The instruction, when every argument is an input.", rich_help_panel=PANEL_IO)] = None,
    output_size: Annotated[Literal[OUTPUT_SIZES], typer.Option(help="source (the input's display size) or processing (the model's size).", rich_help_panel=PANEL_IO)] = _EDIT.output_size,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (default: skip them, so reruns resume).", rich_help_panel=PANEL_IO)] = _EDIT.overwrite,
    backend: Annotated[Literal[BACKEND_NAMES], typer.Option(help="copy (no model: re-encodes), movie, eve or svdiff.", rich_help_panel=PANEL_MODEL)] = _MODEL.backend,
    steps: Annotated[Optional[int], typer.Option(min=1, help=_STEPS_HELP, show_default=False, rich_help_panel=PANEL_MODEL)] = None,
    guidance_scale: Annotated[Optional[float], typer.Option(min=0, help=_GUIDANCE_HELP, show_default=False, rich_help_panel=PANEL_MODEL)] = None,
    seed: Annotated[int, typer.Option(help="Random seed (one noise tensor per clip).", rich_help_panel=PANEL_MODEL)] = _MODEL.seed,
    size: Annotated[int, typer.Option(min=64, max=4096, help="Short side of the processing size, in pixels.", rich_help_panel=PANEL_MODEL)] = _MODEL.size,
    device: Device = _MODEL.device,
    dtype: Dtype = _MODEL.dtype,
    timestep_spacing: Annotated[Optional[Literal[TIMESTEP_SPACINGS]], typer.Option(help="Where the steps sit on the training schedule: trailing starts from pure noise (default: movie teacher as its checkpoint, student as trained, eve trailing).", show_default=False, rich_help_panel=PANEL_MODEL)] = None,
    image_guidance_scale: Annotated[float, typer.Option(min=0, help="Image guidance scale.", rich_help_panel=PANEL_MOVIE)] = _MODEL.image_guidance_scale,
    movie_mode: Annotated[Literal[MOVIE_MODES], typer.Option(help="auto (student if its weights exist), teacher or student.", rich_help_panel=PANEL_MOVIE)] = _MODEL.movie_mode,
    vae: Annotated[Literal[VAE_CHOICES], typer.Option(help="Autoencoder: auto (teacher: full, student: tiny), full or tiny (TAESD).", rich_help_panel=PANEL_MOVIE)] = _MODEL.vae,
    anchor: Annotated[bool, typer.Option("--anchor/--no-anchor", help="Attend to an anchor frame against flicker.", rich_help_panel=PANEL_MOVIE)] = _MODEL.anchor,
    keyframe_interval: Annotated[int, typer.Option(min=0, help="With --anchor: a new anchor every N frames (0: the first frame).", rich_help_panel=PANEL_MOVIE)] = _MODEL.keyframe_interval,
    caption: Annotated[Optional[str], typer.Option(help="Caption of the edited video (default: the instruction).", show_default=False, rich_help_panel=PANEL_EVE)] = None,
    controlnet_scale: Annotated[float, typer.Option(help="Edit-adapter strength.", rich_help_panel=PANEL_EVE)] = _MODEL.controlnet_scale,
    lora_scale: Annotated[float, typer.Option(help="LoRA strength: eve's alignment LoRA, svdiff's LCM-LoRA (0: the base without it).", rich_help_panel=PANEL_EVE)] = _MODEL.lora_scale,
    window: Annotated[int, typer.Option(min=1, help="Frames per temporal window.", rich_help_panel=PANEL_EVE)] = _MODEL.window,
    overlap: Annotated[int, typer.Option(min=0, help="Frames shared by neighbouring windows (< --window).", rich_help_panel=PANEL_EVE)] = _MODEL.overlap,
    chunk_windows: Annotated[int, typer.Option(min=1, help="Windows denoised together, latents blended every step.", rich_help_panel=PANEL_EVE)] = _MODEL.chunk_windows,
    strength: Annotated[float, typer.Option(min=0, max=1, callback=_above_zero, help="Start timestep as a fraction of the schedule, in (0, 1].", rich_help_panel=PANEL_SVDIFF)] = _MODEL.strength,
    svdiff_init: Annotated[Literal[SVDIFF_INITS], typer.Option(help="How frames reach the start timestep: inversion (DDIM, as the paper) or noise (img2img).", rich_help_panel=PANEL_SVDIFF)] = _MODEL.svdiff_init,
    weights_dir: WeightsDir = None,
    allow_download: AllowDownload = _MODEL.allow_download,
    codec: Annotated[Literal[SUPPORTED_CODECS], typer.Option(help="Video encoder.", rich_help_panel=PANEL_ENCODING)] = _ENCODE.codec,
    crf: Annotated[int, typer.Option(min=0, max=63, help="Encoder quality (lower is better).", rich_help_panel=PANEL_ENCODING)] = _ENCODE.crf,
    preset: Annotated[Literal[PRESETS], typer.Option(help="Encoder speed preset (libvpx-vp9: mapped onto -cpu-used).", rich_help_panel=PANEL_ENCODING)] = _ENCODE.preset,
    keep_odd_size: Annotated[bool, typer.Option(help="Keep an odd width/height exactly, in 4:4:4 (many players refuse it); default: crop one row/column, 4:2:0.", rich_help_panel=PANEL_ENCODING)] = _ENCODE.keep_odd_size,
    evaluate: Annotated[bool, typer.Option(help="Compute offline temporal metrics of each output.")] = False,
    ray: RayAddress = None,
    workers: Workers = None,
    gpus_per_worker: GpusPerWorker = None,
    max_retries: MaxRetries = 2,
    clip_timeout: ClipTimeout = None,
    quiet: Quiet = False,
    json_output: JsonOutput = False,
) -> None:
    """Edit videos from a text instruction: vedit edit in.mp4 "make it Van Gogh"."""
    from vedit_cli.commands.common import debug_enabled, given_on_command_line, quiet_libraries
    from vedit_cli.options import check_options

    check_options(backend, given_on_command_line(ctx))  # before any import, load or clip
    quiet_libraries()
    from vedit_cli.commands.edit_report import RichObserver, report_summary
    from vedit_cli.editing.batch import run_batch
    from vedit_cli.editing.jobs import plan_jobs
    from vedit_cli.settings import resolve_run

    inputs, the_prompt = _split(ctx, arguments, prompt, manifest)
    model = ModelConfig(
        backend=backend, steps=steps, guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
        seed=seed, size=size, device=device, dtype=dtype, vae=vae, movie_mode=movie_mode, anchor=anchor,
        keyframe_interval=keyframe_interval, caption=caption, controlnet_scale=controlnet_scale,
        lora_scale=lora_scale, window=window, overlap=overlap, chunk_windows=chunk_windows, strength=strength,
        svdiff_init=svdiff_init, timestep_spacing=timestep_spacing, weights_dir=weights_dir,
        allow_download=allow_download,
    )
    encode = EncodeConfig(codec=codec, crf=crf, preset=preset, keep_odd_size=keep_odd_size)
    config = EditConfig(model=model, encode=encode, output_size=output_size, overwrite=overwrite).validate()
    jobs = plan_jobs(inputs, the_prompt, output, output_dir, manifest)
    check_ray_options(ray, given_on_command_line(ctx))
    if ray is not None:  # the same jobs on Ray actors; hardware is resolved on each worker, not here
        from vedit_cli.commands.edit_ray import edit_on_ray

        return edit_on_ray(jobs, config, ray, workers, gpus_per_worker, max_retries, clip_timeout, evaluate=evaluate,
                           quiet=quiet, json_output=json_output, debug=debug_enabled())
    run = resolve_run(config.model)  # once, before any clip: defaults, weights folder, device, dtype
    config = replace(config, model=run.model)
    observer = RichObserver(quiet=quiet or json_output)
    try:
        results = run_batch(jobs, config, run, observer, evaluate=evaluate, debug=debug_enabled())
    finally:
        observer.close()
    failed = report_summary(results, run.as_dict(), json_output=json_output, quiet=quiet)
    if failed:
        raise typer.Exit(code=1)


def _split(ctx: typer.Context, arguments: list[str] | None, prompt: str | None, manifest: Path | None):
    """Inputs and the prompt from the arguments; a missing one is a usage error (usage line, exit 2)."""
    from vedit_cli.editing.jobs import split_arguments
    from vedit_cli.errors import ConfigError

    try:
        return split_arguments(list(arguments or []), prompt, manifest)
    except ConfigError as error:
        raise typer.BadParameter(str(error), ctx=ctx, param_hint="'INPUT... PROMPT'") from None


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)
