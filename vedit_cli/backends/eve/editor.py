"""The `eve` backend: EVE's adapter stack (SD1.5 + instruction ControlNet + AnimateDiff) over long clips.

Memory design: the runner hands this editor chunks of `window + (chunk_windows - 1) * (window - overlap)` frames
(52 by default) that overlap by `overlap`, and cross-fades the chunks' pixels. Inside a chunk the temporal windows
are denoised together, their latents blended at every DDIM step. Per clip the editor keeps only the prompt
embeddings and the anchor (frame 0's latent at each step: a few hundred KB), so peak memory depends on the chunk,
never on the clip's length. Each clip frame draws its own seeded noise, so two chunks start alike where they
overlap, and every window of every chunk sees the same anchor frame.
"""

from __future__ import annotations

import torch

from vedit_cli.editor import Editor
from vedit_cli.backends.eve.components import EveStack, load_stack, random_stack
from vedit_cli.backends.eve.sampling import Anchor, Conditioning, build_conditioning, decode, denoise_chunk, \
    edit_anchor, frame_noise
from vedit_cli.config import ModelConfig
from vedit_cli.errors import ConfigError
from vedit_cli.pipeline.windows import plan_windows
from vedit_cli.settings import ResolvedRun


def chunk_frames(window: int, overlap: int, chunk_windows: int) -> int:
    """Frames in a chunk of `chunk_windows` windows that overlap by `overlap`."""
    return window + (chunk_windows - 1) * (window - overlap)


class EveEditor(Editor):
    """EVE video editing (arXiv 2403.09334): edit adapter per frame, video adapter per window, anchored on frame 0."""

    latency = 0
    size_multiple = 8

    def __init__(self, stack: EveStack, run: ResolvedRun, anchor_first_frame: bool = True):
        config = run.model
        self.stack, self.config = stack, config
        self.window, self.steps = config.window, config.steps
        self.window_size = chunk_frames(config.window, config.overlap, config.chunk_windows)
        self.overlap = config.overlap
        self.anchor_first_frame = anchor_first_frame  # False: plain windows, as diffusers' pipeline (tests)
        self.description = self._describe()
        self.conditioning: Conditioning | None = None
        self.reset()

    @classmethod
    def from_run(cls, run: ResolvedRun) -> "EveEditor":
        stack = load_stack(run.weights_dir, run.model.lora_scale, run.device, run.dtype, run.spacing)
        return cls(_checked(stack, run.model), run)

    @classmethod
    def random_weights(cls, run: ResolvedRun) -> "EveEditor":
        return cls(_checked(random_stack(run.device, run.dtype, run.spacing), run.model), run)

    def _describe(self) -> str:
        passes = 2 if self.config.guidance_scale > 1.0 else 1
        alignment = (f"alignment LoRA x{self.config.lora_scale:g}" if self.stack.lora_loaded
                     else "plug-and-play (no alignment LoRA)")
        return (f"eve: SD1.5 + ip2p ControlNet + AnimateDiff, {self.steps} DDIM steps x {passes} passes, windows of "
                f"{self.window} (overlap {self.overlap}) blended every step in chunks of {self.window_size}, "
                f"{alignment}")

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        """"encode" is never called: EVE samples from noise; the input reaches the model through the ControlNet."""
        vae = self.stack.vae
        return {"text_encoder": self.stack.text_encoder, "encode": vae.encoder, "unet": self.stack.unet,
                "controlnet": self.stack.controlnet, "decode": vae.decoder}

    def reset(self) -> None:
        self.anchor: Anchor | None = None
        self.next_start, self.sought = 0, None

    def prepare(self, prompt: str) -> None:
        """Embed the caption (backbone) and the instruction (edit adapter); set the DDIM schedule."""
        caption = self.config.caption or prompt
        self.conditioning = build_conditioning(self.stack, caption, prompt, self.config.guidance_scale,
                                               self.config.controlnet_scale)
        self.stack.scheduler.set_timesteps(self.steps)
        self.reset()

    def seek(self, frame_index: int) -> None:
        self.sought = frame_index

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        """Edit one chunk: anchor on the clip's first frame, denoise the chunk's windows together, decode."""
        if self.conditioning is None:
            raise RuntimeError("EveEditor.edit called before prepare()")
        start = self._chunk_start(len(frames_tchw))
        hints_tchw = ((frames_tchw.float() + 1.0) / 2.0).to(self.stack.device)  # the ip2p ControlNet takes [0, 1]
        noise = frame_noise(self.config.seed, start, len(frames_tchw), self._latent_shape(frames_tchw))
        anchor_frame = self._anchor_frame(start, noise, hints_tchw)
        windows = plan_windows(len(frames_tchw), self.window, min(self.overlap, self.window - 1))
        latents = denoise_chunk(self.stack, self.conditioning, noise.to(self.stack.device), hints_tchw, windows,
                                self.stack.scheduler.timesteps, self.anchor, anchor_frame)
        return decode(self.stack, latents).to(frames_tchw.device)

    def _chunk_start(self, num_frames: int) -> int:
        """Clip index of this chunk's first frame: from `seek` when the runner tells, else counted."""
        start = self.sought if self.sought is not None else self.next_start
        self.next_start, self.sought = start + num_frames - self.overlap, None
        return start

    def _anchor_frame(self, start: int, noise_cthw: torch.Tensor, hints_tchw: torch.Tensor) -> int | None:
        """Edit the anchor on the first chunk; return the chunk index of the anchor frame when this chunk holds it."""
        if not self.anchor_first_frame:
            return None
        if self.anchor is None:
            self.anchor = edit_anchor(self.stack, self.conditioning, noise_cthw[:, 0].to(self.stack.device),
                                      hints_tchw[0], self.stack.scheduler.timesteps)
            self.anchor_start = start
        return 0 if start == self.anchor_start else None

    def _latent_shape(self, frames_tchw: torch.Tensor) -> tuple[int, int, int]:
        factor = 2 ** (len(self.stack.vae.config.block_out_channels) - 1)
        height, width = frames_tchw.shape[-2:]
        return self.stack.unet.config.in_channels, height // factor, width // factor


def _checked(stack: EveStack, config: ModelConfig) -> EveStack:
    """The window plus the anchor frame must fit the motion module's positional table."""
    limit = stack.unet.config.motion_max_seq_length
    if config.window + 1 > limit:
        raise ConfigError(f"--window {config.window} is too long for the motion adapter: at most {limit - 1} frames "
                          f"(one more is taken by the anchor frame)")
    return stack
