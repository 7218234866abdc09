"""InstructPix2Pix training (Brooks et al., arXiv 2211.09800): `train_pix2pix(Pix2PixConfig(...)) -> Path`.

Pix2PixConfig fields (everything but `base`, `data` and `output_dir` has a default):
- base: a local diffusers folder: Stable Diffusion (UNet in_channels 4: widened to 8 input channels, the new ones
  zero-initialised, as the paper) or InstructPix2Pix (in_channels 8: fine-tuned). Needs unet/, vae/, text_encoder/,
  tokenizer/ (vocab.json, merges.txt), scheduler/; safetensors only.
- data: a triplet path (see vedit_cli.train.data.triplets: folder, CSV/JSONL, parquet) or any object with
  `__len__`, `load(index) -> {"source", "instruction", "edited"}` (PIL images or uint8 HxWx3 arrays) and
  `describe(index) -> str` (raise vedit_cli.train.data.samples.BadSample for an unreadable sample).
- output_dir: the InstructPix2Pix folder written at the end (for the movie backend: WEIGHTS/instruct-pix2pix).
- trainer: a vedit_cli.train.trainer.TrainerConfig (steps, batch per process, learning rate, accumulation, mixed
  precision, EMA, checkpoint/validation cadence, seed, resume, workers); its work_dir defaults to
  `<output_dir>.training` (checkpoints/, log.jsonl, validation/).
- unet_config: optional dict for UNet2DConditionModel(**unet_config): a new randomly initialised UNet instead of the
  base's (the tiny world builds its teacher this way); in_channels 4 is widened to 8 like the base's.
- columns (TripletColumns), resolution (256), random_resize (1.125: resized to 256..288, then cropped, as the
  paper), random_flip (True), conditioning_dropout (0.05: 5% text only, 5% image only, 5% both dropped, as the
  paper), validation_data (default: the first validation_count training samples), validation_count (4),
  validation_steps (10), overwrite (False: an existing output_dir is refused unless resuming), snr_gamma (None:
  the paper's unweighted loss; e.g. 5: Min-SNR-gamma weighting, Hang et al. 2023, which converges faster),
  cache_latents (False: encode every image every step; True: keep each distinct image's VAE posterior in memory,
  see vedit_cli.train.recipes.latent_cache; needs random_resize 1).
Image latents are the unscaled `latent_dist.mode()` of the VAE, as StableDiffusionInstructPix2PixPipeline uses; the
edited image's latents are sampled and scaled by the VAE's scaling factor; the loss is the noise-prediction MSE
(v-prediction if the scheduler says so), as diffusers' examples/instruct_pix2pix/train_instruct_pix2pix.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError, OutputError, WeightsMissingError
from vedit_cli.train.config import Pix2PixConfig, TrainerConfig, TripletColumns  # noqa: F401 (the API)
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.data.triplets import open_triplets
from vedit_cli.train.recipes.latent_cache import LatentCache
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.trainer import Progress, train

BASE_FILES = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json",
              "tokenizer/merges.txt", "scheduler/scheduler_config.json")


def train_pix2pix(config: Pix2PixConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and write the InstructPix2Pix folder; returns config.output_dir."""
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, work_dir=config.work_dir()))
    # 1. Every option checked before anything on disk changes (a refused run deletes nothing)
    config.trainer.check()
    if config.snr_gamma is not None and config.snr_gamma <= 0:
        raise ConfigError(f"--snr-gamma must be above 0, got {config.snr_gamma}")
    if config.cache_latents and config.random_resize != 1:
        raise ConfigError("--cache-latents needs --random-resize 1: random crops never repeat, so nothing is reused")
    if not 0 <= config.conditioning_dropout <= 1 / 3:
        raise ConfigError(f"--conditioning-dropout must be between 0 and 1/3, got {config.conditioning_dropout}")
    output = Path(config.output_dir)
    if (output / "model_index.json").exists() and not (config.overwrite or config.trainer.resume):
        raise OutputError(f"{output} already holds a model; pass --overwrite to replace it or --resume to continue")
    # 2. Only then may --overwrite clear an earlier run's checkpoints
    check_work_dir(config)
    return train(Pix2PixRecipe(config), config.trainer, progress).output


def check_work_dir(config) -> None:
    """A work folder with checkpoints is continued (--resume) or replaced (--overwrite), never silently mixed."""
    from vedit_cli.train.checkpoints import latest_checkpoint

    work_dir = config.trainer.work_dir
    found = latest_checkpoint(work_dir)
    if found is None or config.trainer.resume:
        return
    if not config.overwrite:
        raise OutputError(f"{work_dir} holds checkpoints (newest: {found.name}); pass --resume to continue that run "
                          "or --overwrite to start again")
    shutil.rmtree(Path(work_dir) / "checkpoints")


def condition_dropout(uniform: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop text, drop image) masks from U[0,1) draws: [0,p) text only, [p,2p) both, [2p,3p) image only, as
    Brooks et al. 2023, Sec. 3.2.1 (and diffusers' train_instruct_pix2pix.py)."""
    return uniform < 2 * p, (uniform >= p) & (uniform < 3 * p)


def check_base(base: Path) -> Path:
    """The base folder, or one WeightsMissingError line naming what is missing and what to pass."""
    base = Path(base)
    if not base.is_dir():
        raise WeightsMissingError(f"base model {base} is not a local folder; pass a Stable Diffusion or "
                                  "InstructPix2Pix folder in diffusers layout (e.g. `vedit download sd15`, then "
                                  "--base ~/.cache/vedit/weights/sd15)")
    missing = [name for name in BASE_FILES if not (base / name).is_file()]
    if missing:
        raise WeightsMissingError(f"base model {base} is incomplete (missing: {', '.join(missing)}); pass a "
                                  "Stable Diffusion or InstructPix2Pix folder in diffusers layout")
    return base


def widen_conv_in(unet, in_channels: int = 8) -> None:
    """The paper's widening: conv_in gets `in_channels` inputs; the new ones start at zero, so training starts
    from the base model's behaviour (diffusers' train_instruct_pix2pix.py does the same)."""
    old = unet.conv_in
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


def load_unet(config: Pix2PixConfig, base: Path):
    from diffusers import UNet2DConditionModel

    if config.unet_config is not None:
        unet = UNet2DConditionModel.from_config(config.unet_config)
    else:
        try:
            unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet", use_safetensors=True,
                                                        local_files_only=True)
        except (OSError, EnvironmentError) as error:
            raise WeightsMissingError(f"base model {base}: cannot load unet/ as safetensors ({error})") from error
    if unet.config.in_channels == 4:
        widen_conv_in(unet)
    elif unet.config.in_channels != 8:
        raise ConfigError(f"base UNet has {unet.config.in_channels} input channels; InstructPix2Pix needs a "
                          "Stable Diffusion UNet (4, widened to 8) or an InstructPix2Pix UNet (8)")
    return unet


class Pix2PixRecipe:
    """The trainer's recipe: model = the InstructPix2Pix UNet; VAE and text encoder frozen."""

    def __init__(self, config: Pix2PixConfig):
        from diffusers import AutoencoderKL, DDPMScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        self.config = config
        self.base = check_base(config.base)
        data = config.data
        self.source = open_triplets(data, config.columns) if isinstance(data, (str, Path)) else data
        self.tokenizer = CLIPTokenizer.from_pretrained(str(self.base), subfolder="tokenizer", local_files_only=True)
        if len(self.tokenizer) <= 2:  # an empty tokenizer, not an error, when its files are missing
            raise WeightsMissingError(f"base model {self.base}: tokenizer/ holds no usable vocabulary")
        load = dict(use_safetensors=True, local_files_only=True)
        try:
            self.vae = AutoencoderKL.from_pretrained(str(self.base), subfolder="vae", **load)
            self.text_encoder = CLIPTextModel.from_pretrained(str(self.base), subfolder="text_encoder", **load)
        except (OSError, EnvironmentError) as error:
            raise WeightsMissingError(f"base model {self.base}: cannot load vae/ or text_encoder/ as safetensors "
                                      f"({error})") from error
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()
        self.scheduler_config = json.loads((self.base / "scheduler" / "scheduler_config.json").read_text())
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.model = load_unet(config, self.base)
        self.latent_cache = LatentCache() if config.cache_latents else None

    # data (runs in DataLoader workers)
    def prepare_sample(self, raw: dict, seed: int) -> dict:
        c = self.config
        return prepare_triplet(raw, seed, self.tokenizer, c.resolution, c.random_resize, c.random_flip)

    def collate(self, samples: list[dict]) -> dict:
        return collate_triplets(samples)

    # training
    def setup(self, accelerator) -> None:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        self.device, self.dtype = accelerator.device, dtype
        for frozen in (self.vae, self.text_encoder):
            frozen.to(self.device)
            if dtype != torch.float32:  # frozen parts in the mixed-precision dtype; the UNet trains in float32
                frozen.to(dtype)
        empty = self.tokenizer("", max_length=self.tokenizer.model_max_length, padding="max_length",
                               truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            self.null_text = self.text_encoder(empty.to(self.device))[0]

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        """Noise-prediction MSE per sample with the paper's condition dropout (Brooks et al. 2023, Sec. 3.2.1)."""
        random = SampleRandom(batch["sample_seed"])
        dropout = random.rand().to(self.device)
        timesteps = random.randint(self.noise_scheduler.config.num_train_timesteps).to(self.device)
        with torch.no_grad():
            edited_mean, edited_std = self.posterior(batch["edited"])
            # the conditioning image: unscaled mode() (= the mean), as the InstructPix2Pix pipeline's image latents
            image_latents = self.posterior(batch["source"])[0]
            text = self.text_encoder(batch["input_ids"].to(self.device))[0]
        shape = edited_mean.shape[1:]
        latents = (edited_mean + edited_std * random.randn(*shape).to(self.device, edited_mean.dtype))
        latents = latents.float() * self.vae.config.scaling_factor
        noise = random.randn(*shape).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        drop_text, drop_image = condition_dropout(dropout, self.config.conditioning_dropout)
        text = torch.where(drop_text[:, None, None], self.null_text.expand_as(text), text)
        image_latents = image_latents.float() * (~drop_image)[:, None, None, None]
        prediction = model(torch.cat([noisy, image_latents], dim=1), timesteps, text).sample
        target = noise
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return loss * self.snr_weights(timesteps) if self.config.snr_gamma else loss

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent mean and std of each image (served from the latent cache when it is on)."""
        images = images.to(self.device, self.dtype)
        if self.latent_cache is not None:
            return self.latent_cache.posterior(self.vae, images)
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    def snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma loss weights (Hang et al., arXiv 2303.09556), as diffusers' train_text_to_image.py
        --snr_gamma: min(SNR, gamma) / SNR for epsilon (/ (SNR + 1) for v-prediction)."""
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps)
        clipped = torch.clamp(snr, max=self.config.snr_gamma)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr

    # validation and output
    def validate(self, model, step: int, folder: Path) -> None:
        from vedit_cli.train.recipes.pix2pix_output import validation_images

        validation_images(self, model, folder)

    def save(self, model) -> Path:
        from vedit_cli.train.recipes.pix2pix_output import save_pipeline_folder

        return save_pipeline_folder(self.base, model, Path(self.config.output_dir), self.scheduler_config)


def prepare_triplet(raw: dict, seed: int, tokenizer, resolution: int, random_resize: float, random_flip: bool) -> dict:
    """One raw triplet -> {"source", "edited": [3, R, R] in [-1, 1], "input_ids": the instruction's tokens}, with
    the same augmentation of source and edit (drawn from `seed`). Raises BadSample for an unreadable image."""
    source, edited = _to_pil(raw.get("source")), _to_pil(raw.get("edited"))
    if edited.size != source.size:
        edited = edited.resize(source.size)
    rng = np.random.default_rng(seed)
    source, edited = _augment([source, edited], resolution, random_resize, random_flip, rng)
    ids = tokenizer(str(raw.get("instruction", "")), max_length=tokenizer.model_max_length,
                    padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
    return {"source": _to_tensor(source), "edited": _to_tensor(edited), "input_ids": ids}


def collate_triplets(samples: list[dict]) -> dict:
    return {key: torch.stack([sample[key] for sample in samples]) for key in ("source", "edited", "input_ids")}


def _to_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise BadSample(f"expected an RGB image (PIL or uint8 HxWx3), got {type(image).__name__} {array.shape}")
    return Image.fromarray(array)


def _augment(images: list, resolution: int, random_resize: float, random_flip: bool, rng) -> list:
    """Resize the short side to resolution x U(1, random_resize), crop resolution^2 (random when resizing randomly,
    else centred), flip half the time: the same transform for every image of the sample (the paper's augmentation)."""
    from PIL import Image

    width, height = images[0].size
    short = round(resolution * (rng.uniform(1.0, random_resize) if random_resize > 1 else 1.0))
    scale = short / min(width, height)
    size = (max(short, round(width * scale)), max(short, round(height * scale)))
    if random_resize > 1:
        left, top = int(rng.integers(0, size[0] - resolution + 1)), int(rng.integers(0, size[1] - resolution + 1))
    else:
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    flip = random_flip and rng.random() < 0.5
    out = []
    for image in images:
        image = image.resize(size, Image.BICUBIC).crop((left, top, left + resolution, top + resolution))
        out.append(image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image)
    return out


def _to_tensor(image) -> torch.Tensor:
    """PIL RGB -> float [3, H, W] in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
