"""Pure helpers that plan temporal windows over a clip and the weights that blend their overlaps."""

from __future__ import annotations

import numpy as np
import torch


def plan_windows(num_frames: int, window_size: int, overlap: int) -> list[range]:
    """Windows of `window_size` frames every `window_size - overlap`; the last one ends exactly at the clip's end."""
    if window_size < 1 or not 0 <= overlap < window_size:
        raise ValueError(f"need window_size >= 1 and 0 <= overlap < window_size, got {window_size}, {overlap}")
    if num_frames <= window_size:
        return [range(0, num_frames)] if num_frames > 0 else []
    stride = window_size - overlap
    windows = [range(start, start + window_size) for start in range(0, num_frames - window_size, stride)]
    windows.append(range(num_frames - window_size, num_frames))
    return windows


def frame_coverage(windows: list[range], num_frames: int) -> list[int]:
    """How many windows hold each frame."""
    coverage = [0] * num_frames
    for window in windows:
        for frame in window:
            coverage[frame] += 1
    return coverage


def _ramp(length: int, rising: bool) -> np.ndarray:
    """Linear ramp strictly inside (0, 1): (1..n)/(n+1), or its reverse."""
    ramp = np.arange(1, length + 1, dtype=np.float32) / np.float32(length + 1)
    return ramp if rising else ramp[::-1]


def blend_weights(windows: list[range], num_frames: int) -> list[torch.Tensor]:
    """Per-window weights: linear cross-fades where windows overlap, normalised so each frame's weights sum to one.
    Computed in numpy: a clip of N one-frame windows costs N tiny array ops, not N tiny torch ops (~10x slower)."""
    raw = []
    for index, window in enumerate(windows):
        weight = np.ones(len(window), dtype=np.float32)
        if index > 0 and (shared := windows[index - 1].stop - window.start) > 0:
            weight[:shared] *= _ramp(shared, rising=True)
        if index + 1 < len(windows) and (shared := window.stop - windows[index + 1].start) > 0:
            weight[-shared:] *= _ramp(shared, rising=False)
        raw.append(weight)
    total = np.zeros(num_frames, dtype=np.float32)
    for window, weight in zip(windows, raw):
        total[window.start : window.stop] += weight
    return [torch.from_numpy(weight / total[window.start : window.stop]) for window, weight in zip(windows, raw)]
