"""Text-to-image training of a Stable Diffusion UNet (the tiny world's `sd15` base): `train_text_to_image(config)`.

As diffusers' examples/text_to_image/train_text_to_image.py: the VAE's sampled, scaled latents noised at t ~ U{0..T-1}
on the base's own schedule, the noise-prediction MSE (v-prediction when the schedule says so), and caption dropout
(config.caption_dropout of the samples see the empty prompt) so the base can be sampled with classifier-free guidance.

Data: any object with `__len__`, `load(index) -> {"image": uint8 HxWx3 or PIL, "caption": str}` and
`describe(index) -> str`. Output: a Stable Diffusion folder (the base's frozen parts + the trained UNet).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vedit_cli.train.config import TextToImageConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.sd_parts import (
    FrozenSD,
    captioned_image,
    load_sd_unet,
    per_sample_mse,
    run_recipe,
    save_sd_folder,
    stacked,
)
from vedit_cli.train.trainer import Progress


def train_text_to_image(config: TextToImageConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and write the Stable Diffusion folder; returns config.output_dir."""
    return run_recipe(config, TextToImageRecipe, "unet/config.json", progress)


class TextToImageRecipe:
    """The trainer's recipe: model = the UNet (4 input channels); tokenizer, text encoder and VAE frozen."""

    def __init__(self, config: TextToImageConfig):
        from diffusers import UNet2DConditionModel

        self.config, self.source = config, config.data
        self.sd = FrozenSD(config.base)
        self.model = (UNet2DConditionModel.from_config(config.unet_config) if config.unet_config is not None
                      else load_sd_unet(self.sd.base))

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        return captioned_image(raw, seed, self.sd, self.config.resolution, self.config.random_flip)

    def collate(self, samples: list[dict]) -> dict:
        return stacked(samples, ("image", "input_ids"))

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < self.config.caption_dropout
        latents = self.sd.latents(batch["image"], random)
        noisy, noise, timesteps = self.sd.noised(latents, random)
        prediction = model(noisy, timesteps, self.sd.text(batch["input_ids"], drop)).sample
        return per_sample_mse(prediction, self.sd.target(latents, noise, timesteps))

    def validate(self, model, step: int, folder: Path) -> None:
        """One image per validation caption (the first samples' captions) through diffusers' own pipeline."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(vae=self.sd.vae, text_encoder=self.sd.text_encoder, tokenizer=self.sd.tokenizer,
                                       unet=model, scheduler=DDIMScheduler.from_config(self.sd.scheduler_config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        size = self.config.resolution
        for index in range(min(4, len(self.source))):
            caption = str(self.source.load(index).get("caption", ""))
            image = pipe(caption, height=size, width=size, num_inference_steps=20,
                         generator=torch.Generator().manual_seed(index)).images[0]
            image.save(folder / f"{index:03d}.png")
            (folder / f"{index:03d}.txt").write_text(caption + "\n")

    def save(self, model) -> Path:
        return save_sd_folder(self.sd.base, model, Path(self.config.output_dir))
