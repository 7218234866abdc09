"""The tiny world's shared latent space and text path: one AutoencoderKL, a TAESD-style AutoencoderTiny that
reproduces its scaled latents, and one frozen random CLIP text encoder with a byte-level tokenizer.

Conventions the backends assume (vedit_cli/backends/movie/sampling.py): InstructPix2Pix's image latents are the
UNSCALED `latent_dist.mode()` of the VAE; denoised latents are scaled by `vae.config.scaling_factor`; TAESD's
encoder returns latents already scaled (`mode() * scaling_factor`) and its decoder takes scaled latents.
Training loops report through `on_step(step, total, loss)`; nothing here prints.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vedit_cli.tinyworld.edits import EDITS

TEXT_HIDDEN = 64
TOKENS = 32  # the tokenizer's model_max_length: every instruction fits (byte-level), and cross-attention is cheap


@dataclass(frozen=True)
class AutoencoderSize:
    steps: int = 400
    batch: int = 16
    lr: float = 1e-3
    crop: int = 0  # train on random crop x crop windows (the VAE is fully convolutional); 0: whole frames
    jitter: float = 0.0  # TAESD only: the decoder also learns the VAE decoder's image of latents jittered this much


def to_tensor(frames_nhwc: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames_nhwc)).permute(0, 3, 1, 2).float() / 255.0


def augmented_batch(frames: torch.Tensor, generator: torch.Generator, batch: int) -> torch.Tensor:
    """A batch of frames in [-1, 1], each flipped at random and edited by a random edit (or left alone), so the
    autoencoders also reproduce every edit's look."""
    index = torch.randint(0, frames.shape[0], (batch,), generator=generator)
    images = frames[index]
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    choice = torch.randint(0, len(EDITS) + 1, (batch,), generator=generator)
    out = images.clone()
    for number, edit in enumerate(EDITS):
        chosen = choice == number
        if chosen.any():
            out[chosen] = edit.apply(images[chosen]).clamp(0, 1)
    return out * 2.0 - 1.0


def random_crop(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop x crop window of the whole batch (the frames themselves when crop is 0 or too large)."""
    height, width = images.shape[-2:]
    if not crop or crop >= min(height, width):
        return images
    top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
    return images[..., top:top + crop, left:left + crop]


def new_vae():
    """AutoencoderKL with 2 downsamplings (factor 4), no mid-block attention: cheap at 64x64."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[16, 32, 64], layers_per_block=1, norm_num_groups=8, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        mid_block_add_attention=False, sample_size=64,
    )


def train_vae(frames: torch.Tensor, size: AutoencoderSize, on_step=None, seed: int = 0):
    """Reconstruction (L1 + MSE) with a small KL weight, on random crops when size.crop is set (a quarter of a
    64x64 frame's pixels per sample at 32: more samples per second); scaling_factor = 1/std of the latent modes."""
    vae = new_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=size.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, size.lr, total_steps=size.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for step in range(size.steps):
        images = random_crop(augmented_batch(frames, generator, size.batch), size.crop, generator)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = pixel_loss(reconstruction, images) + 1e-6 * posterior.kl().mean()
        loss.backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
        if on_step:
            on_step(step + 1, size.steps, loss.item())
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        modes = torch.cat([vae.encode(augmented_batch(frames, generator, 64)).latent_dist.mode() for _ in range(4)])
    vae.register_to_config(scaling_factor=round(float(1.0 / modes.std()), 5))
    return vae


def new_taesd():
    """AutoencoderTiny with the VAE's factor 4 (3 blocks: 2 downsamplings) and 4 latent channels."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(1)
    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32, 32), decoder_block_out_channels=(32, 32, 32),
        num_encoder_blocks=(1, 2, 2), num_decoder_blocks=(2, 2, 1), latent_channels=4,
    )


def train_taesd(vae, frames: torch.Tensor, size: AutoencoderSize, on_step=None, seed: int = 0):
    """Encoder: regress the VAE's SCALED latent mode; decoder: the image back from those scaled latents (on random
    crops when size.crop is set: both autoencoders are fully convolutional, crop a multiple of 4 keeps them aligned).
    With size.jitter > 0 the decoder also sees the latents perturbed (`jittered_latents`) with the VAE decoder's
    image of them as target: a denoiser's output is off the encoder's manifold, and there TAESD should decode as
    the VAE does."""
    taesd = new_taesd().train()
    optimizer = torch.optim.AdamW(taesd.parameters(), lr=size.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, size.lr, total_steps=size.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    scaling = vae.config.scaling_factor
    for step in range(size.steps):
        images = random_crop(augmented_batch(frames, generator, size.batch), size.crop, generator)
        with torch.no_grad():
            target = vae.encode(images).latent_dist.mode() * scaling
        latents = taesd.encode(images).latents
        loss = F.mse_loss(latents, target) + pixel_loss(taesd.decode(target).sample, images)
        if size.jitter:
            with torch.no_grad():
                jittered = jittered_latents(target, size.jitter, generator)
                vae_image = vae.decode(jittered / scaling).sample
            loss = loss + pixel_loss(taesd.decode(jittered).sample, vae_image)
        loss.backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
        if on_step:
            on_step(step + 1, size.steps, loss.item())
    return taesd.eval().requires_grad_(False)


def pixel_loss(decoded: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 + MSE: both autoencoders' reconstruction term."""
    return F.l1_loss(decoded, images) + F.mse_loss(decoded, images)


def jittered_latents(latents: torch.Tensor, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Scaled latents (std about 1) moved off the encoder's manifold as a denoiser's estimates are: per sample, a
    random mix towards a 3x3 box-blurred copy (an estimate's lost detail) plus Gaussian noise of std up to
    `jitter` (its error)."""
    batch = latents.shape[0]
    blur = torch.rand(batch, 1, 1, 1, generator=generator)
    smoothed = F.avg_pool2d(F.pad(latents, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    scale = jitter * torch.rand(batch, 1, 1, 1, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    return torch.lerp(latents, smoothed, blur) + scale * noise


def new_text_encoder():
    """A small CLIP text encoder, frozen random weights (the denoisers learn to read it), byte-level vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(2)
    config = CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=TEXT_HIDDEN, intermediate_size=128,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=514, max_position_embeddings=77, projection_dim=64,
    )
    return CLIPTextModel(config).eval().requires_grad_(False)


def save_tokenizer(folder: Path):
    """The byte-level CLIPTokenizer with vocab.json + merges.txt beside tokenizer.json (the loaders check them)."""
    from vedit_cli.benchmark.tokenizer import byte_level_clip_tokenizer

    folder = Path(folder)
    tokenizer = byte_level_clip_tokenizer(model_max_length=TOKENS, folder=folder)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def autoencoder_psnr(vae, frames: torch.Tensor) -> float:
    """Mean PSNR (dB) of the VAE's reconstruction (mode) of frames in [0, 1]."""
    with torch.no_grad():
        images = frames * 2 - 1
        reconstruction = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((reconstruction - images) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def taesd_psnr(taesd, frames: torch.Tensor) -> float:
    with torch.no_grad():
        images = frames * 2 - 1
        reconstruction = taesd.decode(taesd.encode(images).latents).sample.clamp(-1, 1)
    mse = ((reconstruction - images) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def save_pipeline(folder: Path, unet, parts: Path, prediction_type: str = "epsilon") -> Path:
    """A diffusers InstructPix2Pix folder: `unet` + the world's shared vae, text encoder, tokenizer, scheduler
    (the one timbrooks/instruct-pix2pix ships, reading the UNet's output as `prediction_type`)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    from vedit_cli.backends.movie.loading import IP2P_SCHEDULER

    scheduler = EulerAncestralDiscreteScheduler(**{**IP2P_SCHEDULER, "prediction_type": prediction_type})
    return save_world_pipeline(folder, StableDiffusionInstructPix2PixPipeline, unet, scheduler, parts)


def save_world_pipeline(folder: Path, pipeline_class, unet, scheduler, parts: Path) -> Path:
    """`pipeline_class` saved whole at `folder`: `unet` and `scheduler` + the world's shared vae, text encoder and
    tokenizer (with vocab.json + merges.txt beside tokenizer.json: the loaders check them)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    folder, parts = Path(folder), Path(parts)
    pipe = pipeline_class(
        unet=unet, vae=AutoencoderKL.from_pretrained(str(parts / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(parts / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(str(parts / "tokenizer")), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(str(partial), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(parts / "tokenizer" / name, partial / "tokenizer" / name)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def write_done(root: Path, component: str, facts: dict) -> None:
    """Mark a component as built: a resumable build skips it (`<root>/_build/<component>.json` holds its facts)."""
    (Path(root) / "_build").mkdir(parents=True, exist_ok=True)
    (Path(root) / "_build" / f"{component}.json").write_text(json.dumps(facts, indent=1))


def done_facts(root: Path, component: str) -> dict | None:
    path = Path(root) / "_build" / f"{component}.json"
    return json.loads(path.read_text()) if path.is_file() else None
