"""The tiny world's procedural edits: per-frame functions whose output IS the ground truth of an instruction.

Frames are float tensors [N, 3, H, W] in [0, 1]; every edit returns the same shape, in [0, 1], deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


@dataclass(frozen=True)
class Edit:
    name: str
    instruction: str  # what a user types (InstructPix2Pix's edit instruction)
    caption: str  # the output caption (what the edited frame shows)
    apply: Callable[[torch.Tensor], torch.Tensor]


def gray(frames: torch.Tensor) -> torch.Tensor:
    """Luma, one channel [N, 1, H, W]."""
    weights = torch.tensor(LUMA, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (frames * weights).sum(dim=1, keepdim=True)


def black_and_white(frames: torch.Tensor) -> torch.Tensor:
    return gray(frames).expand_as(frames).clone()


def invert(frames: torch.Tensor) -> torch.Tensor:
    return 1.0 - frames


def sepia(frames: torch.Tensor) -> torch.Tensor:
    """The classic sepia matrix (Microsoft's), clipped."""
    matrix = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                          dtype=frames.dtype, device=frames.device)
    return torch.einsum("oc,nchw->nohw", matrix, frames).clamp(0.0, 1.0)


def night(frames: torch.Tensor) -> torch.Tensor:
    """Darker, desaturated and blue."""
    luma = gray(frames)
    mixed = 0.5 * frames + 0.5 * luma
    tint = torch.tensor([0.35, 0.45, 0.8], dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (mixed * tint + torch.tensor([0.0, 0.02, 0.08], device=frames.device).view(1, 3, 1, 1)).clamp(0.0, 1.0)


def warm(frames: torch.Tensor) -> torch.Tensor:
    """Orange cast: red up, blue down."""
    gain = torch.tensor([1.25, 1.05, 0.6], dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (frames * gain + torch.tensor([0.08, 0.02, 0.0], device=frames.device).view(1, 3, 1, 1)).clamp(0.0, 1.0)


def posterize(frames: torch.Tensor, levels: int = 3) -> torch.Tensor:
    return torch.round(frames * (levels - 1)) / (levels - 1)


def blur(frames: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur, radius 3 sigma, edges replicated."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=frames.dtype, device=frames.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = frames.shape[1]
    padded = F.pad(frames, (radius, radius, radius, radius), mode="replicate")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def pencil_sketch(frames: torch.Tensor) -> torch.Tensor:
    """Dark Sobel edges of the luma on white paper."""
    luma = F.pad(gray(frames), (1, 1, 1, 1), mode="replicate")
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=frames.device)
    sobel = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1).to(frames.dtype)
    gradients = F.conv2d(luma, sobel)
    magnitude = gradients.pow(2).sum(dim=1, keepdim=True).sqrt()
    return (1.0 - 2.0 * magnitude).clamp(0.0, 1.0).expand_as(frames).clone()


def pixelate(frames: torch.Tensor, block: int = 8) -> torch.Tensor:
    pooled = F.avg_pool2d(frames, block, ceil_mode=True)
    return F.interpolate(pooled, scale_factor=block, mode="nearest")[..., : frames.shape[2], : frames.shape[3]]


def swap_red_blue(frames: torch.Tensor) -> torch.Tensor:
    return frames.flip(1)


EDITS = (
    Edit("black_and_white", "make it black and white", "a black and white photo", black_and_white),
    Edit("invert", "invert the colours", "a photo with inverted colours", invert),
    Edit("sepia", "make it sepia", "an old sepia photo", sepia),
    Edit("night", "make it night", "a photo at night", night),
    Edit("warm", "make it warm and orange", "a warm orange photo", warm),
    Edit("posterize", "posterize it", "a posterized photo", posterize),
    Edit("blur", "blur it", "a blurry photo", blur),
    Edit("sketch", "turn it into a pencil sketch", "a pencil sketch", pencil_sketch),
    Edit("pixelate", "pixelate it", "a pixelated photo", pixelate),
    Edit("swap_red_blue", "swap red and blue", "a photo with red and blue swapped", swap_red_blue),
)
EDITS_BY_NAME = {edit.name: edit for edit in EDITS}


def edit_by_instruction(instruction: str) -> Edit:
    """The edit whose instruction is `instruction` (KeyError otherwise)."""
    for edit in EDITS:
        if edit.instruction == instruction:
            return edit
    raise KeyError(instruction)


def apply_uint8(edit: Edit, frames_nhwc) -> "numpy.ndarray":  # noqa: F821
    """The edit on uint8 frames [N, H, W, 3] -> uint8 frames [N, H, W, 3] (rounded)."""
    import numpy as np

    tensor = torch.from_numpy(np.ascontiguousarray(frames_nhwc)).permute(0, 3, 1, 2).float() / 255.0
    edited = edit.apply(tensor).clamp(0.0, 1.0)
    return (edited * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
