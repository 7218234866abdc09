"""The training configs (pure dataclasses, no torch import: the CLI reads their defaults).

TrainerConfig is how to train (any recipe); Pix2PixConfig is what `vedit train pix2pix` trains (see
vedit_cli.train.recipes.pix2pix for every field); TripletColumns names the columns of triplet tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vedit_cli.errors import ConfigError

MIXED_PRECISION = ("no", "fp16", "bf16")
# diffusers.optimization.SchedulerType's values (listed here: importing diffusers costs seconds at CLI start)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "piecewise_constant")


@dataclass(frozen=True)
class TrainerConfig:
    """How to train (what to train is the recipe's). batch_size is per process and per micro-step."""

    work_dir: Path | None = None  # checkpoints/, log.jsonl, validation/ (recipes fill in their default)
    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # any diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema_decay: float | None = None  # None: no EMA
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 0  # 0: never
    seed: int = 0
    shuffle: bool = True
    resume: bool = False  # continue from the newest checkpoint in work_dir/checkpoints (none: start at step 0)
    num_workers: int = 0  # DataLoader worker processes per training process
    cpu: bool = False  # train on the CPU even when a GPU is there
    tensorboard: bool = False  # also log to work_dir/tensorboard (needs `pip install tensorboard`)

    def check(self) -> None:
        if self.work_dir is None:
            raise ConfigError("a training run needs a work folder (--work-dir) for its checkpoints and log")
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, "
                              f"got {self.mixed_precision!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be between 0 and 1, got {self.ema_decay}")


@dataclass(frozen=True)
class TripletColumns:
    """Column names; None takes the format's default: parquet PARQUET_COLUMNS (timbrooks/instructpix2pix-clip-
    filtered; fusing/instructpix2pix-1000-samples needs source="input_image"), tables TABLE_COLUMNS."""

    source: str | None = None
    instruction: str | None = None
    edited: str | None = None

    def resolved(self, defaults: "TripletColumns") -> "TripletColumns":
        return TripletColumns(self.source or defaults.source, self.instruction or defaults.instruction,
                              self.edited or defaults.edited)



@dataclass(frozen=True)
class Pix2PixConfig:
    base: Path
    data: Any
    output_dir: Path
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    unet_config: dict | None = None
    columns: TripletColumns = field(default_factory=TripletColumns)
    resolution: int = 256
    random_resize: float = 1.125
    random_flip: bool = True
    conditioning_dropout: float = 0.05
    validation_data: Any = None
    validation_count: int = 4
    validation_steps: int = 10
    overwrite: bool = False
    snr_gamma: float | None = None
    cache_latents: bool = False

    def work_dir(self) -> Path:
        return Path(self.trainer.work_dir or Path(self.output_dir).with_name(Path(self.output_dir).name + ".training"))



STUDENT_STAGES = ("mobile", "guidance", "onestep")
ONESTEP_PREDICTIONS = ("auto", "sample", "v_prediction")


@dataclass(frozen=True)
class MovieStudentConfig:
    """`vedit train movie-student` (see vedit_cli.train.recipes.movie_student for every field)."""

    teacher: Path
    data: Any
    output_dir: Path
    stages: tuple[str, ...] = STUDENT_STAGES
    architecture: str = "mobile"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mobile_steps: int = 2000
    guidance_steps: int = 4000
    onestep_steps: int = 4000
    columns: TripletColumns = field(default_factory=TripletColumns)
    resolution: int = 256
    random_resize: float = 1.0
    random_flip: bool = True
    text_scale_range: tuple[float, float] = (1.0, 12.0)
    image_scale_range: tuple[float, float] = (1.0, 2.0)
    teacher_steps: int = 10
    trajectories: int = 4096
    noise_fraction: float = 0.5
    # the one-step student's output: "auto" = the teacher's own v where the teacher predicts v (x0 = a x_t - s v, so
    # stage 3 starts from the stage-2 student's one-step estimate), else the clean latent ("sample")
    onestep_prediction: str = "auto"
    distillation_weight: float = 1.0
    adversarial_weight: float = 0.1
    discriminator_max_timestep: int = 750
    decoder: Path | None = None  # a TAESD folder (AutoencoderTiny, diffusers layout) for the decoder term
    decoder_weight: float = 0.0  # weight of |TAESD(x0_student) - VAE(x0_teacher)|^2 in pixels (0: no decoder term)
    overwrite: bool = False

    def work_dir(self) -> Path:
        return Path(self.trainer.work_dir or Path(self.output_dir).with_name(Path(self.output_dir).name + ".training"))

    def stage_steps(self, stage: str) -> int:
        return {"mobile": self.mobile_steps, "guidance": self.guidance_steps, "onestep": self.onestep_steps}[stage]

    def check(self) -> None:
        from vedit_cli.models.student_architecture import ARCHITECTURES

        if not self.stages or any(stage not in STUDENT_STAGES for stage in self.stages):
            raise ConfigError(f"--stage must be one of {', '.join(STUDENT_STAGES)} or all, got {self.stages}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        for name, (low, high) in (("text", self.text_scale_range), ("image", self.image_scale_range)):
            if not 0 <= low <= high:
                raise ConfigError(f"--{name}-scale-range must be LOW HIGH with 0 <= LOW <= HIGH, got {low} {high}")
        if self.onestep_prediction not in ONESTEP_PREDICTIONS:
            raise ConfigError(f"--onestep-prediction must be one of {', '.join(ONESTEP_PREDICTIONS)}, got "
                              f"{self.onestep_prediction!r}")
        if not 0 <= self.noise_fraction <= 1:
            raise ConfigError(f"--noise-fraction must be between 0 and 1, got {self.noise_fraction}")
        if self.teacher_steps < 1 or self.trajectories < 1:
            raise ConfigError("--teacher-steps and --trajectories must be at least 1")
        if self.distillation_weight < 0 or self.adversarial_weight < 0:
            raise ConfigError("--distillation-weight and --adversarial-weight must not be negative")
        if self.decoder_weight < 0 or (self.decoder_weight > 0) != (self.decoder is not None):
            raise ConfigError("--decoder (a TAESD folder) and --decoder-weight above 0 go together")
        if self.distillation_weight == 0 and self.adversarial_weight == 0 and self.decoder_weight == 0:
            raise ConfigError("the one-step stage needs a loss: --distillation-weight, --adversarial-weight or "
                              "--decoder-weight above 0")


@dataclass(frozen=True)
class SdRecipeConfig:
    """What every Stable Diffusion-side recipe shares (text-to-image base, LCM-LoRA, ControlNet, motion adapter):
    `base` is a Stable Diffusion folder in diffusers layout, `data` a sample source, `output_dir` the folder written
    at the end; the trainer's work_dir defaults to `<output_dir>.training`."""

    base: Path
    data: Any
    output_dir: Path
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resolution: int = 512
    caption_dropout: float = 0.1  # the share of samples trained with the empty prompt (classifier-free guidance)
    random_flip: bool = True
    overwrite: bool = False

    def work_dir(self) -> Path:
        return Path(self.trainer.work_dir or Path(self.output_dir).with_name(Path(self.output_dir).name + ".training"))

    def check(self) -> None:
        if not 0 <= self.caption_dropout <= 1:
            raise ConfigError(f"--caption-dropout must be between 0 and 1, got {self.caption_dropout}")
        if self.resolution < 8 or self.resolution % 8:
            raise ConfigError(f"--resolution must be a multiple of 8, got {self.resolution}")


@dataclass(frozen=True)
class TextToImageConfig(SdRecipeConfig):
    """The text-to-image base (vedit_cli.train.recipes.text_to_image); unet_config: a new random UNet's config
    (UNet2DConditionModel(**unet_config)) instead of fine-tuning the base's."""

    unet_config: dict | None = None


@dataclass(frozen=True)
class ControlNetConfig(SdRecipeConfig):
    """The instruction ControlNet (vedit_cli.train.recipes.controlnet): hint = source image, prompt = instruction,
    target = edited image; conditioning_channels: the hint embedding's widths (its length - 1 = log2 of the VAE's
    downsampling factor; SD1.5's ControlNets use (16, 32, 96, 256) for factor 8)."""

    conditioning_channels: tuple[int, ...] | None = None
    caption_dropout: float = 0.5  # lllyasviel's ControlNet training drops half the prompts


# diffusers' examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py --lora_target_modules default
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


@dataclass(frozen=True)
class LcmLoraConfig(SdRecipeConfig):
    """Latent consistency distillation of the base into a LoRA (vedit_cli.train.recipes.lcm_lora; Luo et al.,
    arXiv 2310.04378 and 2311.05556): guidance scale w ~ U[guidance_range], a DDIM skipping-step solver on a grid of
    `ddim_timesteps`, the consistency loss against a target whose LoRA is the EMA (ema_decay) of the online one."""

    lora_rank: int = 64
    lora_alpha: int = 64
    lora_target_modules: tuple[str, ...] = LCM_LORA_TARGETS
    guidance_range: tuple[float, float] = (3.0, 15.0)
    ddim_timesteps: int = 50
    ema_decay: float = 0.95
    loss_type: str = "huber"  # huber | l2
    huber_c: float = 0.001
    timestep_scaling: float = 10.0
    caption_dropout: float = 0.0


@dataclass(frozen=True)
class MotionAdapterConfig(SdRecipeConfig):
    """An AnimateDiff motion adapter trained on consecutive frames with the base frozen
    (vedit_cli.train.recipes.motion_adapter; Guo et al., arXiv 2307.04725): `frames` per sequence, the adapter's
    position table `motion_max_seq_length` long (it must cover the windows eve uses plus its anchor frame)."""

    frames: int = 16
    motion_max_seq_length: int = 32
    motion_layers_per_block: int | None = None  # None: the base UNet's layers_per_block
    motion_num_attention_heads: int = 8


@dataclass(frozen=True)
class SvdiffMemoryConfig(SdRecipeConfig):
    """SVDiff's memory trained segment by segment on long clips (vedit_cli.train.recipes.svdiff_memory; Chen et al.,
    arXiv 2405.19726, sec. 4.3): the frozen base (optionally with the LCM-LoRA fused), only the memory attention
    trains; segments of `segment_frames` consecutive frames (at `fps`, None: the clip's own rate) split into clips of
    `clip_frames`, the memory carried from clip to clip. `data`: a folder, manifest or sample source of clips;
    `caption`: the caption of every clip whose data has none."""

    lcm_lora: Path | None = None  # None: train on the base alone (the paper)
    segment_frames: int = 64
    clip_frames: int = 8
    fps: float | None = None
    caption: str | None = None
    memory_height: int = 8
    memory_width: int = 8
    caption_dropout: float = 0.1


# EVE's alignment LoRA (vedit_cli.train.recipes.eve_lora): the paper's schedule (arXiv 2403.09334, sec. 4.0.4), used
# as the CLI's defaults for these trainer options: 1,500 iterations at a fixed 1e-5 without warm-up, batch 64 (global;
# here 1 per process: reach 64 with processes x --gradient-accumulation-steps).
EVE_LORA_TRAINER_DEFAULTS = dict(max_steps=1500, learning_rate=1e-5, batch_size=1, lr_scheduler="constant",
                                 lr_warmup_steps=0)
EVE_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the backbone's attention projections, never temporal ones
SDS_WEIGHTINGS = ("sds", "dmd", "uniform")
DISCRIMINATOR_FEATURES = ("teacher", "dinov2")  # the frozen base UNet's encoder, or DINOv2 on decoded frames


@dataclass(frozen=True)
class EveLoraConfig(SdRecipeConfig):
    """Factorized Diffusion Distillation of EVE's alignment LoRA (vedit_cli.train.recipes.eve_lora; Singer et al.,
    arXiv 2403.09334, sec. 3.2-3.3). `base` the SD1.5 backbone, `controlnet` the edit adapter (ip2p ControlNet),
    `motion_adapter` the video adapter (AnimateDiff), all frozen; `data` clips (a clip, a folder, a CSV/JSONL manifest
    input[,instruction,caption]) or a sample source; `instructions` a CSV/JSONL table instruction,caption crossed
    with every clip of `data`.

    Paper values: k = 3 student steps (K-bin sampling), 8-frame windows at 512x512, alpha = beta = 0.5, lambda = 2.5
    (from ADD), the first 1,000 of 1,500 iterations SDS only. Not in the paper, our choices: LoRA rank/alpha/targets,
    the SDS weighting c(t) ("sds": w(t) = 1 - alpha_bar_t, DreamFusion's; "dmd": DMD's per-sample normalisation of
    x0 - x0_teacher; "uniform": 1), the SDS timestep range (DreamFusion's 0.02T..0.98T), the teachers' text guidance
    scales (7.5, eve's inference default), the teachers' DDIM steps for the discriminators' real samples, the
    discriminators' noise range (as movie-student's). The frame-0 anchor eve uses at inference is NOT used in training
    (`anchor_first_frame`): every window frame is the student's own. The discriminators' frozen features
    (`discriminator_features`): "teacher", the frozen base UNet's encoder on noised latents (no download), or
    "dinov2", DINOv2 (the folder `dinov2`, registry entry dinov2-base) on clean frames decoded by the VAE."""

    controlnet: Path | None = None
    motion_adapter: Path | None = None
    instructions: Path | None = None
    window_frames: int = 8
    k_steps: int = 3
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_target_modules: tuple[str, ...] = EVE_LORA_TARGETS
    sds_weighting: str = "sds"
    sds_timestep_range: tuple[int, int] = (20, 980)
    edit_text_scale: float = 7.5
    video_text_scale: float = 7.5
    student_text_scale: float = 1.0  # 1: the student generates with one conditional pass (no CFG in training)
    controlnet_scale: float = 1.0
    alpha: float = 0.5
    beta: float = 0.5
    sds_weight: float = 2.5  # lambda
    sds_only_steps: int = 1000
    teacher_steps: int = 10
    discriminator_max_timestep: int = 750
    discriminator_features: str = "teacher"  # "teacher" | "dinov2" (dino_discriminator.py: needs `dinov2`)
    dinov2: Path | None = None  # the DINOv2 folder (registry entry dinov2-base) for discriminator_features "dinov2"
    caption_dropout: float = 0.0
    anchor_first_frame: ClassVar[bool] = False

    def check(self) -> None:
        super().check()
        if self.controlnet is None or self.motion_adapter is None:
            raise ConfigError("eve-lora needs --controlnet-dir (the edit adapter) and --motion-adapter-dir (the video "
                              "adapter)")
        counts = {"window_frames": self.window_frames, "k_steps": self.k_steps, "lora_rank": self.lora_rank,
                  "teacher_steps": self.teacher_steps, "discriminator_max_timestep": self.discriminator_max_timestep}
        for name, value in counts.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.sds_weighting not in SDS_WEIGHTINGS:
            raise ConfigError(f"--sds-weighting must be one of {', '.join(SDS_WEIGHTINGS)}, got {self.sds_weighting!r}")
        low, high = self.sds_timestep_range
        if not 0 <= low <= high:
            raise ConfigError(f"--sds-timestep-range must be LOW HIGH with 0 <= LOW <= HIGH, got {low} {high}")
        weights = {"alpha": self.alpha, "beta": self.beta, "sds_weight": self.sds_weight,
                   "edit_text_scale": self.edit_text_scale, "video_text_scale": self.video_text_scale,
                   "student_text_scale": self.student_text_scale, "sds_only_steps": self.sds_only_steps}
        for name, value in weights.items():
            if value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {value}")
        if not self.lora_target_modules:
            raise ConfigError("--lora-target-modules names no layer")
        self.check_discriminator_features()

    def check_discriminator_features(self) -> None:
        if self.discriminator_features not in DISCRIMINATOR_FEATURES:
            raise ConfigError(f"--discriminator-features must be one of {', '.join(DISCRIMINATOR_FEATURES)}, got "
                              f"{self.discriminator_features!r}")
        if self.discriminator_features == "dinov2" and self.dinov2 is None:
            raise ConfigError("--discriminator-features dinov2 needs --dinov2-dir (e.g. `vedit download dinov2-base`, "
                              "then --dinov2-dir WEIGHTS/dinov2-base)")
