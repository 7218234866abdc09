"""A diffusion UNet's output read as the clean latent or as the noise, by its scheduler's stored `prediction_type`.

x_t = alpha x0 + sigma eps with alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t); the output is eps
("epsilon", SD1.5), v = alpha eps - sigma x0 ("v_prediction", SD2.x, the tiny world's base) or x0 ("sample").
One place for these conversions: LCM-LoRA and eve-lora training, svdiff's inversion.
"""

from __future__ import annotations

import torch

from vedit_cli.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def per_sample(values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[timesteps] shaped [B, 1, ..., 1] (ndim dimensions) to broadcast over a batch of latents."""
    return values.to(timesteps.device)[timesteps].reshape(-1, *([1] * (ndim - 1)))


def check_prediction_type(prediction_type: str, allowed=PREDICTION_TYPES, who: str = "vedit") -> None:
    if prediction_type not in allowed:
        raise ConfigError(f"the base's scheduler has prediction_type {prediction_type!r}; {who} reads "
                          f"{', '.join(allowed)} outputs")


def predicted_original(output, timesteps, sample, prediction_type: str, alphas, sigmas) -> torch.Tensor:
    """x0 from the UNet's output at `sample` (alphas = sqrt(alpha_bar), sigmas = sqrt(1 - alpha_bar), per timestep)."""
    check_prediction_type(prediction_type)
    alpha, sigma = per_sample(alphas, timesteps, sample.ndim), per_sample(sigmas, timesteps, sample.ndim)
    if prediction_type == "epsilon":
        return (sample - sigma * output) / alpha
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * output
    return output


def predicted_noise(output, timesteps, sample, prediction_type: str, alphas, sigmas) -> torch.Tensor:
    """The noise from the UNet's output at `sample`."""
    check_prediction_type(prediction_type)
    alpha, sigma = per_sample(alphas, timesteps, sample.ndim), per_sample(sigmas, timesteps, sample.ndim)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha * output + sigma * sample
    return (sample - alpha * output) / sigma
