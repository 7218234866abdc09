"""Score every backend/mode that has weights in a tiny world against the procedural edits' ground truth.

Each clip is downscaled (centre square) to the world's size and written once; every edit applied to its decoded
frames is the ground truth; every instruction is run through the real `vedit edit --manifest` path, one run per
backend/mode. Identity (the copy backend: the source through the same decode/encode path) and the same pipeline
with its untrained UNet are control rows.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vedit_cli.tinyworld.edits import EDITS, apply_uint8
from vedit_cli.tinyworld.students import score_rows as student_rows

RANDOM_SUBDIR = "random"  # <world>/random: the same pipeline folders with the untrained UNet
TEACHER_ROW = "movie teacher"  # the row every later row is also compared with (PSNR to the teacher's output)


@dataclass(frozen=True)
class Row:
    label: str
    backend: str
    weights_dir: Path | None
    args: tuple[str, ...] = ()
    passes_per_frame: int = 0
    per_instruction: bool = True  # False: the output does not depend on the instruction (identity)
    prompt: str = "instruction"  # what the manifest's prompt is: the edit's "instruction" or its output "caption"
    caption_flag: bool = False  # True: one run per edit with --caption (eve: backbone caption + instruction)


# The movie rows' guidance (s_T, s_I), tuned once on the world's validation clip (README "Tiny world"): the best of
# 7.5/1.5 (InstructPix2Pix's defaults), 7.5/3, 5/2.5, 4/2 and 3/2 by PSNR among those with the top edit accuracy.
WORLD_GUIDANCE_SCALE = 4.0
WORLD_IMAGE_GUIDANCE_SCALE = 2.0


@dataclass(frozen=True)
class Options:
    size: int = 64
    max_frames: int | None = 16
    steps: int = 10
    guidance_scale: float = WORLD_GUIDANCE_SCALE
    image_guidance_scale: float = WORLD_IMAGE_GUIDANCE_SCALE
    seed: int = 0
    threads: int = 2  # OMP_NUM_THREADS of each vedit edit run (1 on a busy machine: see scripts/tiny_world.py)
    # score only the rows whose label contains one of these or is one given as "=label" (identity always)
    only: tuple[str, ...] = ()


@dataclass
class Clip:
    name: str
    source: Path  # the downscaled clip every row edits
    frames: np.ndarray  # its decoded frames, uint8 [T, S, S, 3]
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # edit name -> ground truth frames


def movie_passes(steps: int, guidance_scale: float, image_guidance_scale: float) -> int:
    from vedit_cli.backends.movie.sampling import teacher_plan

    return steps * len(teacher_plan(guidance_scale, image_guidance_scale).passes)


def plan_rows(world: Path, options: Options) -> list[Row]:
    """Identity, then every backend/mode whose weights are in the world, then the random-weights controls."""
    guidance = ("--steps", str(options.steps), "--guidance-scale", str(options.guidance_scale),
                "--image-guidance-scale", str(options.image_guidance_scale))
    teacher = ("--movie-mode", "teacher", *guidance)
    passes = movie_passes(options.steps, options.guidance_scale, options.image_guidance_scale)
    rows = [Row("identity (source)", "copy", None, per_instruction=False)]
    world = Path(world)
    if (world / "instruct-pix2pix").is_dir():
        rows.append(Row("movie teacher", "movie", world, (*teacher, "--vae", "full"), passes))
        if (world / "taesd").is_dir():
            rows.append(Row("movie teacher, TAESD", "movie", world, (*teacher, "--vae", "tiny"), passes))
        one_step = ("--movie-mode", "teacher", "--steps", "1", "--timestep-spacing", "trailing", *guidance[2:])
        rows.append(Row("movie teacher, 1 step (trailing, undistilled)", "movie", world, (*one_step, "--vae", "full"),
                        movie_passes(1, options.guidance_scale, options.image_guidance_scale)))
    for folder, row in student_rows(world):
        rows.append(Row(row["label"], "movie", folder, ("--movie-mode", "student", *guidance[2:]), row["passes"]))
        if folder == world:  # the headline student with the teacher's autoencoder: what TAESD costs it
            rows.append(Row(row["label"].replace("movie student", "movie student, full VAE"), "movie", folder,
                            ("--movie-mode", "student", *guidance[2:], "--vae", "full"), row["passes"]))
    rows += sd_side_rows(world)
    if (world / RANDOM_SUBDIR / "instruct-pix2pix").is_dir():
        rows.append(Row("movie teacher, random weights", "movie", world / RANDOM_SUBDIR, (*teacher, "--vae", "full"),
                        passes))
    return rows


def sd_side_rows(world: Path) -> list[Row]:
    """svdiff (captioned img2img through the LCM-fused base, its defaults: 3 steps, CFG 1.5, strength 0.5, DDIM
    inversion), the same base without the LCM-LoRA, and eve plug-and-play (ControlNet + motion adapter, defaults)."""
    from vedit_cli.backends.svdiff.sampling import unet_passes
    from vedit_cli.config import BACKEND_DEFAULTS

    rows = []
    has = [name for name in ("sd15", "lcm-lora-sdv1-5", "controlnet-ip2p", "animatediff-motion-adapter", "taesd")
           if (world / name).is_dir()]
    svdiff = BACKEND_DEFAULTS["svdiff"]
    if {"sd15", "lcm-lora-sdv1-5", "taesd"} <= set(has):
        plain = no_memory_view(world)  # svdiff loads the memory whenever its folder is there
        passes = unet_passes(svdiff.steps, svdiff.guidance_scale > 1, "inversion")
        rows.append(Row("svdiff, no memory (LCM-LoRA, 3 steps)", "svdiff", plain, (), passes, prompt="caption"))
        if (world / "svdiff-memory").is_dir():
            rows.append(Row("svdiff, trained memory (LCM-LoRA, 3 steps)", "svdiff", world, (), passes,
                            prompt="caption"))
        rows.append(Row("svdiff base without LCM-LoRA (3 steps)", "svdiff", plain, ("--lora-scale", "0"), passes,
                        prompt="caption"))
    if {"sd15", "controlnet-ip2p", "animatediff-motion-adapter"} <= set(has):
        rows += eve_rows(world)
    return rows


def eve_rows(world: Path) -> list[Row]:
    """eve plug-and-play at its defaults (20 steps, CFG 7.5) and as the FDD student samples (k = 3 steps, one
    conditional pass), then every FDD LoRA in the world (the full run, the ablations) sampled that way."""
    from vedit_cli.config import BACKEND_DEFAULTS
    from vedit_cli.tinyworld.fdd import FddSize, VARIANTS, lora_folder, variant_view

    eve, k = BACKEND_DEFAULTS["eve"], FddSize().k_steps
    as_trained = ("--steps", str(k), "--guidance-scale", "1")
    off = ("--lora-scale", "0")  # what the stack does without the world's LoRA (none is loaded without its folder)
    rows = [Row("eve plug-and-play (ControlNet + motion adapter)", "eve", world, off,
                eve.steps * (2 if eve.guidance_scale > 1 else 1), caption_flag=True),
            Row(f"eve plug-and-play ({k} steps, CFG 1)", "eve", world, (*off, *as_trained), k, caption_flag=True)]
    labels = {"fdd": "eve + FDD LoRA", "sds-only": "eve + LoRA, SDS only", "adversarial-only":
              "eve + LoRA, adversarial only"}
    for variant in VARIANTS:
        if (lora_folder(world, variant) / "pytorch_lora_weights.safetensors").is_file():
            rows.append(Row(f"{labels[variant]} ({k} steps, CFG 1)", "eve", variant_view(world, variant), as_trained,
                            k, caption_flag=True))
    return rows


def no_memory_view(world: Path) -> Path:
    """<world>/_views/svdiff-no-memory: links to the world's svdiff parts without its memory (made once)."""
    view = Path(world) / "_views" / "svdiff-no-memory"
    view.mkdir(parents=True, exist_ok=True)
    for name in ("sd15", "lcm-lora-sdv1-5", "taesd"):
        if not (view / name).exists():
            (view / name).symlink_to((Path(world) / name).resolve(), target_is_directory=True)
    return view


def truth_row(clips: list[Clip]) -> dict:
    """The ground truth's own warp error and flicker (what a perfect edit would score), for scale."""
    from vedit_cli.metrics.temporal import flicker, warp_error

    warps = [warp_error(list(clip.frames), list(clip.truth[edit.name])) for clip in clips for edit in EDITS]
    flickers = [flicker(list(clip.truth[edit.name])) for clip in clips for edit in EDITS]
    defined = [w for w in warps if w is not None]
    return {"row": "ground truth (the procedural edits)", "backend": "-", "psnr": None, "edit_accuracy": 1.0,
            "warp_error": float(np.mean(defined)) if defined else None,
            "flicker": float(np.mean([f for f in flickers if f is not None] or [np.nan])), "per_edit_psnr": {},
            "psnr_to_teacher": None, "unet_passes_per_frame": 0, "seconds_per_frame": 0.0}


def prepare_clip(path: Path, folder: Path, options: Options) -> Clip:
    """Downscale `path` to the world's size, write it (lossless H.264), decode it back, apply every edit."""
    from fractions import Fraction

    from vedit_cli.config import EncodeConfig
    from vedit_cli.io.encode import VideoWriter
    from vedit_cli.io.probe import probe
    from vedit_cli.tinyworld.clips import clip_frames

    folder.mkdir(parents=True, exist_ok=True)
    frames = clip_frames(path, options.size, options.max_frames)
    target = folder / f"{Path(path).stem}.mp4"
    writer = VideoWriter(target, options.size, options.size, Fraction(probe(path).fps).limit_denominator(1001),
                         EncodeConfig(crf=0, preset="veryfast"))
    for frame in frames:
        writer.write(frame)
    writer.close()
    decoded = clip_frames(target, options.size)
    clip = Clip(Path(path).stem, target, decoded)
    clip.truth = {edit.name: apply_uint8(edit, decoded) for edit in EDITS}
    return clip


def run_row(row: Row, clips: list[Clip], folder: Path, options: Options) -> tuple[dict, float]:
    """`vedit edit --manifest` runs (one, or one per edit for caption_flag rows): {(clip, edit name): output path},
    seconds per frame (vedit's own timing)."""
    folder.mkdir(parents=True, exist_ok=True)
    edits = EDITS if row.per_instruction else EDITS[:1]
    groups = [(edit.name, [edit], ("--caption", edit.caption)) for edit in edits] if row.caption_flag \
        else [("all", edits, ())]
    outputs, seconds, frames = {}, 0.0, 0
    for name, group_edits, extra in groups:
        jobs = {(clip.name, edit.name): (clip.source, getattr(edit, row.prompt),
                                         folder / f"{clip.name}--{edit.name}.mp4")
                for clip in clips for edit in group_edits}
        job_frames = sum(len(clip.frames) for clip in clips) * len(group_edits)
        group_seconds, group_frames = _run_manifest(row, jobs, job_frames, folder / f"manifest-{name}.csv", extra,
                                                    options)
        seconds, frames = seconds + group_seconds, frames + group_frames
        outputs.update({key: out for key, (_, _, out) in jobs.items()})
    if not row.per_instruction:
        outputs = {(clip.name, edit.name): outputs[(clip.name, EDITS[0].name)] for clip in clips for edit in EDITS}
    return outputs, seconds / max(frames, 1)


def _run_manifest(row: Row, jobs: dict, frames: int, manifest: Path, extra: tuple[str, ...],
                  options: Options) -> tuple[float, int]:
    """One `vedit edit --manifest` run of `jobs`: (seconds, frames) from its --json summary."""
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "prompt", "output"])
        writer.writerows([str(s), p, str(o)] for s, p, o in jobs.values())
    command = [sys.executable, "-m", "vedit_cli", "edit", "--manifest", str(manifest), "--backend", row.backend,
               "--crf", "0", "--overwrite", "--json", "--quiet", *row.args, *extra]
    if row.backend == "copy":  # the clip is already at the world's size; the CLI refuses model options here
        command += ["--output-size", "source"]
    else:
        command += ["--size", str(options.size), "--output-size", "processing", "--dtype", "float32", "--device",
                    "cpu", "--seed", str(options.seed), "--no-download", "--weights-dir", str(row.weights_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(options.threads)}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{row.label}: vedit edit failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return _timing(result.stdout, wall, frames)


def _timing(stdout: str, wall: float, frames: int) -> tuple[float, int]:
    """(seconds, frames) summed over the clips of vedit's --json summary; the wall time if it has none."""
    try:
        summary = json.loads(stdout)
        clips = summary.get("clips", [])
        return sum(c["seconds"] for c in clips), sum(c["frames"] for c in clips)
    except (ValueError, KeyError, TypeError, AttributeError):
        return wall, frames


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) / 255.0).__pow__(2).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(mse(a, b), 1e-10)))


def decoded_outputs(clips: list[Clip], outputs: dict) -> dict:
    """{(clip, edit name): the output's frames (uint8 NHWC)}, each output decoded once."""
    from vedit_cli.tinyworld.clips import clip_frames

    sizes = {clip.name: clip.frames.shape[1] for clip in clips}
    return {key: clip_frames(path, sizes[key[0]]) for key, path in outputs.items()}


def row_metrics(clips: list[Clip], edited_frames: dict) -> dict:
    """PSNR to ground truth (mean over clip x edit), edit accuracy, warp error and flicker (evaluate's metrics)."""
    from vedit_cli.metrics.temporal import flicker, warp_error

    psnrs, hits, warps, flickers = [], [], [], []
    for clip in clips:
        for edit in EDITS:
            edited = edited_frames[(clip.name, edit.name)]
            psnrs.append(psnr(edited, clip.truth[edit.name]))
            distances = {name: mse(edited, truth) for name, truth in clip.truth.items()}
            hits.append(min(distances, key=distances.get) == edit.name)
            warps.append(warp_error(list(clip.frames), list(edited)))
            flickers.append(flicker(list(edited)))
    defined = [w for w in warps if w is not None]
    return {"psnr": float(np.mean(psnrs)), "edit_accuracy": float(np.mean(hits)),
            "warp_error": float(np.mean(defined)) if defined else None,
            "flicker": float(np.mean([f for f in flickers if f is not None] or [np.nan])),
            "per_edit_psnr": {edit.name: float(np.mean(psnrs[i::len(EDITS)])) for i, edit in enumerate(EDITS)}}


def psnr_between(clips: list[Clip], edited_frames: dict, reference: dict) -> float:
    """Mean PSNR (dB) of one row's decoded outputs against another row's (the teacher's), over clip x edit."""
    values = [psnr(edited_frames[key], reference[key])
              for clip in clips for key in ((clip.name, edit.name) for edit in EDITS)]
    return float(np.mean(values))


def wanted(label: str, only: tuple[str, ...]) -> bool:
    """Does one of `only` pick this row: "=label" names it exactly, anything else is a part of its label."""
    return any(label == part[1:] if part.startswith("=") else part in label for part in only)


def score(world: Path, clip_paths: list[Path], work: Path, options: Options, on_progress=None) -> dict:
    """Every row's metrics on `clip_paths`; `on_progress(message)` hears each stage."""
    work = Path(work)
    clips = [prepare_clip(path, work / "sources", options) for path in clip_paths]
    rows, teacher_outputs = [truth_row(clips)], None
    for row in plan_rows(world, options):
        if options.only and row.backend != "copy" and not wanted(row.label, options.only):
            continue
        if on_progress:
            on_progress(f"{row.label}: vedit edit --backend {row.backend} on {len(clips)} clips x "
                        f"{len(EDITS) if row.per_instruction else 1} instructions")
        outputs, seconds_per_frame = run_row(row, clips, work / row.label.replace(" ", "_").replace(",", ""), options)
        edited_frames = decoded_outputs(clips, outputs)
        metrics = row_metrics(clips, edited_frames)
        if row.label == TEACHER_ROW:
            teacher_outputs = edited_frames
        agreement = psnr_between(clips, edited_frames, teacher_outputs) if teacher_outputs else None
        rows.append({"row": row.label, "backend": row.backend, **metrics, "psnr_to_teacher": agreement,
                     "unet_passes_per_frame": row.passes_per_frame, "seconds_per_frame": seconds_per_frame})
    return {"clips": [c.name for c in clips], "frames": [int(len(c.frames)) for c in clips],
            "edits": [e.name for e in EDITS], "size": options.size, "options": options.__dict__, "rows": rows}
