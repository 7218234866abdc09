"""Frame conversions between decoded uint8 HWC RGB arrays and the editors' float tensors [T, 3, H, W] in [-1, 1].

Resizing keeps the aspect ratio (short side -> the model's size), padding reaches the editor's size multiple, and
the padding is cropped off again after editing, so no frame is ever distorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class FrameGeometry:
    """Sizes (width, height) a frame passes through: decoded -> resized -> padded (the editor's) -> output."""

    source: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]
    output: tuple[int, int]


def processing_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` and the aspect ratio kept (long side rounded)."""
    scale = short_side / min(width, height)
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= value."""
    return -(-value // multiple) * multiple


def plan_geometry(
    width: int, height: int, short_side: int, multiple: int, resizes: bool = True, output_size: str = "source"
) -> FrameGeometry:
    """Every size on the way through the editor; `resizes=False` keeps the source size (copy backend)."""
    resized = processing_size(width, height, short_side) if resizes else (width, height)
    padded = (round_up(resized[0], multiple), round_up(resized[1], multiple))
    output = resized if output_size == "processing" else (width, height)
    return FrameGeometry(source=(width, height), resized=resized, padded=padded, output=output)


def resize_uint8(frame_hwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased resize to (width, height): area averaging to shrink, bicubic to enlarge (uint8 saturates)."""
    height, width = frame_hwc.shape[:2]
    if (width, height) == tuple(size):
        return frame_hwc
    shrinking = size[0] * size[1] < width * height
    return cv2.resize(frame_hwc, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def pad_uint8(frame_hwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad right and bottom up to (width, height) by reflection (replication when the frame is too small)."""
    height, width = frame_hwc.shape[:2]
    pad_right, pad_bottom = size[0] - width, size[1] - height
    if pad_right == 0 and pad_bottom == 0:
        return frame_hwc
    border = cv2.BORDER_REFLECT_101 if pad_right < width and pad_bottom < height else cv2.BORDER_REPLICATE
    return cv2.copyMakeBorder(frame_hwc, 0, pad_bottom, 0, pad_right, border)


def to_tensor(frame_hwc: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> float32 [3, H, W] in [-1, 1] (numpy: single-threaded, no fight over torch's thread pool)."""
    frame_chw = frame_hwc.transpose(2, 0, 1).astype(np.float32)
    frame_chw *= np.float32(1 / 127.5)
    frame_chw -= np.float32(1.0)
    return torch.from_numpy(frame_chw)


def to_uint8(frame_chw: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [-1, 1] (any device/dtype) -> uint8 HWC RGB, rounded to nearest and saturated."""
    planes = np.ascontiguousarray(frame_chw.detach().to("cpu", torch.float32).numpy())
    channels, height, width = planes.shape
    stacked = planes.reshape(channels * height, width)
    scaled = cv2.addWeighted(stacked, 127.5, stacked, 0.0, 127.5, dtype=cv2.CV_8U)  # saturate_cast rounds
    return cv2.merge(list(scaled.reshape(channels, height, width)))


def frames_to_tensor(frames_hwc: list[np.ndarray]) -> torch.Tensor:
    """A list of uint8 HWC frames -> float [T, 3, H, W] in [-1, 1]."""
    return torch.stack([to_tensor(frame) for frame in frames_hwc])


def tensor_to_frames(frames_tchw: torch.Tensor) -> list[np.ndarray]:
    """float [T, 3, H, W] in [-1, 1] -> list of uint8 HWC frames."""
    return [to_uint8(frame) for frame in frames_tchw]


def preprocess(frame_hwc: np.ndarray, geometry: FrameGeometry) -> torch.Tensor:
    """Decoded frame -> the editor's input: resized, padded to the size multiple, float [3, H, W] in [-1, 1]."""
    if frame_hwc.shape[1::-1] != geometry.source or frame_hwc.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames of {geometry.source}, got {frame_hwc.dtype} {frame_hwc.shape}")
    return to_tensor(pad_uint8(resize_uint8(frame_hwc, geometry.resized), geometry.padded))


def postprocess(frame_chw: torch.Tensor, geometry: FrameGeometry) -> np.ndarray:
    """Edited frame -> uint8 HWC at the output size: padding cropped off, then resized."""
    width, height = geometry.resized
    return resize_uint8(to_uint8(frame_chw[:, :height, :width]), geometry.output)
