"""`vedit train pix2pix | movie-student | svdiff-memory | eve-lora`: training on the accelerate trainer (one CPU/GPU, or
`accelerate launch`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from vedit_cli.commands.common import JsonOutput, Quiet, print_json, quiet_libraries, stderr_console
from vedit_cli.models.student_architecture import ARCHITECTURES
from vedit_cli.train.config import DISCRIMINATOR_FEATURES, MIXED_PRECISION, ONESTEP_PREDICTIONS, SDS_WEIGHTINGS


def _defaults(cls) -> dict:
    """Field defaults of a config dataclass: the CLI shows them, it never restates them."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def register(app: typer.Typer) -> None:
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig, TripletColumns

    T, P = _defaults(TrainerConfig), _defaults(Pix2PixConfig)
    train_app = typer.Typer(help="Train the models the backends load (on CPU, one GPU, or many with `accelerate launch`).",
                            no_args_is_help=True)
    app.add_typer(train_app, name="train")

    @train_app.command("pix2pix")
    def pix2pix(
        data: Annotated[Path, typer.Argument(help="Triplets: a folder, a CSV/JSONL table (source, instruction, edited) or InstructPix2Pix parquet files.", show_default=False)],
        base: Annotated[Path, typer.Option(help="Stable Diffusion folder (UNet widened to 8 input channels) or InstructPix2Pix folder (fine-tuned), diffusers layout.", show_default=False)],
        output: Annotated[Path, typer.Option("--output", "-o", help="InstructPix2Pix folder to write (for `vedit edit --backend movie --weights-dir W`: W/instruct-pix2pix).", show_default=False)],
        work_dir: Annotated[Path | None, typer.Option(help="Checkpoints, log.jsonl and validation images (default: OUTPUT.training).", show_default=False)] = None,
        max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = T["max_steps"],
        batch_size: Annotated[int, typer.Option(help="Samples per process per micro-step (global batch = batch x processes x accumulation).")] = T["batch_size"],
        gradient_accumulation_steps: Annotated[int, typer.Option(help="Micro-steps per optimizer step.")] = T["gradient_accumulation_steps"],
        learning_rate: Annotated[float, typer.Option(help="AdamW learning rate (the paper: 1e-4).")] = T["learning_rate"],
        lr_scheduler: Annotated[str, typer.Option(help="constant, linear, cosine, constant_with_warmup, ...")] = T["lr_scheduler"],
        lr_warmup_steps: Annotated[int, typer.Option(help="Warm-up steps of the schedule.")] = T["lr_warmup_steps"],
        max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0: none).")] = T["max_grad_norm"],
        mixed_precision: Annotated[Literal[MIXED_PRECISION], typer.Option(help="Autocast dtype (the UNet's master weights stay float32).")] = T["mixed_precision"],
        gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in backward: less memory, slower.")] = T["gradient_checkpointing"],
        ema_decay: Annotated[float | None, typer.Option(help="Keep an EMA of the UNet with this decay (e.g. 0.9999) and save it.", show_default=False)] = None,
        checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps (and at the end).")] = T["checkpoint_every"],
        keep_checkpoints: Annotated[int, typer.Option(help="Keep the last K checkpoints.")] = T["keep_checkpoints"],
        validate_every: Annotated[int, typer.Option(help="Write validation edits every N steps (0: never).")] = T["validate_every"],
        validation_data: Annotated[Path | None, typer.Option(help="Triplets for validation (default: the first training samples).", show_default=False)] = None,
        validation_count: Annotated[int, typer.Option(help="Validation samples per round.")] = P["validation_count"],
        resolution: Annotated[int, typer.Option(help="Training crop size in pixels (the paper: 256).")] = P["resolution"],
        random_resize: Annotated[float, typer.Option(help="Resize the short side to resolution x U(1, this) then crop (the paper: 288/256); 1: centre crop.")] = P["random_resize"],
        random_flip: Annotated[bool, typer.Option(help="Flip source and edit together half the time.")] = P["random_flip"],
        conditioning_dropout: Annotated[float, typer.Option(help="Drop the text, the image, and both, each for this fraction of samples (the paper: 0.05).")] = P["conditioning_dropout"],
        snr_gamma: Annotated[float | None, typer.Option(help="Min-SNR-gamma loss weighting (e.g. 5; default: none, as the paper).", show_default=False)] = None,
        cache_latents: Annotated[bool, typer.Option(help="Keep each distinct image's VAE latents in memory and skip its encode when it comes again (needs --random-resize 1; memory: two latents per image).")] = P["cache_latents"],
        source_column: Annotated[str | None, typer.Option(help="Source image column (default: original_image for parquet (input_image for fusing/instructpix2pix-1000-samples), source for CSV/JSONL).", show_default=False)] = None,
        instruction_column: Annotated[str | None, typer.Option(help="Instruction column (default: edit_prompt / instruction).", show_default=False)] = None,
        edited_column: Annotated[str | None, typer.Option(help="Edited image column (default: edited_image / edited).", show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the data order and of every per-sample draw.")] = T["seed"],
        resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint in the work folder.")] = T["resume"],
        num_workers: Annotated[int, typer.Option(help="Data-loading worker processes per training process.")] = T["num_workers"],
        cpu: Annotated[bool, typer.Option(help="Train on the CPU even when a GPU is there.")] = T["cpu"],
        tensorboard: Annotated[bool, typer.Option(help="Also log losses to WORK_DIR/tensorboard (pip install tensorboard).")] = T["tensorboard"],
        overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = P["overwrite"],
        as_json: JsonOutput = False,
        quiet: Quiet = False,
    ) -> None:
        """Train InstructPix2Pix (Brooks et al., arXiv 2211.09800) on (source, instruction, edited) triplets."""
        quiet_libraries()
        from vedit_cli.train.recipes.pix2pix import train_pix2pix

        trainer = TrainerConfig(
            work_dir=work_dir, max_steps=max_steps, batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
            lr_scheduler=lr_scheduler, lr_warmup_steps=lr_warmup_steps, max_grad_norm=max_grad_norm,
            mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, ema_decay=ema_decay,
            checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, validate_every=validate_every,
            seed=seed, resume=resume, num_workers=num_workers, cpu=cpu, tensorboard=tensorboard,
        )
        config = Pix2PixConfig(
            base=base, data=data, output_dir=output, trainer=trainer, validation_data=validation_data,
            columns=TripletColumns(source_column, instruction_column, edited_column), resolution=resolution,
            random_resize=random_resize, random_flip=random_flip, conditioning_dropout=conditioning_dropout,
            validation_count=validation_count, overwrite=overwrite, snr_gamma=snr_gamma,
            cache_latents=cache_latents,
        )
        main_process = int(os.environ.get("RANK", "0")) == 0
        with TrainingProgress(stderr_console(quiet or as_json or not main_process)) as progress:
            train_pix2pix(config, progress=progress)
        if main_process:
            _report(progress.summary, as_json, quiet)

    register_movie_student(train_app)
    register_svdiff_memory(train_app)
    register_eve_lora(train_app)


def register_movie_student(train_app: typer.Typer) -> None:
    from vedit_cli.train.config import MovieStudentConfig, TrainerConfig, TripletColumns

    T, S = _defaults(TrainerConfig), _defaults(MovieStudentConfig)

    @train_app.command("movie-student")
    def movie_student(
        teacher_dir: Annotated[Path, typer.Option(help="The InstructPix2Pix teacher folder (diffusers layout): WEIGHTS/instruct-pix2pix.", show_default=False)],
        data: Annotated[Path, typer.Option(help="Triplets (folder, CSV/JSONL table or InstructPix2Pix parquet), as `vedit train pix2pix` reads them.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Student folder to write: WEIGHTS/movie-student (`vedit edit --backend movie` picks it up).", show_default=False)],
        stage: Annotated[Literal["mobile", "guidance", "onestep", "all"], typer.Option(help="mobile: slim the UNet and recover the teacher; guidance: one pass instead of three; onestep: adversarial distillation to one step; all: the three in order.")] = "all",
        architecture: Annotated[Literal[tuple(ARCHITECTURES)], typer.Option(help="stock (the teacher's UNet), no-top-attention (MoViE's cut) or mobile (also no attention at the next resolution).")] = S["architecture"],
        work_dir: Annotated[Path | None, typer.Option(help="Per-stage checkpoints, logs and students (default: OUT.training).", show_default=False)] = None,
        mobile_steps: Annotated[int, typer.Option(help="Optimizer steps of the mobile stage.")] = S["mobile_steps"],
        guidance_steps: Annotated[int, typer.Option(help="Optimizer steps of the guidance stage.")] = S["guidance_steps"],
        onestep_steps: Annotated[int, typer.Option(help="Optimizer steps of the one-step stage.")] = S["onestep_steps"],
        batch_size: Annotated[int, typer.Option(help="Samples per process per micro-step.")] = T["batch_size"],
        gradient_accumulation_steps: Annotated[int, typer.Option(help="Micro-steps per optimizer step.")] = T["gradient_accumulation_steps"],
        learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = T["learning_rate"],
        lr_scheduler: Annotated[str, typer.Option(help="constant, linear, cosine, constant_with_warmup, ...")] = T["lr_scheduler"],
        lr_warmup_steps: Annotated[int, typer.Option(help="Warm-up steps of each stage's schedule.")] = T["lr_warmup_steps"],
        mixed_precision: Annotated[Literal[MIXED_PRECISION], typer.Option(help="Autocast dtype.")] = T["mixed_precision"],
        gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute the student's activations in backward.")] = T["gradient_checkpointing"],
        checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps (and at the end of each stage).")] = T["checkpoint_every"],
        keep_checkpoints: Annotated[int, typer.Option(help="Keep the last K checkpoints per stage.")] = T["keep_checkpoints"],
        resolution: Annotated[int, typer.Option(help="Training crop size in pixels.")] = S["resolution"],
        text_scale_range: Annotated[tuple[float, float], typer.Option(help="s_T drawn uniformly from LOW HIGH (stages guidance and onestep).")] = S["text_scale_range"],
        image_scale_range: Annotated[tuple[float, float], typer.Option(help="s_I drawn uniformly from LOW HIGH.")] = S["image_scale_range"],
        teacher_steps: Annotated[int, typer.Option(help="Steps of the guided teacher's trajectories (trailing spacing).")] = S["teacher_steps"],
        trajectories: Annotated[int, typer.Option(help="Teacher trajectories computed once for the one-step stage.")] = S["trajectories"],
        noise_fraction: Annotated[float, typer.Option(help="Share of one-step samples at the trajectory's first state (pure noise).")] = S["noise_fraction"],
        onestep_prediction: Annotated[Literal[ONESTEP_PREDICTIONS], typer.Option(help="The one-step student's output: auto (a v teacher's v, read as its clean latent, so the stage starts from the stage-2 student's one-step estimate; else the clean latent itself), sample or v_prediction.")] = S["onestep_prediction"],
        distillation_weight: Annotated[float, typer.Option(help="Weight of |x0_student - x0_teacher|^2 in the one-step stage.")] = S["distillation_weight"],
        adversarial_weight: Annotated[float, typer.Option(help="Weight of the adversarial generator term (0: the no-adversarial ablation).")] = S["adversarial_weight"],
        decoder: Annotated[Path | None, typer.Option(help="TAESD folder (AutoencoderTiny, diffusers layout; e.g. WEIGHTS/taesd, what `vedit edit` decodes the student with) for --decoder-weight.", exists=True, file_okay=False, show_default=False)] = None,
        decoder_weight: Annotated[float, typer.Option(help="Weight of |TAESD(x0_student) - VAE(x0_teacher)|^2 in pixels, in the one-step stage (0: none; above 0 needs --decoder).")] = S["decoder_weight"],
        source_column: Annotated[str | None, typer.Option(help="Source image column.", show_default=False)] = None,
        instruction_column: Annotated[str | None, typer.Option(help="Instruction column.", show_default=False)] = None,
        edited_column: Annotated[str | None, typer.Option(help="Edited image column.", show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the data order and of every per-sample draw.")] = T["seed"],
        resume: Annotated[bool, typer.Option(help="Continue each stage from its newest checkpoint.")] = T["resume"],
        num_workers: Annotated[int, typer.Option(help="Data-loading worker processes per training process.")] = T["num_workers"],
        cpu: Annotated[bool, typer.Option(help="Train on the CPU even when a GPU is there.")] = T["cpu"],
        overwrite: Annotated[bool, typer.Option(help="Replace an existing student folder.")] = S["overwrite"],
        as_json: JsonOutput = False,
        quiet: Quiet = False,
    ) -> None:
        """Distil MoViE's student (arXiv 2412.06578) from an InstructPix2Pix teacher: slim, one pass, one step."""
        quiet_libraries()
        from vedit_cli.train.recipes.movie_student import train_movie_student

        trainer = TrainerConfig(
            work_dir=work_dir, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
            learning_rate=learning_rate, lr_scheduler=lr_scheduler, lr_warmup_steps=lr_warmup_steps,
            mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
            checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, seed=seed, resume=resume,
            num_workers=num_workers, cpu=cpu,
        )
        config = MovieStudentConfig(
            teacher=teacher_dir, data=data, output_dir=out, trainer=trainer, architecture=architecture,
            stages=("mobile", "guidance", "onestep") if stage == "all" else (stage,), mobile_steps=mobile_steps,
            guidance_steps=guidance_steps, onestep_steps=onestep_steps, resolution=resolution,
            columns=TripletColumns(source_column, instruction_column, edited_column),
            text_scale_range=tuple(text_scale_range), image_scale_range=tuple(image_scale_range),
            teacher_steps=teacher_steps, trajectories=trajectories, noise_fraction=noise_fraction,
            onestep_prediction=onestep_prediction, distillation_weight=distillation_weight,
            adversarial_weight=adversarial_weight, decoder=decoder, decoder_weight=decoder_weight, overwrite=overwrite,
        )
        _run_training(train_movie_student, config, "movie-student", as_json, quiet)


# Trainer options shared by the recipe commands (defaults come from TrainerConfig at each use).
MaxSteps = Annotated[int, typer.Option(help="Optimizer steps.")]
BatchSize = Annotated[int, typer.Option(help="Samples per process per micro-step (global batch = batch x processes x accumulation).")]
AccumulationSteps = Annotated[int, typer.Option(help="Micro-steps per optimizer step.")]
LearningRate = Annotated[float, typer.Option(help="AdamW learning rate.")]
MixedPrecision = Annotated[Literal[MIXED_PRECISION], typer.Option(help="Autocast dtype (trained weights stay float32).")]
GradientCheckpointing = Annotated[bool, typer.Option(help="Recompute activations in backward: less memory, slower.")]
CheckpointEvery = Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps (and at the end).")]
Seed = Annotated[int, typer.Option(help="Seed of the data order and of every per-sample draw.")]
Resume = Annotated[bool, typer.Option(help="Continue from the newest checkpoint in the work folder.")]
Cpu = Annotated[bool, typer.Option(help="Train on the CPU even when a GPU is there.")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output folder (and the work folder's checkpoints).")]


def register_svdiff_memory(train_app: typer.Typer) -> None:
    from vedit_cli.train.config import SvdiffMemoryConfig, TrainerConfig

    T, S = _defaults(TrainerConfig), _defaults(SvdiffMemoryConfig)

    @train_app.command("svdiff-memory")
    def svdiff_memory(
        base_dir: Annotated[Path, typer.Option(help="Stable Diffusion folder (diffusers layout), frozen: WEIGHTS/sd15.", show_default=False)],
        videos: Annotated[Path, typer.Option(help="Clips: a clip, a folder of clips, or a CSV/JSONL manifest with columns input[,caption] (paths relative to it).", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Memory folder to write: WEIGHTS/svdiff-memory (`vedit edit --backend svdiff` picks it up).", show_default=False)],
        caption: Annotated[str | None, typer.Option(help="Caption of every clip without one (a manifest's caption column wins). To caption a folder clip by clip, write a CSV manifest input,caption.", show_default=False)] = None,
        work_dir: Annotated[Path | None, typer.Option(help="Checkpoints, log.jsonl and validation (default: OUT.training).", show_default=False)] = None,
        segment_frames: Annotated[int, typer.Option(help="Consecutive frames per training segment (the paper: 64); shorter clips are skipped and counted.")] = S["segment_frames"],
        clip_frames: Annotated[int, typer.Option(help="Frames per clip (the paper: 8): memory carried across clips, gradients cut at their boundaries.")] = S["clip_frames"],
        fps: Annotated[float | None, typer.Option(help="Take frames at about this rate (every round(native/fps)-th frame; slower clips at their own rate). Default: every frame.", show_default=False)] = None,
        lcm_lora: Annotated[Path | None, typer.Option(help="Fuse this LCM-LoRA (folder or .safetensors, e.g. WEIGHTS/lcm-lora-sdv1-5) into the frozen UNet; default: the base alone, as the paper.", show_default=False)] = None,
        resolution: Annotated[int, typer.Option(help="Training crop size in pixels (the paper: 512).")] = S["resolution"],
        caption_dropout: Annotated[float, typer.Option(help="Share of segments trained with the empty prompt (the unconditional memory of CFG).")] = S["caption_dropout"],
        max_steps: MaxSteps = T["max_steps"],
        batch_size: BatchSize = T["batch_size"],
        learning_rate: LearningRate = T["learning_rate"],
        gradient_accumulation_steps: AccumulationSteps = T["gradient_accumulation_steps"],
        mixed_precision: MixedPrecision = T["mixed_precision"],
        gradient_checkpointing: GradientCheckpointing = T["gradient_checkpointing"],
        checkpoint_every: CheckpointEvery = T["checkpoint_every"],
        resume: Resume = T["resume"],
        overwrite: Overwrite = S["overwrite"],
        seed: Seed = T["seed"],
        cpu: Cpu = T["cpu"],
        as_json: JsonOutput = False,
        quiet: Quiet = False,
    ) -> None:
        """Train SVDiff's spatial memory (arXiv 2405.19726) on long clips, Stable Diffusion frozen."""
        quiet_libraries()
        from vedit_cli.train.recipes.svdiff_memory import train_svdiff_memory

        trainer = TrainerConfig(
            work_dir=work_dir, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every, resume=resume,
            seed=seed, cpu=cpu,
        )
        config = SvdiffMemoryConfig(
            base=base_dir, data=videos, output_dir=out, trainer=trainer, lcm_lora=lcm_lora,
            segment_frames=segment_frames, clip_frames=clip_frames, fps=fps, caption=caption, resolution=resolution,
            caption_dropout=caption_dropout, overwrite=overwrite,
        )
        _run_training(train_svdiff_memory, config, "svdiff-memory", as_json, quiet)


def register_eve_lora(train_app: typer.Typer) -> None:
    from vedit_cli.train.config import EVE_LORA_TRAINER_DEFAULTS, EveLoraConfig, TrainerConfig

    T, E = {**_defaults(TrainerConfig), **EVE_LORA_TRAINER_DEFAULTS}, _defaults(EveLoraConfig)

    @train_app.command("eve-lora")
    def eve_lora(
        base_dir: Annotated[Path, typer.Option(help="The SD1.5 backbone (diffusers layout), frozen: WEIGHTS/sd15.", show_default=False)],
        controlnet_dir: Annotated[Path, typer.Option(help="The edit adapter, frozen: WEIGHTS/controlnet-ip2p.", show_default=False)],
        motion_adapter_dir: Annotated[Path, typer.Option(help="The video adapter, frozen: WEIGHTS/animatediff-motion-adapter.", show_default=False)],
        videos: Annotated[Path, typer.Option(help="Input clips: a clip, a folder, or a CSV/JSONL manifest input[,instruction,caption] (paths relative to it). Never edited outputs.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="LoRA folder to write: WEIGHTS/eve-lora (`vedit edit --backend eve` applies it).", show_default=False)],
        instructions: Annotated[Path | None, typer.Option(help="CSV/JSONL table instruction,caption applied to EVERY clip of --videos (no language model needed); an empty caption becomes the instruction.", show_default=False)] = None,
        work_dir: Annotated[Path | None, typer.Option(help="Checkpoints, log.jsonl and validation (default: OUT.training).", show_default=False)] = None,
        window_frames: Annotated[int, typer.Option(help="Consecutive frames per training window (the paper: 8).")] = E["window_frames"],
        k_steps: Annotated[int, typer.Option(help="Student DDIM steps, backpropagated through, one timestep per bin (the paper: 3).")] = E["k_steps"],
        resolution: Annotated[int, typer.Option(help="Training crop size in pixels (the paper: 512).")] = E["resolution"],
        lora_rank: Annotated[int, typer.Option(help="LoRA rank (not in the paper).")] = E["lora_rank"],
        lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale alpha/rank).")] = E["lora_alpha"],
        lora_target_modules: Annotated[str, typer.Option(help="Comma-separated layer names of the backbone (never its temporal layers).")] = ",".join(E["lora_target_modules"]),
        sds_weighting: Annotated[Literal[SDS_WEIGHTINGS], typer.Option(help="SDS c(t): sds = 1 - alpha_bar_t (DreamFusion), dmd = DMD's normalisation, uniform = 1.")] = E["sds_weighting"],
        edit_text_scale: Annotated[float, typer.Option(help="Text guidance of the edit teacher (backbone + ControlNet).")] = E["edit_text_scale"],
        video_text_scale: Annotated[float, typer.Option(help="Text guidance of the video teacher (backbone + AnimateDiff).")] = E["video_text_scale"],
        alpha: Annotated[float, typer.Option(help="Weight of the edit teacher's terms (the paper: 0.5).")] = E["alpha"],
        beta: Annotated[float, typer.Option(help="Weight of the video teacher's terms (the paper: 0.5).")] = E["beta"],
        sds_weight: Annotated[float, typer.Option(help="lambda, the SDS terms' weight beside the adversarial ones (the paper: 2.5).")] = E["sds_weight"],
        sds_only_steps: Annotated[int, typer.Option(help="Steps with SDS alone before the discriminators join (the paper: 1000 of 1500).")] = E["sds_only_steps"],
        teacher_steps: Annotated[int, typer.Option(help="DDIM steps of the teachers' samples the discriminators see as real.")] = E["teacher_steps"],
        discriminator_max_timestep: Annotated[int, typer.Option(help="The teacher-feature discriminators read real and fake latents noised at t ~ U[0, this) (dinov2 reads clean frames).")] = E["discriminator_max_timestep"],
        discriminator_features: Annotated[Literal[DISCRIMINATOR_FEATURES], typer.Option(help="The discriminators' frozen features: teacher = the frozen backbone's encoder on noised latents (no download); dinov2 = DINOv2 on clean decoded frames (needs --dinov2-dir).")] = E["discriminator_features"],
        dinov2_dir: Annotated[Path | None, typer.Option(help="DINOv2 folder for --discriminator-features dinov2: WEIGHTS/dinov2-base (`vedit download dinov2-base`).", show_default=False)] = None,
        max_steps: MaxSteps = T["max_steps"],
        batch_size: BatchSize = T["batch_size"],
        learning_rate: LearningRate = T["learning_rate"],
        gradient_accumulation_steps: AccumulationSteps = T["gradient_accumulation_steps"],
        mixed_precision: MixedPrecision = T["mixed_precision"],
        gradient_checkpointing: GradientCheckpointing = T["gradient_checkpointing"],
        checkpoint_every: CheckpointEvery = T["checkpoint_every"],
        resume: Resume = T["resume"],
        overwrite: Overwrite = E["overwrite"],
        seed: Seed = T["seed"],
        cpu: Cpu = T["cpu"],
        as_json: JsonOutput = False,
        quiet: Quiet = False,
    ) -> None:
        """Align EVE's adapters with a LoRA by Factorized Diffusion Distillation (arXiv 2403.09334), no edited data."""
        quiet_libraries()
        from vedit_cli.train.recipes.eve_lora import train_eve_lora

        trainer = TrainerConfig(
            work_dir=work_dir, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            lr_scheduler=T["lr_scheduler"], lr_warmup_steps=T["lr_warmup_steps"],
            gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every, resume=resume,
            seed=seed, cpu=cpu,
        )
        targets = tuple(name.strip() for name in lora_target_modules.split(",") if name.strip())
        config = EveLoraConfig(
            base=base_dir, controlnet=controlnet_dir, motion_adapter=motion_adapter_dir, data=videos,
            instructions=instructions, output_dir=out, trainer=trainer, window_frames=window_frames, k_steps=k_steps,
            resolution=resolution, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_target_modules=targets,
            sds_weighting=sds_weighting, edit_text_scale=edit_text_scale, video_text_scale=video_text_scale,
            alpha=alpha, beta=beta, sds_weight=sds_weight, sds_only_steps=sds_only_steps, teacher_steps=teacher_steps,
            discriminator_max_timestep=discriminator_max_timestep, discriminator_features=discriminator_features,
            dinov2=dinov2_dir, overwrite=overwrite,
        )
        _run_training(train_eve_lora, config, "eve-lora", as_json, quiet)


def _run_training(train, config, name: str, as_json: bool, quiet: bool) -> None:
    """`train(config, progress=...)` with the progress bar, then the summary, both on the main process only."""
    main_process = int(os.environ.get("RANK", "0")) == 0
    with TrainingProgress(stderr_console(quiet or as_json or not main_process), name) as progress:
        output = train(config, progress=progress)
    if main_process:
        _report({**progress.summary, "output": str(output)}, as_json, quiet)


class TrainingProgress:
    """The command's rich progress bar and its record of the run's events (the trainer calls it on rank 0)."""

    def __init__(self, console, name: str = "pix2pix"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console, self.summary, self.name = console, {}, name
        self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.task is not None:  # the bar starts with the run, so an early error prints only its line
            self.bar.stop()
        return False

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            self.summary.update(start_step=event["step"], processes=event["processes"],
                                global_batch=event["global_batch"], samples=event["samples"])
            if self.task is None:
                self.bar.start()
            else:  # the next stage of a multi-stage recipe
                self.bar.remove_task(self.task)
            stage = event.get("stage", self.name)
            self.task = self.bar.add_task(stage, total=event["max_steps"], completed=event["step"], loss="-")
            if event["resumed"]:
                self.console.print(f"{stage}: resuming at step {event['step']}")
        elif kind == "step":
            self.summary.update(loss=event["loss"], skipped_samples=event["skipped_samples"])
            self.bar.update(self.task, completed=event["step"], loss=f"{event['loss']:.4f}")
        elif kind == "data":  # a recipe's report on its clips before training starts
            self.summary["data"] = {key: event[key] for key in ("clips", "segments", "too_short", "unreadable")}
            rate = f" at {event['fps']:g} fps" if event.get("fps") else ""
            self.console.print(f"{self.name}: {event['segments']} segments of {event['segment_frames']} frames{rate} "
                               f"from {event['clips']} clip(s); skipped {event['too_short']} shorter clip(s) and "
                               f"{event['unreadable']} unreadable", soft_wrap=True, markup=False)
        elif kind == "skipped":
            self.console.print(f"skipped {event['sample']}", soft_wrap=True, markup=False)
        elif kind == "checkpoint":
            self.summary["checkpoint"] = event["path"]
        elif kind == "end":
            self.summary.update(output=event["output"], steps=event["step"], seconds=event["seconds"],
                                skipped_samples=event["skipped_samples"], rank_digests=event["rank_digests"])
            if "stage" in event:
                self.summary.setdefault("stages", {})[event["stage"]] = {
                    "steps": event["step"], "seconds": event["seconds"], "loss": self.summary.get("loss")}


def _report(summary: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        print_json(summary)
    elif not quiet and "stages" in summary:
        stages = "; ".join(f"{name} to step {info['steps']} in {info['seconds']:.1f} s (loss {info['loss']:.4f})"
                           for name, info in summary["stages"].items())
        typer.echo(f"trained {stages}; {summary['skipped_samples']} bad sample(s) skipped in the last stage; "
                   f"wrote {summary['output']}", err=True)
    elif not quiet:
        typer.echo(f"trained {summary['steps'] - summary['start_step']} steps (to step {summary['steps']}, "
                   f"global batch {summary['global_batch']}, {summary['processes']} process(es)) in "
                   f"{summary['seconds']:.1f} s; final loss {summary.get('loss', float('nan')):.4f}; "
                   f"{summary['skipped_samples']} bad sample(s) skipped; wrote {summary['output']}", err=True)
