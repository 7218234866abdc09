"""The frozen parts of a Stable Diffusion folder every Stable Diffusion-side recipe shares (text-to-image base,
LCM-LoRA, instruction ControlNet, motion adapter): tokenizer, text encoder, VAE and the stored noise schedule.

Latents are the VAE's sampled posterior scaled by `vae.config.scaling_factor` (what the UNet denoises); the noise
schedule is the folder's own `scheduler/scheduler_config.json` read as DDPM (no schedule is hard-coded), so a base
trained on one beta schedule is distilled and adapted on it. Per-sample draws come from SampleRandom.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import OutputError, WeightsMissingError
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.randomness import SampleRandom

SD_FILES = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json",
            "tokenizer/merges.txt", "scheduler/scheduler_config.json")
LOAD = dict(use_safetensors=True, local_files_only=True)


def check_sd_folder(base: Path, what: str = "base model") -> Path:
    """The Stable Diffusion folder, or one WeightsMissingError line naming what is missing."""
    base = Path(base)
    if not base.is_dir():
        raise WeightsMissingError(f"{what} {base} is not a local folder; pass a Stable Diffusion folder in diffusers "
                                  "layout (e.g. `vedit download sd15`, then --base-dir ~/.cache/vedit/weights/sd15)")
    missing = [name for name in SD_FILES if not (base / name).is_file()]
    if missing:
        raise WeightsMissingError(f"{what} {base} is incomplete (missing: {', '.join(missing)}); pass a Stable "
                                  "Diffusion folder in diffusers layout")
    return base


def load_sd_unet(base: Path):
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_pretrained(str(base), subfolder="unet", **LOAD)
    except (OSError, EnvironmentError) as error:
        raise WeightsMissingError(f"{base}: cannot load unet/ as safetensors ({error})") from error


class FrozenSD:
    """Tokenizer, text encoder and VAE of `base` (frozen), and its noise schedule; `setup` moves them."""

    def __init__(self, base: Path):
        from diffusers import AutoencoderKL, DDPMScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        self.base = check_sd_folder(base)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(self.base), subfolder="tokenizer", local_files_only=True)
        if len(self.tokenizer) <= 2:  # an empty tokenizer, not an error, when its files are missing
            raise WeightsMissingError(f"{self.base}: tokenizer/ holds no usable vocabulary")
        try:
            self.vae = AutoencoderKL.from_pretrained(str(self.base), subfolder="vae", **LOAD)
            self.text_encoder = CLIPTextModel.from_pretrained(str(self.base), subfolder="text_encoder", **LOAD)
        except (OSError, EnvironmentError) as error:
            raise WeightsMissingError(f"{self.base}: cannot load vae/ or text_encoder/ as safetensors "
                                      f"({error})") from error
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()
        self.scheduler_config = json.loads((self.base / "scheduler" / "scheduler_config.json").read_text())
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def setup(self, accelerator) -> None:
        """Frozen parts on the accelerator's device in the mixed-precision dtype; the empty prompt embedded once."""
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        self.device = accelerator.device
        for frozen in (self.vae, self.text_encoder):
            placed(frozen, self.device, self.dtype)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)
        with torch.no_grad():
            self.null_text = self.text_encoder(self.token_ids("")[None].to(self.device))[0]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    def token_ids(self, text: str) -> torch.Tensor:
        """[L] token ids, padded to the tokenizer's length."""
        return self.tokenizer(str(text), max_length=self.tokenizer.model_max_length, padding="max_length",
                              truncation=True, return_tensors="pt").input_ids[0]

    @torch.no_grad()
    def text(self, input_ids: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, D] embeddings; rows where `drop` is True get the empty prompt's (classifier-free guidance)."""
        embeds = self.text_encoder(input_ids.to(self.device))[0]
        if drop is not None:
            embeds = torch.where(drop.to(self.device)[:, None, None], self.null_text.expand_as(embeds), embeds)
        return embeds.float()

    @torch.no_grad()
    def latents(self, images: torch.Tensor, random: SampleRandom) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> scaled latents sampled from the posterior with per-sample noise."""
        posterior = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        shape = posterior.mean.shape[1:]
        sample = posterior.mean + posterior.std * random.randn(*shape).to(self.device, posterior.mean.dtype)
        return sample.float() * self.vae.config.scaling_factor

    def noised(self, latents: torch.Tensor, random: SampleRandom) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, noise, t) with t ~ U{0..T-1} and noise drawn per sample (timestep first, then noise)."""
        timesteps = random.randint(self.num_train_timesteps).to(self.device)
        noise = random.randn(*latents.shape[1:]).to(self.device)
        return self.noise_scheduler.add_noise(latents, noise, timesteps), noise, timesteps

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet regresses: the noise, or the velocity for v-prediction schedules."""
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return noise


def placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """`module` on `device`, cast only when its dtype differs (diffusers warns on every cast)."""
    module.to(device)
    if next(module.parameters()).dtype != dtype:
        module.to(dtype)
    return module


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] mean squared error over every other dimension."""
    error = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
    return error.flatten(1).mean(dim=1)


def image_tensor(image, resolution: int, flip: bool = False) -> torch.Tensor:
    """uint8 HxWx3 (or PIL) -> float [3, R, R] in [-1, 1]: short side resized to R, centre crop, optional flip."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise BadSample(f"expected an RGB image (PIL or uint8 HxWx3), got {type(image).__name__} {array.shape}")
        image = Image.fromarray(array)
    image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != (width, height):
        image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def run_recipe(config, make_recipe, output_marker: str, progress=None) -> Path:
    """Check every option before anything on disk changes, refuse to overwrite an output or mix a work folder's
    checkpoints unless asked (--overwrite / --resume), then train `make_recipe(config)` and return its output."""
    import dataclasses

    from vedit_cli.train.recipes.pix2pix import check_work_dir
    from vedit_cli.train.trainer import train

    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, work_dir=config.work_dir()))
    config.trainer.check()
    config.check()
    output = Path(config.output_dir)
    if (output / output_marker).exists() and not (config.overwrite or config.trainer.resume):
        raise OutputError(f"{output} already holds a model; pass --overwrite to replace it or --resume to continue")
    check_work_dir(config)
    return train(make_recipe(config), config.trainer, progress).output


def publish(partial: Path, output: Path) -> Path:
    """Move a completely written `partial` folder to `output` (replacing it): no half-written output."""
    import shutil

    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    Path(partial).rename(output)
    return output


def write_folder(output: Path, write) -> Path:
    """`write(partial)` fills `<output>.partial` (emptied first), which then replaces `output`: no half-written
    output, whatever `write` does."""
    import shutil

    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    return publish(partial, output)


def captioned_image(raw: dict, seed: int, sd: "FrozenSD", resolution: int, random_flip: bool) -> dict:
    """{"image": [3, R, R] in [-1, 1], "input_ids"} of a {"image", "caption"} sample (flip drawn from `seed`)."""
    flip = random_flip and np.random.default_rng(seed).random() < 0.5
    return {"image": image_tensor(raw.get("image"), resolution, flip), "input_ids": sd.token_ids(raw.get("caption", ""))}


def stacked(samples: list[dict], keys: tuple[str, ...]) -> dict:
    """The trainer's collate: each key's tensors stacked over the samples."""
    return {key: torch.stack([sample[key] for sample in samples]) for key in keys}


def save_sd_folder(base: Path, unet, output: Path) -> Path:
    """A Stable Diffusion folder: the base's vae, text encoder, tokenizer and scheduler (no pickles) + `unet`."""
    import shutil

    from vedit_cli.train.recipes.pix2pix_output import PICKLE_SUFFIXES

    def write(partial: Path) -> None:
        partial.mkdir(parents=True)
        for component in ("vae", "text_encoder", "tokenizer", "scheduler"):
            shutil.copytree(Path(base) / component, partial / component,
                            ignore=lambda _, names: [n for n in names if n.endswith(PICKLE_SUFFIXES)])
        placed(unet, torch.device("cpu"), torch.float32).save_pretrained(str(partial / "unet"), safe_serialization=True)
        (partial / "model_index.json").write_text(json.dumps(_model_index(Path(base)), indent=2) + "\n")

    return write_folder(output, write)


def _model_index(base: Path) -> dict:
    """The base's model_index.json when it is a text-to-image one, else SD1.5's with the base's scheduler."""
    index = json.loads((base / "model_index.json").read_text()) if (base / "model_index.json").is_file() else {}
    if index.get("_class_name") == "StableDiffusionPipeline":
        return index
    return sd_model_index(json.loads((base / "scheduler" / "scheduler_config.json").read_text()))


def sd_model_index(scheduler_config: dict) -> dict:
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_config.get("_class_name", "PNDMScheduler")],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
