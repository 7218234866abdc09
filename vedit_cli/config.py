"""Frozen configuration dataclasses: the only home of defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from vedit_cli.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
VAE_CHOICES = ("auto", "full", "tiny")
MOVIE_MODES = ("auto", "teacher", "student")
OUTPUT_SIZES = ("source", "processing")  # source: the input's display size; processing: the model's size
SVDIFF_INITS = ("inversion", "noise")  # how svdiff reaches its start timestep (backends/svdiff/sampling.py)
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")  # diffusers schedulers' timestep_spacing


@dataclass(frozen=True)
class SamplingDefaults:
    """What a backend (and mode) runs when the user does not say: the one table of per-backend defaults."""

    steps: int
    guidance_scale: float  # text guidance
    spacing: str | None  # timestep spacing: None = the checkpoint's scheduler config; "trailing" starts at the
    # last training timestep, from pure noise (one- and few-step samplers: LCM, SD-Turbo, the MoViE student)


# movie teacher: InstructPix2Pix's recipe (MoViE Table 1: 10 steps); student: 1 step from pure noise (trailing);
# eve: AnimateDiff + ControlNet DDIM from pure noise, so trailing (the first step at the last training timestep,
# Lin et al. arXiv 2305.08891; SD1.5's stored "leading" starts at 951 of 999 with 20 steps); svdiff: LCM-LoRA,
# 3 steps (SVDiff sec. 5.1), low guidance (LCM is distilled for 1-2; 7.5 oversaturates).
BACKEND_DEFAULTS: dict[str, SamplingDefaults] = {
    "movie:teacher": SamplingDefaults(steps=10, guidance_scale=7.5, spacing=None),
    "movie:student": SamplingDefaults(steps=1, guidance_scale=7.5, spacing="trailing"),
    "eve": SamplingDefaults(steps=20, guidance_scale=7.5, spacing="trailing"),
    "svdiff": SamplingDefaults(steps=3, guidance_scale=1.5, spacing=None),
}


@dataclass(frozen=True)
class TrainedSchedule:
    """How a distilled model was trained to be sampled (stored in its weights' metadata, used at inference)."""

    steps: int
    spacing: str
    prediction_type: str = "epsilon"  # what the UNet outputs: epsilon, v_prediction, or sample (the clean latent)


def sampling_defaults(backend: str, mode: str | None = None) -> SamplingDefaults | None:
    """The defaults row of `backend` (in `mode` where it has modes); None for backends without a model."""
    return BACKEND_DEFAULTS.get(f"{backend}:{mode}" if mode else backend)


@dataclass(frozen=True)
class ModelConfig:
    """What every backend shares: sampling options with the same names across backends."""

    backend: str = "movie"
    steps: int | None = None  # None: the backend's default (BACKEND_DEFAULTS), filled in by settings.resolve_run
    guidance_scale: float | None = None  # text guidance; None: the backend's default (BACKEND_DEFAULTS)
    image_guidance_scale: float = 1.5
    seed: int = 0
    size: int = 512  # short side of the processing size, in pixels
    device: str = "auto"
    dtype: str = "auto"
    vae: str = "auto"  # movie: auto = full VAE for the teacher, TAESD for the student
    movie_mode: str = "auto"  # auto = student when its weights are present, else teacher
    anchor: bool = False  # movie: cross-frame attention to the anchor frame
    keyframe_interval: int = 0  # movie anchor: 0 = the first frame anchors the whole clip
    caption: str | None = None  # eve: output caption for the backbone; None = the instruction
    controlnet_scale: float = 1.0  # eve
    lora_scale: float = 1.0  # eve: alignment LoRA strength; svdiff: LCM-LoRA strength (0: the base alone)
    strength: float = 0.5  # svdiff: the start timestep, as a fraction of the schedule (0 < s <= 1)
    svdiff_init: str = "inversion"  # svdiff: DDIM inversion to the start timestep (SVDiff), or "noise" (img2img)
    timestep_spacing: str | None = None  # movie, eve: linspace, leading or trailing (None: the backend's default)
    window: int = 16  # eve: frames per temporal window
    overlap: int = 4  # eve: frames shared by neighbouring windows
    chunk_windows: int = 4  # eve: windows denoised together, latents blended every step (bounds memory)
    weights_dir: Path | None = None
    allow_download: bool = False  # --download / VEDIT_ALLOW_DOWNLOAD=1: fetch missing weights (weights.hub.ensure_entries)

    def validate(self) -> "ModelConfig":
        """Check ranges up front; every message says what was given and what is expected."""
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.size < 64 or self.size > 4096:
            raise ConfigError(f"--size must be between 64 and 4096 pixels, got {self.size}")
        if (self.guidance_scale or 0) < 0 or self.image_guidance_scale < 0:
            raise ConfigError("--guidance-scale and --image-guidance-scale must be >= 0")
        if not 0 < self.strength <= 1:
            raise ConfigError(f"--strength must be in (0, 1], got {self.strength}")
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--dtype", self.dtype, DTYPES)
        _check_choice("--vae", self.vae, VAE_CHOICES)
        _check_choice("--movie-mode", self.movie_mode, MOVIE_MODES)
        _check_choice("--svdiff-init", self.svdiff_init, SVDIFF_INITS)
        if self.timestep_spacing is not None:
            _check_choice("--timestep-spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ConfigError(f"--overlap must be in [0, --window), got window={self.window} overlap={self.overlap}")
        if self.chunk_windows < 1:
            raise ConfigError(f"--chunk-windows must be at least 1, got {self.chunk_windows}")
        return self


@dataclass(frozen=True)
class EncodeConfig:
    """How outputs are encoded."""

    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    pixel_format: str = "yuv420p"
    keep_odd_size: bool = False  # odd sizes: False crops the last row/column (4:2:0, plays everywhere); True: 4:4:4

    def validate(self) -> "EncodeConfig":
        if not 0 <= self.crf <= 63:
            raise ConfigError(f"--crf must be between 0 and 63, got {self.crf}")
        return self


@dataclass(frozen=True)
class EditConfig:
    """One `vedit edit` invocation: model, encoding, and batch behaviour."""

    model: ModelConfig = field(default_factory=ModelConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    output_size: str = "source"  # "source": the source's display size; "processing": the model's size
    overwrite: bool = False
    queue_frames: int = 8  # bound of each runner queue, in frames (absorbs jitter; memory grows with it)

    def validate(self) -> "EditConfig":
        self.model.validate()
        self.encode.validate()
        _check_choice("--output-size", self.output_size, OUTPUT_SIZES)
        return self

    def with_model(self, **changes) -> "EditConfig":
        return replace(self, model=replace(self.model, **changes))


@dataclass(frozen=True)
class EvaluateConfig:
    """One `vedit evaluate` run: which metrics, how frames reach CLIP, where the weights are."""

    metrics: tuple[str, ...] | None = None  # None: every metric whose inputs are given (see vedit_cli.metrics.names)
    frame_size: int = 480  # TGVE's run_eval.py resizes every frame to 480x480 before the CLIP processor
    batch_size: int = 16  # frames per CLIP forward
    device: str = "auto"
    weights_dir: Path | None = None

    def validate(self) -> "EvaluateConfig":
        if self.frame_size < 32 or self.batch_size < 1:
            raise ConfigError(f"--frame-size must be >= 32 and --batch-size >= 1, got {self.frame_size}, {self.batch_size}")
        _check_choice("--device", self.device, DEVICES)
        return self


@dataclass(frozen=True)
class BenchmarkConfig:
    """One `vedit benchmark` run: which rows, at what size, how many frames and repeats."""

    backends: tuple[str, ...] = ()  # empty: every backend that can be built (name or name:mode, e.g. movie:student)
    size: int | None = None  # frames are size x size; None: 256 on CPU, 512 on a GPU
    frames: int = 2  # frames per clip (the prompt is encoded once per clip)
    repeats: int = 3  # timed clips after the warm-up; min/median/max over them
    warmup: int = 1  # untimed frames first
    device: str = "auto"
    dtype: str = "auto"  # auto: as `vedit edit` (float16 on GPU, bfloat16 on CPU)
    random_weights: bool = False  # real-size architectures with random weights: no download needed
    flops_only: bool = False  # meta-device FLOP counts only: no timing, seconds even at 480x480
    reference: bool = True  # add the diffusers InstructPix2Pix row (10 steps x 3 passes, full VAE)
    reference_steps: int = 10  # MoViE Table 1's base recipe
    prompt: str = "make it Van Gogh"
    seed: int = 0
    threshold: float = 0.1  # --compare: relative change that counts as a regression
    weights_dir: Path | None = None

    def validate(self) -> "BenchmarkConfig":
        if self.size is not None and not 64 <= self.size <= 4096:
            raise ConfigError(f"--size must be between 64 and 4096 pixels, got {self.size}")
        if self.frames < 1 or self.repeats < 1 or self.warmup < 0 or self.reference_steps < 1:
            raise ConfigError(f"need --frames >= 1, --repeats >= 1, --warmup >= 0, --reference-steps >= 1; got "
                              f"{self.frames}, {self.repeats}, {self.warmup}, {self.reference_steps}")
        if not 0 < self.threshold < 10:
            raise ConfigError(f"--threshold is a relative change such as 0.1 (10%), got {self.threshold}")
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--dtype", self.dtype, DTYPES)
        return self


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")
