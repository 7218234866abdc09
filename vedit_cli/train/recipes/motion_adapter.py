"""Training an AnimateDiff motion adapter (Guo et al., arXiv 2307.04725) on consecutive frames, with the Stable
Diffusion base frozen: `train_motion_adapter(config)`.

The model is diffusers' UNetMotionModel.from_unet2d(base UNet, new MotionAdapter); only its motion modules (the
temporal transformers after every resnet/attention pair) train, and the output is that MotionAdapter as a folder
(config.json + diffusion_pytorch_model.safetensors), which eve loads with `MotionAdapter.from_pretrained(folder)`
and `UNetMotionModel.from_unet2d(unet2d, adapter)` (vedit_cli.backends.eve.components.motion_unet).

Choices:
- The adapter's shape comes from the base: its block widths; one motion layer per resnet (`motion_layers_per_block`
  must equal the base's `layers_per_block`: from_unet2d refuses anything else); the base's `norm_num_groups` for
  the temporal GroupNorms (UNetMotionModel builds its motion modules with the base's groups, so the saved adapter
  says the same); a motion mid block, as v1-5-2 has; heads and the position table from the config.
- The temporal transformers' output projections start at zero (AnimateDiff's `zero_initialize: true`; diffusers'
  MotionAdapter does not do it), so the untrained motion UNet is the image model applied frame by frame.
- One timestep per sequence (as AnimateDiff), noise drawn independently for every frame (FrozenSD.noised draws one
  tensor of [C, T, h, w] per sample), the VAE posterior sampled per frame, caption dropout per sequence; the loss is
  the noise-prediction MSE (v-prediction when the base's schedule says so) over the whole sequence. The schedule is
  the base's stored one (sd_parts; eve samples on it too), where AnimateDiff's yaml trains on "linear" betas.
- Latents are laid out [B, C, T, h, w] (AnimateDiffPipeline's layout); the text embeddings are repeated per frame
  to [B*T, L, D], as AnimateDiffPipeline does (UNetMotionModel.forward repeats the time embedding, not the text).
- A sequence is `config.frames` consecutive frames from a random start (drawn from the sample seed), all frames
  flipped together.

Data: any object with `__len__`, `load(index) -> {"frames": uint8 [T, H, W, 3] (or a list of frames) with
T >= config.frames, "caption": str}` and `describe(index) -> str`; shorter sequences are skipped (BadSample).

Real scale (AnimateDiff's configs/training/v1/training.yaml): WebVid-10M clips, 256x256, 16 frames sampled every
4th frame, learning rate 1e-4, batch 4 per GPU, mixed precision, motion modules only, temporal position table 24
(v1) or 32 (v2/v3, the later yaml's comments; v2 adds the mid block). Its max_train_steps (100) is a demo value and
the repository does not publish the step or GPU count; v1-5-2 (mm_sd_v15_v2, 453 M parameters: this module's
adapter at the SD1.5 widths has 453.2 M) was "trained on larger resolution & batch size" (the README).
Cost, an estimate: FLOPs counted with torch's FlopCounterMode on meta-device SD1.5 + v1-5-2 shapes give, per
16-frame 256x256 clip, 9.3 TFLOP for the motion UNet's forward + backward and 4.4 TFLOP for the VAE encoding,
~13.7 TFLOP in all; at an assumed 40% of an A100's 312 bf16 TFLOP/s that is ~0.11 s a clip, so one pass over
WebVid-10M's ~10.7 M clips is ~330 A100-hours (~1 A100-hour per 10k clips), a third less with cached latents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError
from vedit_cli.train.config import MotionAdapterConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.sd_parts import (
    FrozenSD,
    image_tensor,
    load_sd_unet,
    per_sample_mse,
    run_recipe,
    write_folder,
)
from vedit_cli.train.trainer import Progress

MOTION_MODULES = "motion_modules"  # the name every trained parameter's path holds
VALIDATION_STEPS = 25
VALIDATION_VIDEOS = 2


def train_motion_adapter(config: MotionAdapterConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and write the MotionAdapter folder; returns config.output_dir."""
    check_frames(config)
    return run_recipe(config, MotionAdapterRecipe, "config.json", progress)


def check_frames(config: MotionAdapterConfig) -> None:
    if config.frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {config.frames}")
    if config.frames > config.motion_max_seq_length:
        raise ConfigError(f"--frames ({config.frames}) must not exceed --motion-max-seq-length "
                          f"({config.motion_max_seq_length}): the adapter has no position beyond its table")
    if config.motion_num_attention_heads < 1:
        raise ConfigError(f"--motion-num-attention-heads must be at least 1, got {config.motion_num_attention_heads}")


def adapter_config(unet_config, config: MotionAdapterConfig) -> dict:
    """A MotionAdapter config shaped by the base UNet: its widths, its layers per block, its norm groups."""
    widths = tuple(unet_config["block_out_channels"])
    layers = unet_config["layers_per_block"]
    layers = layers if isinstance(layers, int) else tuple(layers)
    wanted = config.motion_layers_per_block
    if wanted is not None and wanted != layers:
        raise ConfigError(f"--motion-layers-per-block {wanted} does not fit the base UNet, which has {layers} "
                          "layers per block (diffusers' UNetMotionModel needs one motion layer per resnet)")
    heads = config.motion_num_attention_heads
    if any(width % heads for width in widths):
        raise ConfigError(f"--motion-num-attention-heads {heads} must divide every block width of the base {widths}")
    return {"block_out_channels": widths, "motion_layers_per_block": layers, "motion_num_attention_heads": heads,
            "motion_norm_num_groups": unet_config["norm_num_groups"], "use_motion_mid_block": True,
            "motion_max_seq_length": config.motion_max_seq_length}


def new_motion_adapter(config: dict, seed: int):
    """A MotionAdapter with seeded random weights and zero output projections (AnimateDiff's zero_initialize)."""
    from diffusers import MotionAdapter
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(**config)
    for module in adapter.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    return adapter


def motion_model(base_unet, adapter):
    """UNetMotionModel over `base_unet` with `adapter`'s modules; everything but the motion modules frozen."""
    from diffusers import UNetMotionModel

    model = UNetMotionModel.from_unet2d(base_unet, adapter)
    model.freeze_unet2d_params()
    contiguous_temporal_norms(model)
    strays = [name for name, p in model.named_parameters() if p.requires_grad and MOTION_MODULES not in name]
    assert not strays, f"trainable parameters outside the motion modules: {strays[:3]}"
    return model


def contiguous_temporal_norms(model) -> None:
    """Give every temporal GroupNorm a contiguous input. Its input is a permuted [B, C, T, h, w] view; with fewer
    than 8 frames torch takes it as channels-last, and torch 2.13's CPU channels-last GroupNorm BACKWARD kernel
    segfaults on it (measured here: frames 2-7 crash, 8 and more do not). Forward results are unchanged."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    for module in model.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            module.norm.register_forward_pre_hook(lambda _norm, args: (args[0].contiguous(), *args[1:]))


def trained_adapter(model, config: dict):
    """The MotionAdapter holding `model`'s motion modules (the state's key names match: strict load)."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter(**config)
    state = {key: value for key, value in model.state_dict().items() if f".{MOTION_MODULES}." in key}
    adapter.load_state_dict(state, strict=True)
    return adapter.to(torch.float32)


def clip_frames(frames, count: int, rng: np.random.Generator) -> list:
    """`count` consecutive frames of `frames` from a random start; BadSample when there are fewer."""
    if frames is None:
        raise BadSample("the sample has no frames")
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise BadSample(f"expected frames as uint8 [T, H, W, 3], got shape {frames.shape}")
    if len(frames) < count:
        raise BadSample(f"{len(frames)} frames, fewer than the {count} a sequence needs")
    start = int(rng.integers(0, len(frames) - count + 1))
    return [frames[index] for index in range(start, start + count)]


class MotionAdapterRecipe:
    """The trainer's recipe: model = UNetMotionModel (base UNet frozen, motion modules trained)."""

    def __init__(self, config: MotionAdapterConfig):
        check_frames(config)
        self.config, self.source = config, config.data
        self.sd = FrozenSD(config.base)
        base_unet = load_sd_unet(self.sd.base)
        self.adapter_config = adapter_config(base_unet.config, config)
        self.model = motion_model(base_unet, new_motion_adapter(self.adapter_config, config.trainer.seed))

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        flip = self.config.random_flip and rng.random() < 0.5
        frames = clip_frames(raw.get("frames"), self.config.frames, rng)
        return {"frames": torch.stack([image_tensor(frame, self.config.resolution, flip) for frame in frames]),
                "input_ids": self.sd.token_ids(raw.get("caption", ""))}

    def collate(self, samples: list[dict]) -> dict:
        return {key: torch.stack([sample[key] for sample in samples]) for key in ("frames", "input_ids")}

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < self.config.caption_dropout
        latents = self.video_latents(batch["frames"], random)
        noisy, noise, timesteps = self.sd.noised(latents, random)  # one t per sequence, noise per frame
        text = self.sd.text(batch["input_ids"], drop).repeat_interleave(latents.shape[2], dim=0)
        prediction = model(noisy, timesteps, text).sample
        return per_sample_mse(prediction, self.sd.target(latents, noise, timesteps))

    @torch.no_grad()
    def video_latents(self, frames: torch.Tensor, random: SampleRandom) -> torch.Tensor:
        """Frames [B, T, 3, H, W] in [-1, 1] -> scaled latents [B, C, T, h, w], the posterior sampled per frame."""
        vae = self.sd.vae
        posteriors = [vae.encode(sequence.to(self.sd.device, self.sd.dtype)).latent_dist for sequence in frames]
        mean = torch.stack([posterior.mean for posterior in posteriors])
        std = torch.stack([posterior.std for posterior in posteriors])
        sample = mean + std * random.randn(*mean.shape[1:]).to(mean.device, mean.dtype)
        return (sample.float() * vae.config.scaling_factor).permute(0, 2, 1, 3, 4)

    def validate(self, model, step: int, folder: Path) -> None:
        """A video per validation caption (the first samples') through diffusers' AnimateDiffPipeline: one PNG
        strip of config.frames frames and the caption."""
        pipe = self.validation_pipeline(model)
        size = self.config.resolution
        for index in range(min(VALIDATION_VIDEOS, len(self.source))):
            caption = str(self.source.load(index).get("caption", ""))
            frames = pipe(caption, num_frames=self.config.frames, height=size, width=size,
                          num_inference_steps=VALIDATION_STEPS, output_type="np",
                          generator=torch.Generator().manual_seed(index)).frames[0]
            strip = np.concatenate(list(frames), axis=1)
            save_png(strip, folder / f"{index:03d}.png")
            (folder / f"{index:03d}.txt").write_text(caption + "\n")

    def validation_pipeline(self, model):
        from diffusers import AnimateDiffPipeline, DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.sd.scheduler_config)  # the base's schedule, as eve samples
        pipe = AnimateDiffPipeline(vae=self.sd.vae, text_encoder=self.sd.text_encoder, tokenizer=self.sd.tokenizer,
                                   unet=model, motion_adapter=None, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, model) -> Path:
        """The trained MotionAdapter, written under `<output>.partial` and then moved to config.output_dir."""
        adapter = trained_adapter(model, self.adapter_config)
        return write_folder(Path(self.config.output_dir),
                            lambda partial: adapter.save_pretrained(str(partial), safe_serialization=True))


def save_png(frames: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray((np.clip(frames, 0, 1) * 255).round().astype(np.uint8)).save(path)
