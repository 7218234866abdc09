"""Build and score the tiny world: every component the backends load, trained small here, on real clips.

    python scripts/tiny_world.py build DIR [--quick] [--videos ../shared/videos] [--no-sd] [--students none]
    python scripts/tiny_world.py score DIR --clips FOLDER [--json] [--frames 16] [--rows svdiff eve]
    python scripts/tiny_world.py memory-loss DIR --clips FOLDER     # SVDiff memory: loss carried vs bypassed
    python scripts/tiny_world.py stream DIR --clip CLIP --frames 300  # svdiff + memory: cost and RSS per frame
    python scripts/tiny_world.py fdd DIR [--quick]                   # EVE's LoRA by FDD + its two ablations

build: clip cache -> text encoder + tokenizer -> AutoencoderKL -> TAESD -> random-weights pipeline -> teacher
(`vedit train pix2pix`'s recipe) -> the Stable Diffusion side (sd15, LCM-LoRA, ControlNet, motion adapter, SVDiff
memory) -> the MoViE students. Short probes print budget tables first; a component already built is skipped, and a
training run resumes from its last checkpoint. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SPEC = REPO / "scripts" / "tinyworld.json"
DEFAULT_VIDEOS = REPO.parent / "shared" / "videos"

import torch  # noqa: E402

from vedit_cli.tinyworld import components as parts  # noqa: E402
from vedit_cli.tinyworld import score as scoring  # noqa: E402
from vedit_cli.tinyworld import sd_side  # noqa: E402
from vedit_cli.tinyworld import students as learners  # noqa: E402
from vedit_cli.tinyworld import teacher as teach  # noqa: E402
from vedit_cli.tinyworld.clips import (WorldSpec, build_cache, build_sequences, find_clip, load_split,  # noqa: E402
                                       video_files)


@dataclass(frozen=True)
class Sizes:
    vae: parts.AutoencoderSize
    taesd: parts.AutoencoderSize
    teacher: teach.TeacherSize
    frames_per_clip: int
    students: learners.StudentSize = learners.StudentSize()
    sd: sd_side.SdSideSize = sd_side.SdSideSize()


# FULL is sized to the 30-minute budget of a quiet 2-core machine (the probe's prediction, the teacher encoding each
# image once through the recipe's latent cache; the README gives the measured build).
FULL = Sizes(parts.AutoencoderSize(steps=1200, batch=32, lr=2e-3, crop=32), parts.AutoencoderSize(steps=250, batch=16),
             teach.TeacherSize(steps=1000, batch=32, lr=1e-3), frames_per_clip=48)
QUICK = Sizes(parts.AutoencoderSize(steps=250, batch=16, lr=2e-3, crop=32), parts.AutoencoderSize(steps=30, batch=8),
              teach.TeacherSize(steps=250, batch=16, lr=1e-3), frames_per_clip=8,
              students=learners.StudentSize(batch=4, mobile_steps=2, guidance_steps=2, onestep_steps=2,
                                            trajectories=8),
              sd=sd_side.SdSideSize(base_steps=3, base_batch=4, lcm_steps=3, lcm_batch=2, lora_rank=4,
                                    controlnet_steps=3, controlnet_batch=4, motion_steps=3, motion_batch=1,
                                    memory_steps=2, memory_batch=1, memory_segment=8, memory_clip=4))
PROBE_STEPS = 4  # timed steps per component, after one warm-up step


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StepReporter:
    """Prints `name step/total loss` about 20 times per run, with the seconds per step and the time left."""

    def __init__(self, name: str):
        self.name, self.started, self.times = name, time.perf_counter(), []

    def __call__(self, step: int, total: int, loss: float) -> None:
        self.times.append(time.perf_counter())
        if step == total or step % max(1, total // 20) == 0:
            per_step = (self.times[-1] - self.started) / len(self.times)
            say(f"  {self.name:8s} {step:5d}/{total} loss {loss:.4f}  {per_step:.2f} s/step, "
                f"{per_step * (total - step) / 60:.1f} min left")

    def seconds_per_step(self) -> float:
        """Mean step time after the first (warm-up) step."""
        steps = self.times[1:]
        return (steps[-1] - self.times[0]) / max(len(steps), 1) if steps else float("nan")


def recipe_progress(reporter: StepReporter):
    def progress(event: dict) -> None:
        if event.get("event") == "step":
            reporter(event["step"], event["max_steps"], float(event.get("loss", float("nan"))))
    return progress


# 1. the parts every pipeline folder shares -----------------------------------------------------------------------
def build_text(root: Path) -> None:
    if parts.done_facts(root, "text"):
        return
    say("text encoder + tokenizer (frozen random CLIP, byte-level vocabulary)")
    parts.new_text_encoder().save_pretrained(str(root / "_parts" / "text_encoder"), safe_serialization=True)
    parts.save_tokenizer(root / "_parts" / "tokenizer")
    parts.write_done(root, "text", {"hidden": parts.TEXT_HIDDEN})


def build_vae(root: Path, frames: torch.Tensor, validation: torch.Tensor, size: parts.AutoencoderSize) -> None:
    if parts.done_facts(root, "vae"):
        return
    say(f"AutoencoderKL (factor 4): {size.steps} steps x batch {size.batch}")
    started = time.perf_counter()
    vae = parts.train_vae(frames, size, StepReporter("vae"))
    vae.save_pretrained(str(root / "_parts" / "vae"), safe_serialization=True)
    facts = {"psnr_validation": round(parts.autoencoder_psnr(vae, validation), 2),
             "scaling_factor": vae.config.scaling_factor, "minutes": round((time.perf_counter() - started) / 60, 2)}
    say(f"  vae: validation reconstruction {facts['psnr_validation']} dB, scaling factor {facts['scaling_factor']}")
    parts.write_done(root, "vae", facts)


def build_taesd(root: Path, frames: torch.Tensor, validation: torch.Tensor, size: parts.AutoencoderSize) -> None:
    if parts.done_facts(root, "taesd"):
        return
    from diffusers import AutoencoderKL

    say(f"TAESD (AutoencoderTiny reproducing the VAE's scaled latents): {size.steps} steps x batch {size.batch}"
        + (f", decoder jitter {size.jitter:g}" if size.jitter else ""))
    started = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(str(root / "_parts" / "vae")).eval()
    taesd = parts.train_taesd(vae, frames, size, StepReporter("taesd"))
    shutil.rmtree(root / "taesd", ignore_errors=True)
    taesd.save_pretrained(str(root / "taesd"), safe_serialization=True)
    if (root / "random" / "taesd").is_dir():  # the random-weights pipeline's copy (build_random) follows a rebuild
        copy_taesd_beside_random(root)
    facts = {"psnr_validation": round(parts.taesd_psnr(taesd, validation), 2), "jitter": size.jitter,
             "minutes": round((time.perf_counter() - started) / 60, 2)}
    say(f"  taesd: validation reconstruction {facts['psnr_validation']} dB")
    parts.write_done(root, "taesd", facts)


def copy_taesd_beside_random(root: Path) -> None:
    """<root>/random/taesd: the world's TAESD, which the movie backend requires beside the random pipeline."""
    shutil.rmtree(root / "random" / "taesd", ignore_errors=True)
    shutil.copytree(root / "taesd", root / "random" / "taesd")


def build_random(root: Path, spec: WorldSpec, size: teach.TeacherSize) -> None:
    """<root>/random/instruct-pix2pix: the pipeline with its UNet untrained (the teacher's base and a control row)."""
    if parts.done_facts(root, "random"):
        return
    unet = teach.new_teacher_unet(size, spec.size // 4, parts.TEXT_HIDDEN)
    parts.save_pipeline(root / "random" / "instruct-pix2pix", unet, root / "_parts", size.prediction_type)
    copy_taesd_beside_random(root)
    params = sum(p.numel() for p in unet.parameters())
    say(f"random-weights pipeline: UNet {params / 1e6:.2f} M parameters, blocks {size.block_out_channels}")
    parts.write_done(root, "random", {"unet_parameters": params})


def build_teacher(root: Path, frames_nhwc, spec: WorldSpec, size: teach.TeacherSize) -> None:
    """Trained to size.steps; a teacher built with fewer steps continues from its last checkpoint (--teacher-steps)."""
    done = parts.done_facts(root, "teacher")
    if done and done["steps"] >= size.steps:
        return
    say(f"InstructPix2Pix teacher (vedit train pix2pix recipe): {size.steps} steps x batch {size.batch}"
        + (f", continuing from step {done['steps']}" if done else "")
        + (f", Min-SNR gamma {size.snr_gamma}" if size.snr_gamma else ""))
    started = time.perf_counter()
    config = teach.pix2pix_config(root / "random" / "instruct-pix2pix", frames_nhwc, root / "instruct-pix2pix",
                                  size, spec.size, work_dir=root / "_build" / "teacher-training")
    teach.train_teacher(config, recipe_progress(StepReporter("teacher")))
    phases = (done or {}).get("phases", [done] if done else [])
    phase = {"minutes": round((time.perf_counter() - started) / 60, 2), "steps": size.steps, "batch": size.batch,
             "lr": size.lr, "snr_gamma": size.snr_gamma}
    parts.write_done(root, "teacher", {**phase, "phases": [*phases, phase]})


def build_students(root: Path, frames_nhwc, spec: WorldSpec, size: learners.StudentSize, names) -> None:
    """Every MoViE student variant (vedit_cli.tinyworld.students) asked for, each skipped once built."""
    data = teach.FrameEditTriplets(frames_nhwc)
    for variant in learners.VARIANTS:
        component = f"student-{variant.name or 'headline'}"
        if (names and (variant.name or "headline") not in names) or parts.done_facts(root, component):
            continue
        say(f"{variant.label}: `vedit train movie-student` stages {', '.join(variant.stages) or '(reused)'}")
        started = time.perf_counter()
        reporters = {}

        def progress(event, reporters=reporters):
            if event.get("event") == "step":
                stage = event["stage"]
                reporters.setdefault(stage, StepReporter(stage))(event["step"], event["max_steps"], event["loss"])

        learners.build_variant(root, variant, data, size, spec.size, progress)
        parts.write_done(root, component, {"minutes": round((time.perf_counter() - started) / 60, 2),
                                           "size": asdict(size)})


SEQUENCES_PER_CLIP = 4


def build_sd_side(root: Path, frames_nhwc, spec: WorldSpec, sizes: Sizes, components=None) -> None:
    """The base (from the teacher's UNet, 4 input channels), then the LCM-LoRA, the ControlNet, the motion adapter
    and SVDiff's memory on it; each skipped once built, each resuming from its last checkpoint."""
    random_base = root / "random" / "sd15"
    if not parts.done_facts(root, "random-sd15"):
        unet = teach.new_teacher_unet(sizes.teacher, spec.size // 4, parts.TEXT_HIDDEN, seed=3, in_channels=4)
        sd_side.save_sd_pipeline(random_base, unet, root / "_parts")
        parts.write_done(root, "random-sd15", {"unet_parameters": sum(p.numel() for p in unet.parameters())})
    size = sizes.sd
    say_sd_budget(root, frames_nhwc, spec, sizes)
    start = root / "_build" / "sd15-start"  # the teacher's UNet, its image channels dropped (see sd_side)
    if not parts.done_facts(root, "sd15") and not (start / "model_index.json").is_file():
        sd_side.save_sd_pipeline(start, sd_side.text_to_image_unet(root / "instruct-pix2pix"), root / "_parts")
    for component, (configure, _, data_kind) in sd_side.TRAINERS.items():
        if parts.done_facts(root, component) or (components and component not in components):
            continue
        base = start if component == "sd15" else root / "sd15"
        config = configure(base, world_data(root, frames_nhwc, spec, size, data_kind), root / component, size,
                           spec.size, root / "_build" / f"{component}-training")
        say(f"{component}: {config.trainer.max_steps} steps x batch {config.trainer.batch_size} "
            f"({type(config).__name__.replace('Config', '')} recipe)")
        started = time.perf_counter()
        sd_side.run_trainer(component, config, recipe_progress(StepReporter(component[:8])))
        parts.write_done(root, component, {"minutes": round((time.perf_counter() - started) / 60, 2),
                                           "steps": config.trainer.max_steps, "batch": config.trainer.batch_size})


def world_data(root: Path, frames_nhwc, spec: WorldSpec, size: sd_side.SdSideSize, data_kind: str):
    """The training frames, or runs of consecutive frames of the training clips (cached once per length)."""
    length = sd_side.sequence_length(size, data_kind)
    return frames_nhwc if length is None else build_sequences(root / "cache", spec.size, length, SEQUENCES_PER_CLIP)


def probe_sd_side(root: Path, frames_nhwc, spec: WorldSpec, sizes: Sizes) -> list[dict]:
    """Seconds per step of each Stable Diffusion-side recipe, PROBE_STEPS steps after a warm-up, on a random base."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyworld-sd-probe-") as temporary:
        temporary = Path(temporary)
        unet = teach.new_teacher_unet(sizes.teacher, spec.size // 4, parts.TEXT_HIDDEN, seed=3, in_channels=4)
        base = sd_side.save_sd_pipeline(temporary / "sd15", unet, root / "_parts")
        size = sizes.sd
        for component, (configure, _, data_kind) in sd_side.TRAINERS.items():
            data = world_data(root, frames_nhwc, spec, size, data_kind)
            config = configure(base, data, temporary / component, size, spec.size, temporary / f"{component}.work",
                               steps=PROBE_STEPS + 1)
            timer = StepReporter("probe")
            sd_side.run_trainer(component, config, lambda event, timer=timer: timer.times.append(time.perf_counter())
                                if event.get("event") == "step" else None)
            full = configure(base, data, temporary / component, size, spec.size, temporary / "unused")
            rows.append({"component": component, "steps": full.trainer.max_steps, "batch": full.trainer.batch_size,
                         "seconds_per_step": round(timer.seconds_per_step(), 3),
                         "predicted_minutes": round(full.trainer.max_steps * timer.seconds_per_step() / 60, 2)})
    return rows


def say_sd_budget(root: Path, frames_nhwc, spec: WorldSpec, sizes: Sizes) -> None:
    """The Stable Diffusion side's budget table (probed once, before its first component trains)."""
    budget = parts.done_facts(root, "budget-sd")
    if budget is None:
        if all(parts.done_facts(root, name) for name in sd_side.TRAINERS):
            return
        say("probing the Stable Diffusion side's cost ...")
        started = time.perf_counter()
        budget = {"rows": probe_sd_side(root, frames_nhwc, spec, sizes),
                  "fixed_minutes": round((time.perf_counter() - started) / 60, 2)}
        parts.write_done(root, "budget-sd", budget)
    say("Stable Diffusion side budget (2 CPU cores)\n" + budget_table(budget["rows"], budget["fixed_minutes"]))


# 2. the probe and the budget table ---------------------------------------------------------------------------------
def probe(root: Path, frames: torch.Tensor, frames_nhwc, spec: WorldSpec, sizes: Sizes) -> list[dict]:
    """Seconds per step of each trained component, from PROBE_STEPS steps after a warm-up (untrained parts)."""
    rows = []
    probe_steps = PROBE_STEPS + 1
    vae_timer = StepReporter("probe")
    parts.train_vae(frames, replace(sizes.vae, steps=probe_steps), lambda *a: vae_timer.times.append(time.perf_counter()))
    rows.append(("vae", sizes.vae.steps, sizes.vae.batch, vae_timer.seconds_per_step()))
    untrained = parts.new_vae().eval()
    taesd_timer = StepReporter("probe")
    parts.train_taesd(untrained, frames, replace(sizes.taesd, steps=probe_steps),
                      lambda *a: taesd_timer.times.append(time.perf_counter()))
    rows.append(("taesd", sizes.taesd.steps, sizes.taesd.batch, taesd_timer.seconds_per_step()))
    with tempfile.TemporaryDirectory(prefix="tinyworld-probe-") as temporary:
        temporary = Path(temporary)
        shutil.copytree(root / "_parts", temporary / "_parts")
        untrained.save_pretrained(str(temporary / "_parts" / "vae"), safe_serialization=True)
        base = parts.save_pipeline(temporary / "base", teach.new_teacher_unet(sizes.teacher, spec.size // 4,
                                                                             parts.TEXT_HIDDEN), temporary / "_parts")
        timer = StepReporter("probe")
        config = teach.pix2pix_config(base, frames_nhwc, temporary / "out", sizes.teacher, spec.size,
                                      steps=probe_steps, work_dir=temporary / "work")
        teach.train_teacher(config, lambda event: timer.times.append(time.perf_counter())
                            if event.get("event") == "step" else None)
        # the probe's steps all encode; the build's teacher encodes each distinct image once (the latent cache)
        per_image = encode_seconds_per_image(untrained, frames[: sizes.teacher.batch])
        cached_step = max(timer.seconds_per_step() - 2 * sizes.teacher.batch * per_image, 0.0)
        rows.append(("teacher", sizes.teacher.steps, sizes.teacher.batch, cached_step))
        rows.append((TEACHER_ENCODES, teacher_images(sizes.teacher, len(frames_nhwc)), 1, per_image))
    return [{"component": name, "steps": steps, "batch": batch, "seconds_per_step": round(per_step, 4),
             "predicted_minutes": round(steps * per_step / 60, 2)} for name, steps, batch, per_step in rows]


TEACHER_ENCODES = "teacher latents (each image encoded once)"


def encode_seconds_per_image(vae, images: torch.Tensor) -> float:
    with torch.no_grad():
        vae.encode(images)
        started = time.perf_counter()
        vae.encode(images)
    return (time.perf_counter() - started) / len(images)


def teacher_images(size: teach.TeacherSize, frames: int) -> int:
    """Distinct images the teacher's training meets: its triplets' distinct images, at most two per sample drawn."""
    return min(teach.FrameEditTriplets.distinct_images(frames), 2 * size.steps * size.batch)


def with_sizes(rows: list[dict], sizes: Sizes, frames: int) -> list[dict]:
    """The probe's seconds per step times this build's steps (a probe survives a change of step counts)."""
    steps = {"vae": sizes.vae.steps, "taesd": sizes.taesd.steps, "teacher": sizes.teacher.steps,
             TEACHER_ENCODES: teacher_images(sizes.teacher, frames)}
    return [{**row, "steps": steps[row["component"]],
             "predicted_minutes": round(steps[row["component"]] * row["seconds_per_step"] / 60, 2)} for row in rows]


def budget_table(rows: list[dict], fixed_minutes: float) -> str:
    lines = ["| component | steps x batch | s/step (probe) | predicted min |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['component']} | {row['steps']} x {row['batch']} | {row['seconds_per_step']:.4f} | "
                     f"{row['predicted_minutes']:.1f} |")
    total = fixed_minutes + sum(row["predicted_minutes"] for row in rows)
    lines.append(f"| fixed parts and probe (measured) | | | {fixed_minutes:.1f} |")
    lines.append(f"| **total** | | | **{total:.1f}** |")
    return "\n".join(lines)


# 3. the commands ---------------------------------------------------------------------------------------------------
def threads_for_this_machine() -> int:
    """2 threads (the build machine's cores) when the machine is quiet; 1 when other work keeps the cores busy:
    oversubscribed, torch's 2-thread kernels were measured 4-5x SLOWER than 1 thread (load average 7 on 2 cores)."""
    cores = os.cpu_count() or 1
    return min(2, cores) if os.getloadavg()[0] < max(1.0, cores - 1.0) else 1


def quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def chosen_sizes(args) -> Sizes:
    """QUICK or FULL, with any --{vae,taesd,teacher}-{steps,batch}, --vae-{lr,crop}, --teacher-{lr,blocks} override."""
    sizes = QUICK if args.quick else FULL
    return replace(
        sizes, vae=replace(sizes.vae, steps=args.vae_steps or sizes.vae.steps, batch=args.vae_batch or sizes.vae.batch,
                           lr=args.vae_lr or sizes.vae.lr,
                           crop=sizes.vae.crop if args.vae_crop is None else args.vae_crop),
        taesd=replace(sizes.taesd, steps=args.taesd_steps or sizes.taesd.steps,
                      batch=args.taesd_batch or sizes.taesd.batch,
                      jitter=sizes.taesd.jitter if args.taesd_jitter is None else args.taesd_jitter),
        teacher=replace(sizes.teacher, steps=args.teacher_steps or sizes.teacher.steps,
                        batch=args.teacher_batch or sizes.teacher.batch,
                        lr=args.teacher_lr or sizes.teacher.lr,
                        snr_gamma=args.teacher_snr_gamma or sizes.teacher.snr_gamma,
                        block_out_channels=tuple(args.teacher_blocks or sizes.teacher.block_out_channels)),
        sd=replace(sizes.sd, base_steps=args.sd_base_steps or sizes.sd.base_steps),
        students=replace(sizes.students, **{f"{stage}_steps": steps for stage, steps in
                                            zip(("mobile", "guidance", "onestep"), args.student_steps) if steps}))


def build(root: Path, sizes: Sizes, quick: bool, videos: Path | None, budget_minutes: float, threads: int,
          students: list[str] | None = None, sd: bool = True) -> int:
    started = time.perf_counter()
    torch.set_num_threads(threads or threads_for_this_machine())
    quiet_libraries()
    root.mkdir(parents=True, exist_ok=True)
    spec = replace(WorldSpec.load(SPEC), frames_per_clip=sizes.frames_per_clip)
    (root / "tinyworld.json").write_text(json.dumps({**asdict(spec), "quick": quick}, indent=1))
    say(f"tiny world in {root} ({'quick' if quick else 'full'} build, {torch.get_num_threads()} threads)")
    cache = build_cache(spec, videos, root / "cache")
    if cache["synthetic"]:
        say(f"NOTE: {videos} does not hold the pinned clips: training on clips synthesised with ffmpeg instead")
    say("clips: " + ", ".join(f"{split} {info['frames']} frames" for split, info in cache["splits"].items()))
    frames_nhwc = load_split(root / "cache", "train")
    frames, validation = parts.to_tensor(frames_nhwc), parts.to_tensor(load_split(root / "cache", "validation"))
    build_text(root)
    budget = parts.done_facts(root, "budget")
    if budget is None and not parts.done_facts(root, "teacher"):
        say("probing each component's cost ...")
        rows = probe(root, frames, frames_nhwc, spec, sizes)
        budget = {"rows": rows, "fixed_minutes": round((time.perf_counter() - started) / 60, 2)}
        parts.write_done(root, "budget", budget)
    if budget is not None:
        budget["rows"] = with_sizes(budget["rows"], sizes, len(frames_nhwc))
        table = budget_table(budget["rows"], budget["fixed_minutes"])
        say("budget (2 CPU cores; this machine may be shared: absolute times are noisy)\n" + table)
        total = budget["fixed_minutes"] + sum(row["predicted_minutes"] for row in budget["rows"])
        if total > budget_minutes:
            say(f"WARNING: predicted {total:.1f} min is over the {budget_minutes:.0f} min budget (a busy machine?)")
    build_vae(root, frames, validation, sizes.vae)
    build_taesd(root, frames, validation, sizes.taesd)
    build_random(root, spec, sizes.teacher)
    build_teacher(root, frames_nhwc, spec, sizes.teacher)
    if sd:
        build_sd_side(root, frames_nhwc, spec, sizes)
    if students != ["none"]:
        build_students(root, frames_nhwc, spec, sizes.students, students)
    minutes = (time.perf_counter() - started) / 60
    say(f"built {root} in {minutes:.1f} min: vedit edit CLIP 'make it black and white' --backend movie "
        f"--weights-dir {root} --size {spec.size} --dtype float32")
    return 0


def world_clips(root: Path, folder: Path, split: str = "held_out") -> list[Path]:
    """The world's held-out (or validation) clips found in `folder`, else every video in it (a user's own clips)."""
    names = json.loads((root / "tinyworld.json").read_text())["clips"][split]
    found = [find_clip(folder, name) for name in names]
    return [p for p in found if p is not None] or video_files(folder)


def score_command(root: Path, clips: Path, json_output: bool, frames: int, work: Path | None, args) -> int:
    from vedit_cli.tinyworld.score import Options, score

    spec = json.loads((root / "tinyworld.json").read_text())
    options = Options(size=spec["size"], max_frames=frames, steps=args.steps, guidance_scale=args.guidance_scale,
                      image_guidance_scale=args.image_guidance_scale, only=tuple(args.rows),
                      threads=args.threads or threads_for_this_machine())
    paths = world_clips(root, clips, args.split)
    if args.max_clips:
        paths = paths[: args.max_clips]
    if not paths:
        say(f"no clips in {clips}")
        return 2
    say(f"scoring {root} on {', '.join(p.name for p in paths)} ({frames} frames each, {spec['size']}x{spec['size']})")
    work = work or root / "_score"
    report = score(root, paths, work, options, on_progress=lambda message: say("  " + message))
    if json_output:
        print(json.dumps(report, indent=1))
    else:
        print(score_table(report))
    return 0


def guidance_grid_command(root: Path, clips: Path, frames: int, json_output: bool) -> int:
    """The teacher's and the headline student's distance from the source over a (s_T, s_I) grid."""
    from vedit_cli.tinyworld import guidance_grid as gg
    from vedit_cli.tinyworld.clips import clip_frames
    from vedit_cli.tinyworld.edits import EDITS

    torch.set_num_threads(threads_for_this_machine())
    quiet_libraries()
    size = json.loads((root / "tinyworld.json").read_text())["size"]
    paths = world_clips(root, clips)[:1]
    source = clip_frames(paths[0], size, frames)
    instructions = [edit.instruction for edit in EDITS]
    say(f"guidance grid on {paths[0].name} ({len(source)} frames, {len(instructions)} instructions)")
    grids = [gg.distance_grid("movie teacher (10 steps x 3 passes)", root, "teacher", source, instructions, size),
             gg.distance_grid("movie student (1 step x 1 pass)", root, "student", source, instructions, size)]
    agreement = gg.agreement(*grids)
    if json_output:
        print(json.dumps({"text_scales": gg.TEXT_SCALES, "image_scales": gg.IMAGE_SCALES,
                          "grids": {g.label: g.distances.tolist() for g in grids}, **agreement}, indent=1))
    else:
        print(gg.grid_table(grids))
        print(f"student range / teacher range: {agreement['range_fraction']:.2f}; "
              f"rank correlation of the 9 cells: {agreement['spearman']:.2f}")
    return 0


def memory_loss_command(root: Path, clips: Path, frames: int, seeds: int, json_output: bool) -> int:
    """Per-frame noise-prediction loss of held-out streams with the trained SVDiff memory carried vs bypassed."""
    from vedit_cli.tinyworld import memory_loss
    from vedit_cli.tinyworld.clips import clip_frames

    torch.set_num_threads(threads_for_this_machine())
    quiet_libraries()
    spec = json.loads((root / "tinyworld.json").read_text())
    streams = {path.stem: clip_frames(path, spec["size"], frames) for path in world_clips(root, clips)}
    frames = min(len(s) for s in streams.values())  # every stream as long as the shortest held-out clip
    clip = sd_side.SdSideSize().memory_clip
    frames -= frames % clip
    streams = {name: s[:frames] for name, s in streams.items()}
    say(f"memory loss on {', '.join(streams)}: {frames} frames each, clips of {clip}, {seeds} seeds x "
        f"{1 + len(sd_side.EDITS)} captions")
    with tempfile.TemporaryDirectory(prefix="tinyworld-memory-") as work:
        recipe = memory_loss.trained_recipe(root, frames, clip, spec["size"], Path(work))
        result = {"frames": frames, "clip_frames": clip, **memory_loss.report(recipe, streams, seeds)}
    if json_output:
        print(json.dumps(result, indent=1))
        return 0
    print("| clip | loss, memory bypassed | loss, trained memory carried | change |\n|---|---:|---:|---:|")
    for name, row in result["clips"].items():
        print(f"| {name} | {row['without_memory']:.4f} | {row['with_memory']:.4f} | {row['relative_change']:+.1%} |")
    low, high = result["spread_relative_change"]
    print(f"mean change {result['mean_relative_change']:+.1%} (clips {low:+.1%} .. {high:+.1%}); lower with the "
          f"memory in {result['lower_with_memory']} of {result['streams']} streams (clip x caption x seed)")
    return 0


def stream_command(root: Path, clip: Path, frames: int, caption: str) -> int:
    """svdiff with the world's trained memory over a long stream, frame by frame as the runner feeds it: the cost
    of each frame and the process's RSS, printed at checkpoints (they must stay flat: the memory is fixed-size)."""
    import resource

    import psutil

    from vedit_cli.config import ModelConfig
    from vedit_cli.editor import create_editor
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe
    from vedit_cli.settings import resolve_run
    from vedit_cli.tinyworld.clips import square_crops

    torch.set_num_threads(threads_for_this_machine())
    quiet_libraries()
    size = json.loads((root / "tinyworld.json").read_text())["size"]
    editor = create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=root, device="cpu", dtype="float32",
                                                   size=size).validate()))
    editor.prepare(caption)
    say(editor.description)
    process, times, marks = psutil.Process(), [], {10, 50, 100, 150, 200, 250, 300, frames}
    print("| frame | ms/frame (mean of the last 10) | RSS (MiB) |\n|---:|---:|---:|")
    for index, frame in enumerate(read_frames(probe(clip)), start=1):
        tensor = torch.from_numpy(square_crops(frame, size, 1)[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
        started = time.perf_counter()
        editor.edit(tensor)
        times.append(time.perf_counter() - started)
        if index in marks:
            print(f"| {index} | {1000 * sum(times[-10:]) / len(times[-10:]):.1f} | "
                  f"{process.memory_info().rss / 2**20:.0f} |")
        if index >= frames:
            break
    say(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


FDD_QUICK = dict(steps=2, sds_only_steps=1, batch=1, lora_rank=4, window=4, k_steps=2, teacher_steps=2)


def fdd_command(root: Path, variants: list[str], quick: bool, held_out_windows: int, json_output: bool,
                threads: int = 0) -> int:
    """EVE's alignment LoRA by FDD and its ablations (vedit_cli.tinyworld.fdd), each skipped once built, then each
    teacher's loss on the student's held-out samples before training and after each variant."""
    from vedit_cli.tinyworld import fdd
    from vedit_cli.train.recipes.eve_lora import train_eve_lora

    torch.set_num_threads(threads or threads_for_this_machine())
    quiet_libraries()
    spec = json.loads((root / "tinyworld.json").read_text())
    size = fdd.FddSize(**FDD_QUICK) if quick else fdd.FddSize()
    train = build_sequences(root / "cache", spec["size"], size.window, SEQUENCES_PER_CLIP)
    held = build_sequences(root / "cache", spec["size"], size.window, 1, split="held_out")
    windows = fdd.InstructedWindows(held[:held_out_windows] if held_out_windows else held)
    facts = {}
    configs = {variant: fdd.fdd_config(root, train, variant, size, spec["size"],
                                       root / "_build" / f"eve-lora-{variant}-training") for variant in variants}
    for variant, config in configs.items():
        component = f"eve-lora-{variant}"
        facts[variant] = parts.done_facts(root, component)
        if facts[variant] is None:
            say(f"{variant}: `vedit train eve-lora` {size.steps} iterations x {size.batch} windows of {size.window} "
                f"frames (k = {size.k_steps}; adversarial from iteration {config.sds_only_steps}, "
                f"lambda {config.sds_weight})")
            started = time.perf_counter()
            train_eve_lora(config, recipe_progress(StepReporter(variant[:8])))
            facts[variant] = {"minutes": round((time.perf_counter() - started) / 60, 2), "size": asdict(size),
                              "sds_only_steps": config.sds_only_steps, "sds_weight": config.sds_weight}
            parts.write_done(root, component, facts[variant])
    say(f"teacher losses on {len(windows)} held-out windows x {len(fdd.LOSS_TIMESTEPS)} timesteps ...")
    reference = configs.get("fdd") or fdd.fdd_config(root, train, "fdd", size, spec["size"],
                                                     root / "_build" / "unused")
    losses = {"before training": fdd.teacher_losses(reference, windows, None)}
    for variant, config in configs.items():
        lora = fdd.lora_folder(root, variant) / "pytorch_lora_weights.safetensors"
        losses[variant] = fdd.teacher_losses(config, windows, lora)
    result = {"training": facts, "teacher_losses": losses, "held_out_windows": len(windows),
              "timesteps": list(fdd.LOSS_TIMESTEPS)}
    parts.write_done(root, "fdd-teacher-losses", result)
    if json_output:
        print(json.dumps(result, indent=1))
        return 0
    print("| student | edit teacher's loss | video teacher's loss | training min |\n|---|---:|---:|---:|")
    for name, row in losses.items():
        minutes = (facts.get(name) or {}).get("minutes")
        print(f"| {name} | {row['edit']:.4f} | {row['video']:.4f} | {'-' if minutes is None else minutes} |")
    return 0


def score_table(report: dict) -> str:
    lines = ["| backend / mode | PSNR to truth (dB) | edit accuracy | PSNR to teacher (dB) | warp error | flicker | "
             "UNet passes/frame | s/frame |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        warp = f"{row['warp_error']:.4f}" if row["warp_error"] is not None else "n/a"
        teacher = row.get("psnr_to_teacher")
        teacher = "-" if teacher is None or row["row"] == "movie teacher" else f"{teacher:.2f}"
        psnr = "-" if row["psnr"] is None else f"{row['psnr']:.2f}"
        lines.append(f"| {row['row']} | {psnr} | {row['edit_accuracy']:.0%} | {teacher} | {warp} | "
                     f"{row['flicker']:.2f} | {row['unet_passes_per_frame']} | {row['seconds_per_frame']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="train every component (resumable)")
    build_parser.add_argument("dir", type=Path)
    build_parser.add_argument("--quick", action="store_true", help="small sizes, for tests (a few minutes)")
    build_parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder holding the pinned clips")
    build_parser.add_argument("--budget-minutes", type=float, default=30.0, help="warn when the probe predicts more")
    build_parser.add_argument("--threads", type=int, default=0, help="torch threads (0: 2, or 1 on a busy machine)")
    for name in ("vae", "taesd", "teacher"):
        build_parser.add_argument(f"--{name}-steps", type=int, default=0, help=f"override the {name}'s training steps")
        build_parser.add_argument(f"--{name}-batch", type=int, default=0,
                                  help=f"override the {name}'s batch size (0: the --quick or full size)")
    build_parser.add_argument("--vae-lr", type=float, default=0.0, help="override the autoencoder's learning rate")
    build_parser.add_argument("--vae-crop", type=int, default=None,
                              help="train the autoencoder on random CROP x CROP windows (0: whole frames)")
    build_parser.add_argument("--taesd-jitter", type=float, default=None,
                              help="TAESD's decoder also learns the VAE decoder's image of latents blurred and "
                                   "noised up to this std (0: clean latents only)")
    build_parser.add_argument("--teacher-lr", type=float, default=0.0, help="override the teacher's learning rate")
    build_parser.add_argument("--teacher-blocks", type=int, nargs="*", default=[],
                              help="override the teacher's block widths (e.g. 16 32 64)")
    build_parser.add_argument("--teacher-snr-gamma", type=float, default=0.0,
                              help="Min-SNR-gamma weighting of the teacher's loss (0: none)")
    build_parser.add_argument("--students", nargs="*", default=[],
                              help="student variants to build (headline, guidance-only, no-adversarial, "
                                   "no-top-attention, stock, taesd-decoder; default: all; 'none': no students)")
    build_parser.add_argument("--student-steps", type=int, nargs=3, default=(0, 0, 0),
                              metavar=("MOBILE", "GUIDANCE", "ONESTEP"),
                              help="override the students' steps per stage (0: the --quick or full size)")
    build_parser.add_argument("--sd-base-steps", type=int, default=0,
                              help="override the text-to-image base's training steps (0: the --quick or full size)")
    build_parser.add_argument("--no-sd", action="store_true",
                              help="skip the Stable Diffusion side (sd15, LCM-LoRA, ControlNet, motion adapter)")
    score_parser = commands.add_parser("score", help="score every backend/mode with weights in DIR")
    score_parser.add_argument("dir", type=Path)
    score_parser.add_argument("--clips", type=Path, required=True, help="folder of clips (held-out ones are picked)")
    score_parser.add_argument("--json", action="store_true")
    score_parser.add_argument("--frames", type=int, default=8, help="first N frames of each clip")
    score_parser.add_argument("--max-clips", type=int, default=0, help="score only the first N clips (0: all)")
    score_parser.add_argument("--steps", type=int, default=10)
    score_parser.add_argument("--guidance-scale", type=float, default=scoring.WORLD_GUIDANCE_SCALE,
                              help="movie rows' s_T (default: tuned on the validation clip)")
    score_parser.add_argument("--image-guidance-scale", type=float, default=scoring.WORLD_IMAGE_GUIDANCE_SCALE,
                              help="movie rows' s_I (default: tuned on the validation clip)")
    score_parser.add_argument("--work", type=Path, default=None, help="folder for the scored outputs")
    score_parser.add_argument("--rows", nargs="*", default=[], help="only rows whose label contains one of these,"
                              " or equals one given as =LABEL (quote labels: --rows \"=movie teacher\")")
    score_parser.add_argument("--threads", type=int, default=0, help="torch threads (0: 2, or 1 on a busy machine)")
    score_parser.add_argument("--split", choices=("held_out", "validation"), default="held_out",
                              help="which of the world's clips to score (validation: for tuning, e.g. the scales)")
    grid_parser = commands.add_parser("guidance-grid", help="teacher vs student distance from the source over (s_T, s_I)")
    grid_parser.add_argument("dir", type=Path)
    grid_parser.add_argument("--clips", type=Path, required=True)
    grid_parser.add_argument("--frames", type=int, default=4)
    grid_parser.add_argument("--json", action="store_true")
    memory_parser = commands.add_parser("memory-loss", help="noise-prediction loss with vs without the memory")
    memory_parser.add_argument("dir", type=Path)
    memory_parser.add_argument("--clips", type=Path, required=True)
    memory_parser.add_argument("--frames", type=int, default=64, help="at most N frames of each held-out clip")
    memory_parser.add_argument("--seeds", type=int, default=4)
    memory_parser.add_argument("--json", action="store_true")
    stream_parser = commands.add_parser("stream", help="svdiff + memory over a long stream: cost and RSS per frame")
    stream_parser.add_argument("dir", type=Path)
    stream_parser.add_argument("--clip", type=Path, required=True)
    stream_parser.add_argument("--frames", type=int, default=300)
    stream_parser.add_argument("--caption", default="a sepia photo")
    fdd_parser = commands.add_parser("fdd", help="EVE's alignment LoRA by FDD, its ablations, the teachers' losses")
    fdd_parser.add_argument("dir", type=Path)
    fdd_parser.add_argument("--variants", nargs="*", default=["fdd", "sds-only", "adversarial-only"])
    fdd_parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    fdd_parser.add_argument("--held-out-windows", type=int, default=0,
                            help="teacher losses on the first N held-out windows (0: all)")
    fdd_parser.add_argument("--threads", type=int, default=0, help="torch threads (0: 2, or 1 on a busy machine)")
    fdd_parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "fdd":
        return fdd_command(args.dir, args.variants, args.quick, args.held_out_windows, args.json, args.threads)
    if args.command == "build":
        return build(args.dir, chosen_sizes(args), args.quick, args.videos, args.budget_minutes, args.threads,
                     args.students, not args.no_sd)
    if args.command == "stream":
        return stream_command(args.dir, args.clip, args.frames, args.caption)
    if args.command == "memory-loss":
        return memory_loss_command(args.dir, args.clips, args.frames, args.seeds, args.json)
    if args.command == "guidance-grid":
        return guidance_grid_command(args.dir, args.clips, args.frames, args.json)
    return score_command(args.dir, args.clips, args.json, args.frames, args.work, args)


if __name__ == "__main__":
    sys.exit(main())
