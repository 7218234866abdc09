"""The training configs (pure dataclasses, no torch import: the CLI reads their defaults).

TrainerConfig is how to train (any recipe); Pix2PixConfig is what `vedit train pix2pix` trains (see
vedit_cli.train.recipes.pix2pix for every field); TripletColumns names the columns of triplet tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def work_dir(self) -> Path:
        return Path(self.trainer.work_dir or Path(self.output_dir).with_name(Path(self.output_dir).name + ".training"))



STUDENT_STAGES = ("mobile", "guidance", "onestep")


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
    distillation_weight: float = 1.0
    adversarial_weight: float = 0.1
    discriminator_max_timestep: int = 750
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
        if not 0 <= self.noise_fraction <= 1:
            raise ConfigError(f"--noise-fraction must be between 0 and 1, got {self.noise_fraction}")
        if self.teacher_steps < 1 or self.trajectories < 1:
            raise ConfigError("--teacher-steps and --trajectories must be at least 1")
        if self.distillation_weight < 0 or self.adversarial_weight < 0:
            raise ConfigError("--distillation-weight and --adversarial-weight must not be negative")
        if self.distillation_weight == 0 and self.adversarial_weight == 0:
            raise ConfigError("the one-step stage needs a loss: --distillation-weight or --adversarial-weight above 0")


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
