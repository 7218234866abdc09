"""An instruction ControlNet on a frozen Stable Diffusion base (EVE's image-edit adapter; the tiny world's
`controlnet-ip2p`): `train_controlnet(config) -> Path`.

As lllyasviel's control_v11e_sd15_ip2p (ControlNet 1.1: hint = the source image, prompt = the edit instruction,
target = the edited image) and diffusers' examples/controlnet/train_controlnet.py: the ControlNet starts as a copy of
the base UNet's encoder (`ControlNetModel.from_unet`, zero convolutions at its outputs), the base stays frozen, the hint
enters in [0, 1] (what the eve backend feeds), and the loss is the noise-prediction MSE of the base UNet with the
ControlNet's residuals; config.caption_dropout (0.5, as ControlNet's training) of the prompts are dropped so the
ControlNet learns to read the hint alone.

The hint embedding downsamples by the VAE's factor: (16, 32, 96, 256)[: log2(factor) + 1] unless
config.conditioning_channels says otherwise (SD1.5, factor 8: the published (16, 32, 96, 256)).
Data: `load(index) -> {"source", "instruction", "edited"}` (the triplets of `vedit train pix2pix`).
Real-scale recipe: lllyasviel trained ip2p on SD1.5 at 512x512 with the InstructPix2Pix data; diffusers' script with
`--resolution 512 --learning_rate 1e-5 --train_batch_size 4 --gradient_accumulation_steps 4` (global batch 16 x 8
GPUs) for ~50k steps is of the same order; at ~1.6 steps/s per A100 for a 512 ControlNet step (base forward + ControlNet
forward/backward, about 1.5x a UNet training step) that is roughly 70 A100-hours: an estimate from the step cost, not a
measured run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError
from vedit_cli.train.config import ControlNetConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.data.triplets import open_triplets
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.sd_parts import (
    FrozenSD,
    image_tensor,
    load_sd_unet,
    per_sample_mse,
    placed,
    run_recipe,
    write_folder,
)
from vedit_cli.train.trainer import Progress

HINT_CHANNELS = (16, 32, 96, 256)


def train_controlnet(config: ControlNetConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and write the ControlNet folder (config.json + safetensors); returns config.output_dir."""
    return run_recipe(config, ControlNetRecipe, "config.json", progress)


def hint_channels(vae_config, requested: tuple[int, ...] | None) -> tuple[int, ...]:
    """The hint embedding's widths: one stride-2 stage per VAE downsampling."""
    downsamplings = len(vae_config.block_out_channels) - 1
    channels = tuple(requested) if requested else HINT_CHANNELS[: downsamplings + 1]
    if len(channels) - 1 != downsamplings:
        raise ConfigError(f"--conditioning-channels {channels} downsample by {2 ** (len(channels) - 1)}; the base's "
                          f"VAE "
                          f"downsamples by {2 ** downsamplings}: give {downsamplings + 1} widths")
    return channels


class ControlNetRecipe:
    """The trainer's recipe: model = the ControlNet; the base UNet, VAE and text encoder frozen."""

    def __init__(self, config: ControlNetConfig):
        from diffusers import ControlNetModel

        self.config = config
        data = config.data
        self.source = open_triplets(data) if isinstance(data, (str, Path)) else data
        self.sd = FrozenSD(config.base)
        self.unet = load_sd_unet(self.sd.base).requires_grad_(False).eval()
        channels = hint_channels(self.sd.vae.config, config.conditioning_channels)
        self.model = ControlNetModel.from_unet(self.unet, conditioning_embedding_out_channels=channels)

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        flip = self.config.random_flip and np.random.default_rng(seed).random() < 0.5
        size = self.config.resolution
        return {"hint": (image_tensor(raw.get("source"), size, flip) + 1) / 2,
                "edited": image_tensor(raw.get("edited"), size, flip),
                "input_ids": self.sd.token_ids(raw.get("instruction", ""))}

    def collate(self, samples: list[dict]) -> dict:
        return {key: torch.stack([sample[key] for sample in samples]) for key in ("hint", "edited", "input_ids")}

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)
        placed(self.unet, self.sd.device, self.sd.dtype)

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < self.config.caption_dropout
        latents = self.sd.latents(batch["edited"], random)
        noisy, noise, timesteps = self.sd.noised(latents, random)
        text = self.sd.text(batch["input_ids"], drop)
        down, mid = model(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=batch["hint"].to(noisy.device),
                          return_dict=False)
        dtype = self.sd.dtype
        prediction = self.unet(noisy.to(dtype), timesteps, text.to(dtype),
                               down_block_additional_residuals=[r.to(dtype) for r in down],
                               mid_block_additional_residual=mid.to(dtype)).sample
        return per_sample_mse(prediction, self.sd.target(latents, noise, timesteps))

    def validate(self, model, step: int, folder: Path) -> None:
        """[hint | edit | target] PNGs for the first samples through diffusers' StableDiffusionControlNetPipeline."""
        from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline
        from PIL import Image

        pipe = StableDiffusionControlNetPipeline(
            vae=self.sd.vae, text_encoder=self.sd.text_encoder, tokenizer=self.sd.tokenizer, unet=self.unet,
            controlnet=model, scheduler=DDIMScheduler.from_config(self.sd.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        for index in range(min(4, len(self.source))):
            raw = self.source.load(index)
            sample = self.prepare_sample(raw, seed=index)
            hint = _image(sample["hint"] * 2 - 1)
            edit = pipe(str(raw["instruction"]), image=hint, num_inference_steps=20, output_type="pil",
                        generator=torch.Generator().manual_seed(index)).images[0]
            row = np.concatenate([np.asarray(hint), np.asarray(edit.resize(hint.size)),
                                  np.asarray(_image(sample["edited"]))], axis=1)
            Image.fromarray(row).save(folder / f"{index:03d}.png")

    def save(self, model) -> Path:
        model = placed(model, torch.device("cpu"), torch.float32)
        return write_folder(Path(self.config.output_dir),
                            lambda partial: model.save_pretrained(str(partial), safe_serialization=True))


def _image(tensor_chw: torch.Tensor):
    from PIL import Image

    array = ((tensor_chw.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)

