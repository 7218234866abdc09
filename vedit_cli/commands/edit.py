"""`vedit edit`: one clip, several, a folder, or a manifest; each clip fails on its own, the batch goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vedit_cli.config import BACKEND_GUIDANCE_SCALE, DEFAULT_GUIDANCE_SCALE, EditConfig, EncodeConfig, ModelConfig

_MODEL = ModelConfig()
_ENCODE = EncodeConfig()
_EDIT = EditConfig()
_GUIDANCE_HELP = "Text guidance scale (default " + "; ".join(
    [str(DEFAULT_GUIDANCE_SCALE)] + [f"{name} {value}" for name, value in BACKEND_GUIDANCE_SCALE.items()]) + ")."


def edit(
    arguments: Annotated[list[str], typer.Argument(help="Video files or folders, then the instruction.", show_default=False, metavar="INPUT... PROMPT")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (one clip only).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Folder for outputs of many clips; mirrors input folders.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="CSV or JSONL with columns input, prompt[, output].")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="The instruction, when every argument is an input.")] = None,
    backend: Annotated[str, typer.Option(help="copy, movie, eve or svdiff.")] = _MODEL.backend,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the backend's own).")] = None,
    guidance_scale: Annotated[Optional[float], typer.Option(help=_GUIDANCE_HELP)] = None,
    image_guidance_scale: Annotated[float, typer.Option(help="Image guidance scale.")] = _MODEL.image_guidance_scale,
    seed: Annotated[int, typer.Option(help="Random seed (one noise tensor per clip).")] = _MODEL.seed,
    size: Annotated[int, typer.Option(help="Short side of the processing size, in pixels.")] = _MODEL.size,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = _MODEL.device,
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16.")] = _MODEL.dtype,
    vae: Annotated[str, typer.Option(help="movie autoencoder: auto, full or tiny (TAESD).")] = _MODEL.vae,
    movie_mode: Annotated[str, typer.Option(help="movie: auto (student if its weights exist), teacher, student.")] = _MODEL.movie_mode,
    anchor: Annotated[bool, typer.Option("--anchor/--no-anchor", help="movie: attend to an anchor frame against flicker.")] = _MODEL.anchor,
    keyframe_interval: Annotated[int, typer.Option(help="movie anchor: new anchor every N frames (0: first frame).")] = _MODEL.keyframe_interval,
    caption: Annotated[Optional[str], typer.Option(help="eve: caption of the edited video (default: the instruction).")] = None,
    controlnet_scale: Annotated[float, typer.Option(help="eve: edit-adapter strength.")] = _MODEL.controlnet_scale,
    lora_scale: Annotated[float, typer.Option(help="eve: alignment LoRA strength.")] = _MODEL.lora_scale,
    window: Annotated[int, typer.Option(help="eve: frames per temporal window.")] = _MODEL.window,
    overlap: Annotated[int, typer.Option(help="eve: frames shared by neighbouring windows.")] = _MODEL.overlap,
    chunk_windows: Annotated[int, typer.Option(help="eve: windows denoised together, latents blended every step.")] = _MODEL.chunk_windows,
    strength: Annotated[float, typer.Option(help="svdiff: how far LCM inversion noises each frame, in (0, 1].")] = _MODEL.strength,
    weights_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint folder.", envvar="VEDIT_WEIGHTS")] = None,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download missing weights.", envvar="VEDIT_ALLOW_DOWNLOAD")] = _MODEL.allow_download,
    allow_unsafe_weights: Annotated[bool, typer.Option(help="Also load pickle (.bin/.ckpt) checkpoints: only from sources you trust.")] = _MODEL.allow_unsafe_weights,
    codec: Annotated[str, typer.Option(help="Video encoder: libx264, libx265 or libvpx-vp9.")] = _ENCODE.codec,
    crf: Annotated[int, typer.Option(help="Encoder quality (lower is better).")] = _ENCODE.crf,
    preset: Annotated[str, typer.Option(help="Encoder speed preset.")] = _ENCODE.preset,
    keep_odd_size: Annotated[bool, typer.Option(help="Keep an odd width/height exactly, in 4:4:4 (many players refuse it); default: crop one row/column, 4:2:0.")] = _ENCODE.keep_odd_size,
    output_size: Annotated[str, typer.Option(help="source (the input's display size) or processing.")] = _EDIT.output_size,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (default: skip them, so reruns resume).")] = _EDIT.overwrite,
    evaluate: Annotated[bool, typer.Option(help="Compute offline temporal metrics of each output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only errors and the summary.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")] = False,
) -> None:
    """Edit videos from a text instruction: vedit edit in.mp4 "make it Van Gogh"."""
    from vedit_cli.commands.common import debug_enabled, quiet_libraries

    quiet_libraries()
    from vedit_cli.editing.jobs import plan_jobs, split_arguments
    from vedit_cli.commands.edit_report import RichObserver, report_summary
    from vedit_cli.editing.batch import run_batch

    inputs, the_prompt = split_arguments(list(arguments or []), prompt, manifest)
    model = ModelConfig(
        backend=backend, steps=steps, guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
        seed=seed, size=size, device=device, dtype=dtype, vae=vae, movie_mode=movie_mode, anchor=anchor,
        keyframe_interval=keyframe_interval, caption=caption, controlnet_scale=controlnet_scale,
        lora_scale=lora_scale, window=window, overlap=overlap, chunk_windows=chunk_windows, strength=strength, weights_dir=weights_dir, allow_download=download,
        allow_unsafe_weights=allow_unsafe_weights,
    )
    config = EditConfig(
        model=model, encode=EncodeConfig(codec=codec, crf=crf, preset=preset, keep_odd_size=keep_odd_size), output_size=output_size,
        overwrite=overwrite,
    ).validate()
    jobs = plan_jobs(inputs, the_prompt, output, output_dir, manifest)
    observer = RichObserver(quiet=quiet or json_output)
    try:
        results = run_batch(jobs, config, observer, evaluate=evaluate, debug=debug_enabled())
    finally:
        observer.close()
    failed = report_summary(results, json_output=json_output, quiet=quiet)
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)
