"""The movie backend's pure steps: guidance passes, latent conventions, noise, and the denoising loop.

Guidance follows InstructPix2Pix (Brooks et al., arXiv 2211.09800, eq. 3), the formula of diffusers'
StableDiffusionInstructPix2PixPipeline:
    eps = eps(∅,∅) + s_T * (eps(c_I,c_T) - eps(c_I,∅)) + s_I * (eps(c_I,∅) - eps(∅,∅))
        = s_T * eps(c_I,c_T) + (s_I - s_T) * eps(c_I,∅) + (1 - s_I) * eps(∅,∅)
A pass whose weight is zero is skipped: 3 passes in general; 2 when text guidance is off (s_T = 0: the text
has no effect), when image guidance is neutral (s_I = 1) or when s_T = s_I; 1 when s_T = s_I = 1.
Deliberate difference: diffusers switches guidance off entirely (one conditional pass) whenever s_T <= 1 or
s_I < 1; we keep the formula continuous for every scale. Both agree whenever diffusers does guidance, and at 1/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PASSES = ("text_image", "image", "uncond")  # (c_I, c_T), (c_I, ∅), (∅, ∅): the UNet batch order, pass-major


@dataclass(frozen=True)
class GuidancePlan:
    """Which conditioning passes run in the UNet batch, and the weight of each in the guided prediction."""

    passes: tuple[str, ...]
    weights: tuple[float, ...]


def teacher_plan(guidance_scale: float, image_guidance_scale: float) -> GuidancePlan:
    """Image+text classifier-free guidance (InstructPix2Pix eq. 3), dropping zero-weight passes."""
    s_T, s_I = guidance_scale, image_guidance_scale
    weighted = [(name, w) for name, w in zip(PASSES, (s_T, s_I - s_T, 1.0 - s_I)) if w != 0.0]
    return GuidancePlan(tuple(n for n, _ in weighted), tuple(w for _, w in weighted))


def student_plan() -> GuidancePlan:
    """MoViE's distilled student: one conditional pass; the scales enter through the guidance embedding."""
    return GuidancePlan(("text_image",), (1.0,))


def combine(noise_pred: torch.Tensor, plan: GuidancePlan) -> torch.Tensor:
    """Weighted sum of the per-pass predictions of a pass-major UNet batch."""
    chunks = noise_pred.chunk(len(plan.passes))
    guided = chunks[0] * plan.weights[0]
    for chunk, weight in zip(chunks[1:], plan.weights[1:]):
        guided = guided + chunk * weight
    return guided


def encode_image_latents(autoencoder, frames: torch.Tensor, vae_scaling_factor: float) -> torch.Tensor:
    """InstructPix2Pix's image conditioning: the UNSCALED latent mode of the SD VAE.

    AutoencoderTiny (TAESD) returns latents already multiplied by the SD VAE's scaling factor, so they are
    divided by it here. (diffusers' pipeline given vae=AutoencoderTiny feeds them unconverted: we differ.)
    """
    encoded = autoencoder.encode(frames)
    if hasattr(encoded, "latent_dist"):
        return encoded.latent_dist.mode()
    return encoded.latents / vae_scaling_factor


def decode_latents(autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Denoised (scaled) latents -> frames in [-1, 1]; TAESD decodes scaled latents directly."""
    scaling = getattr(autoencoder.config, "scaling_factor", 1.0)
    return autoencoder.decode(latents / scaling).sample.clamp(-1.0, 1.0)


def clip_noise(seed: int, latent_shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """One noise tensor [1, C, h, w] for the whole clip, drawn on the CPU so every device gets the same one."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, *latent_shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


@dataclass
class Conditioning:
    """What one denoising loop needs besides the noise: per-pass text embeddings and image latents."""

    prompt_embeds: torch.Tensor  # [1, tokens, D]
    uncond_embeds: torch.Tensor  # [1, tokens, D]: the empty prompt
    image_latents: torch.Tensor  # [T, 4, h, w]
    class_labels: torch.Tensor | None = None  # student: [1, 2] (s_I, s_T)


def unet_batch(plan: GuidancePlan, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(image latents, text embeddings, class labels) of every row of the pass-major UNet batch."""
    frames = cond.image_latents.shape[0]
    images, texts = [], []
    for name in plan.passes:
        images.append(torch.zeros_like(cond.image_latents) if name == "uncond" else cond.image_latents)
        embeds = cond.prompt_embeds if name == "text_image" else cond.uncond_embeds
        texts.append(embeds.expand(frames, -1, -1))
    rows = frames * len(plan.passes)
    labels = None if cond.class_labels is None else cond.class_labels.expand(rows, -1)
    return torch.cat(images), torch.cat(texts), labels


def denoise(unet, scheduler, noise: torch.Tensor, cond: Conditioning, plan: GuidancePlan, steps: int,
            on_step=None) -> torch.Tensor:
    """The guided sampling loop of StableDiffusionInstructPix2PixPipeline, steps 4-9, for T frames at once."""
    frames = cond.image_latents.shape[0]
    image_rows, text_rows, label_rows = unet_batch(plan, cond)
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise.expand(frames, -1, -1, -1) * scheduler.init_noise_sigma
    for index, timestep in enumerate(scheduler.timesteps):
        if on_step is not None:
            on_step(index)
        model_input = scheduler.scale_model_input(torch.cat([latents] * len(plan.passes)), timestep)
        model_input = torch.cat([model_input, image_rows], dim=1)
        noise_pred = unet(model_input, timestep, encoder_hidden_states=text_rows, class_labels=label_rows,
                          return_dict=False)[0]
        latents = scheduler.step(combine(noise_pred, plan), timestep, latents, return_dict=False)[0]
    return latents
