"""The svdiff backend's pure steps: how a frame's latent reaches the first LCM timestep, and the guided prediction.

Two initialisations (`--svdiff-init`):
- "inversion" (default, SVDiff arXiv 2405.19726): deterministic DDIM inversion (Song et al., arXiv 2010.02502,
  eq. 12 run backwards) of the source latent through the LCM-fused UNet, from t = 0 up to the start timestep along
  the denoising schedule reversed: one conditional UNet pass per LCM step (3 by default), no CFG, and the recurrent
  memory bypassed (neither read nor written). The noise it lands on is the frame's own, so the edit keeps the
  source's layout and the stream no longer depends on a fixed noise tensor.
- "noise": forward noising with seeded noise to the start timestep (img2img, as diffusers'
  LatentConsistencyModelImg2ImgPipeline): no UNet pass.
"""

from __future__ import annotations

from typing import Callable

import torch

from vedit_cli.models.parameterisation import check_prediction_type, predicted_noise

INIT_CHOICES = ("inversion", "noise")

EpsFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> predicted noise


def inversion_timesteps(timesteps: torch.Tensor) -> list[int]:
    """The inversion grid: 0, then the denoising timesteps in increasing order (ends at the start timestep)."""
    return [0, *sorted(int(t) for t in timesteps)]


def ddim_inversion_step(eps: torch.Tensor, sample: torch.Tensor, alpha_bar_t: torch.Tensor,
                        alpha_bar_next: torch.Tensor) -> torch.Tensor:
    """x_t -> x_next (next > t) with eta 0: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), re-noised with the same eps."""
    predicted_original = (sample - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_next.sqrt() * predicted_original + (1 - alpha_bar_next).sqrt() * eps


def ddim_invert(eps_fn: EpsFunction, latents: torch.Tensor, grid: list[int],
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion along `grid` (increasing timesteps): len(grid) - 1 calls of `eps_fn`."""
    alphas = alphas_cumprod.to(device=latents.device, dtype=torch.float32)
    sample = latents
    for current, following in zip(grid[:-1], grid[1:]):
        eps = eps_fn(sample, torch.tensor(current, device=latents.device)).float()
        sample = ddim_inversion_step(eps, sample.float(), alphas[current], alphas[following]).to(latents.dtype)
    return sample


def as_noise(output: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor, scheduler) -> torch.Tensor:
    """The UNet's output as the noise the inversion needs, by the scheduler's stored prediction_type (SD1.5 and its
    LCM-LoRA: epsilon, returned as is; v-prediction bases, e.g. SD2.x: eps = sqrt(a_t) v + sqrt(1 - a_t) x_t).
    "sample" bases are refused: their noise estimate divides by sqrt(1 - a_t), which vanishes at t = 0."""
    prediction_type = scheduler.config.prediction_type
    check_prediction_type(prediction_type, ("epsilon", "v_prediction"), "svdiff's inversion")
    if prediction_type == "epsilon":
        return output
    alpha_bar = scheduler.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
    timesteps = torch.tensor([int(timestep)], device=sample.device)
    return predicted_noise(output, timesteps, sample, prediction_type, alpha_bar.sqrt(), (1 - alpha_bar).sqrt())


def forward_noise(scheduler, latents: torch.Tensor, start_timestep: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """img2img: sqrt(a_t) x0 + sqrt(1 - a_t) eps, eps drawn from `generator` (seeded alike for every frame)."""
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    return scheduler.add_noise(latents, noise, start_timestep.reshape(1))


def guided(noise_pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps = (1 + lambda) eps_c - lambda eps_uc with lambda = guidance_scale - 1 (SVDiff eq. 8); rows [uncond, cond]."""
    noise_uncond, noise_cond = noise_pred.chunk(2)
    return noise_cond + (guidance_scale - 1.0) * (noise_cond - noise_uncond)


def unet_passes(steps: int, guidance: bool, init: str) -> int:
    """UNet rows per frame: `steps` x (2 with CFG, else 1), plus `steps` conditional rows for the inversion."""
    return steps * (2 if guidance else 1) + (steps if init == "inversion" else 0)
