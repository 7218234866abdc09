"""EVE sampling: DDIM over sliding temporal windows whose latents are blended at every step, anchored on frame 0.

Latents are laid out [C, T, h, w] (channels, frames), the layout diffusers' UNetMotionModel takes per video.
Per step, every window of a chunk predicts noise with the full stack (edit adapter on each frame, video adapter
across the window), takes its DDIM step, and the windows' results are blended with the planner's cross-fade
weights (FreeNoise-style, Qiu et al., arXiv 2310.15169), so no seam survives to the next step. EVE
(arXiv 2403.09334) conditions its video adapter on the first frame edited by the edit adapter alone (Sec. 4.1); with
AnimateDiff, which takes no image input, the
anchor's DDIM trajectory is placed in each window as an extra frame whose latent is replaced at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vedit_cli.backends.eve.components import EveStack, motion_bypassed, token_ids
from vedit_cli.pipeline.windows import blend_weights



@dataclass(frozen=True)
class Conditioning:
    """Text conditions for one clip: the backbone sees the output caption, the edit adapter the instruction."""

    caption_embeds: torch.Tensor  # [2, 77, D]: (empty, caption); [1, 77, D] (caption) without guidance
    instruction_embeds: torch.Tensor  # same layout, for the ControlNet
    guidance_scale: float
    controlnet_scale: float

    @property
    def uses_guidance(self) -> bool:
        return self.guidance_scale > 1.0  # as diffusers: no unconditional pass at scale <= 1


@dataclass(frozen=True)
class Anchor:
    """Frame 0 edited by the edit adapter alone: its latent at every step x_T..x_0 and its ControlNet hint."""

    trajectory: list[torch.Tensor]  # steps + 1 tensors [C, h, w]
    hint_chw: torch.Tensor


@torch.no_grad()
def encode_text(stack: EveStack, text: str) -> torch.Tensor:
    """CLIP text embeddings [1, 77, D] (last hidden state, as SD1.5)."""
    ids = token_ids(stack, text).to(stack.text_encoder.device)
    return stack.text_encoder(ids)[0].float()


def build_conditioning(stack: EveStack, caption: str, instruction: str, guidance_scale: float,
                       controlnet_scale: float) -> Conditioning:
    """Embed caption and instruction once per clip; the empty prompt is the unconditional branch."""
    caption_embeds, instruction_embeds = encode_text(stack, caption), encode_text(stack, instruction)
    if guidance_scale > 1.0:
        empty = encode_text(stack, "")
        caption_embeds, instruction_embeds = torch.cat([empty, caption_embeds]), torch.cat([empty, instruction_embeds])
    return Conditioning(caption_embeds, instruction_embeds, guidance_scale, controlnet_scale)


def frame_noise(seed: int, first_frame: int, num_frames: int, shape_chw: tuple[int, int, int]) -> torch.Tensor:
    """Initial latents [C, T, h, w]; each clip frame has its own noise, so overlapping chunks start alike."""
    frames = []
    for frame in range(first_frame, first_frame + num_frames):
        stream = int(np.random.SeedSequence([seed, frame]).generate_state(1)[0])  # torch seeds keep 32 bits
        frames.append(torch.randn(shape_chw, generator=torch.Generator().manual_seed(stream)))
    return torch.stack(frames, dim=1)


@torch.no_grad()
def predict_noise(stack: EveStack, cond: Conditioning, latents_cthw: torch.Tensor, hints_tchw: torch.Tensor,
                  timestep: torch.Tensor) -> torch.Tensor:
    """Guided noise prediction of the full stack for one window [C, T, h, w] (diffusers' AnimateDiff ControlNet step)."""
    batch = 2 if cond.uses_guidance else 1
    num_frames = latents_cthw.shape[1]
    latent_input = latents_cthw[None].expand(batch, -1, -1, -1, -1).to(stack.dtype)
    control_input = latent_input.transpose(1, 2).flatten(0, 1)
    down_residuals, mid_residual = stack.controlnet(
        control_input, timestep, encoder_hidden_states=_per_frame(cond.instruction_embeds, num_frames, stack),
        controlnet_cond=hints_tchw.to(stack.dtype).repeat(batch, 1, 1, 1), conditioning_scale=cond.controlnet_scale,
        return_dict=False,
    )
    noise = stack.unet(
        latent_input, timestep, encoder_hidden_states=_per_frame(cond.caption_embeds, num_frames, stack),
        down_block_additional_residuals=down_residuals, mid_block_additional_residual=mid_residual,
    ).sample.float()
    if not cond.uses_guidance:
        return noise[0]
    unconditional, conditional = noise.chunk(2)
    return (unconditional + cond.guidance_scale * (conditional - unconditional))[0]


def _per_frame(embeds: torch.Tensor, num_frames: int, stack: EveStack) -> torch.Tensor:
    """[B, 77, D] -> [B * T, 77, D], batch-major like the latents flattened for the spatial layers."""
    return embeds.repeat_interleave(num_frames, dim=0).to(device=stack.device, dtype=stack.dtype)


def ddim_step(stack: EveStack, noise: torch.Tensor, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """x_t -> x_{t-1}; DDIM with eta 0 is deterministic and keeps no state between calls."""
    return stack.scheduler.step(noise, timestep, latents).prev_sample


@torch.no_grad()
def edit_anchor(stack: EveStack, cond: Conditioning, noise_chw: torch.Tensor, hint_chw: torch.Tensor,
                timesteps: torch.Tensor) -> Anchor:
    """Edit frame 0 with the backbone and edit adapter only (temporal layers bypassed), recording x_T..x_0."""
    latents = noise_chw[:, None]
    trajectory = [noise_chw]
    with motion_bypassed(stack.unet):
        for timestep in timesteps:
            noise = predict_noise(stack, cond, latents, hint_chw[None], timestep)
            latents = ddim_step(stack, noise, timestep, latents)
            trajectory.append(latents[:, 0])
    return Anchor(trajectory, hint_chw)


def _window_step(stack: EveStack, cond: Conditioning, latents_cthw: torch.Tensor, hints_tchw: torch.Tensor,
                 timestep: torch.Tensor, anchor_chw: torch.Tensor | None, anchor_hint: torch.Tensor | None):
    """One DDIM step of one window, with the anchor frame prepended when given (its output is dropped)."""
    if anchor_chw is not None:
        latents_cthw = torch.cat([anchor_chw[:, None], latents_cthw], dim=1)
        hints_tchw = torch.cat([anchor_hint[None], hints_tchw])
    noise = predict_noise(stack, cond, latents_cthw, hints_tchw, timestep)
    stepped = ddim_step(stack, noise, timestep, latents_cthw)
    return stepped[:, 1:] if anchor_chw is not None else stepped


def blended_step(stack: EveStack, cond: Conditioning, latents_cthw: torch.Tensor, hints_tchw: torch.Tensor,
                 windows: list[range], weights: list[torch.Tensor], timestep: torch.Tensor,
                 anchor: tuple[torch.Tensor, torch.Tensor] | None, anchor_frame: int | None) -> torch.Tensor:
    """Step every window and blend their x_{t-1} with the planner's weights (they sum to one per frame)."""
    blended = torch.zeros_like(latents_cthw)
    for window, weight in zip(windows, weights):
        slot = anchor if anchor is not None and anchor_frame not in window else (None, None)
        stepped = _window_step(stack, cond, latents_cthw[:, window.start:window.stop], hints_tchw[window.start:window.stop],
                               timestep, *slot)
        blended[:, window.start:window.stop] += stepped * weight[None, :, None, None]
    return blended


def denoise_chunk(stack: EveStack, cond: Conditioning, noise_cthw: torch.Tensor, hints_tchw: torch.Tensor,
                  windows: list[range], timesteps: torch.Tensor, anchor: Anchor | None = None,
                  anchor_frame: int | None = None) -> torch.Tensor:
    """DDIM from noise to x_0 over a chunk's windows; `anchor_frame` (chunk index of clip frame 0) follows the anchor."""
    weights = blend_weights(windows, noise_cthw.shape[1])
    latents = noise_cthw.clone()
    for index, timestep in enumerate(timesteps):
        if anchor is not None and anchor_frame is not None:
            latents[:, anchor_frame] = anchor.trajectory[index]
        slot = (anchor.trajectory[index], anchor.hint_chw) if anchor is not None else None
        latents = blended_step(stack, cond, latents, hints_tchw, windows, weights, timestep, slot, anchor_frame)
    if anchor is not None and anchor_frame is not None:
        latents[:, anchor_frame] = anchor.trajectory[-1]
    return latents


@torch.no_grad()
def decode(stack: EveStack, latents_cthw: torch.Tensor, batch_frames: int = 16) -> torch.Tensor:
    """Latents [C, T, h, w] -> frames [T, 3, H, W] in [-1, 1], a few frames at a time."""
    scaled = (latents_cthw / stack.vae.config.scaling_factor).transpose(0, 1)
    frames = [stack.vae.decode(scaled[start:start + batch_frames].to(stack.vae.dtype)).sample.float()
              for start in range(0, scaled.shape[0], batch_frames)]
    return torch.cat(frames).clamp(-1.0, 1.0)
