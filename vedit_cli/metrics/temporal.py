"""Temporal consistency of an edit, offline and weight-free: flow warping error and plain flicker.

Warping error follows Lai et al. 2018 ("Learning Blind Video Temporal Consistency", E_warp): optical flow is
estimated on the SOURCE frames (OpenCV DIS), pixels failing the forward-backward check of Ruder et al. 2016 are
treated as occluded, edited frame i is warped onto frame i+1, and the squared RGB distance (values in [0, 1]) is
averaged over the non-occluded pixels; the clip's figure is the mean over consecutive pairs.
Everything streams: only the previous source/edited frame pair is held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import zip_longest

import numpy as np

from vedit_cli.errors import EvaluationError

OCCLUSION_ALPHA = 0.01  # Ruder et al. 2016, Eq. 7: |w + w_hat|^2 > alpha (|w|^2 + |w_hat|^2) + beta
OCCLUSION_BETA = 0.5


def estimate_flow(frame_from: np.ndarray, frame_to: np.ndarray) -> np.ndarray:
    """Dense flow [H, W, 2] (x, y) with frame_from(p) ~ frame_to(p + flow(p)); OpenCV DIS, medium preset."""
    import cv2

    gray_from = cv2.cvtColor(np.ascontiguousarray(frame_from), cv2.COLOR_RGB2GRAY)
    gray_to = cv2.cvtColor(np.ascontiguousarray(frame_to), cv2.COLOR_RGB2GRAY)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(gray_from, gray_to, None)


def sample_at_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Bilinear sample of `image` at p + flow(p) for every pixel p (backward warping); outside reads 0."""
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def inside_frame_mask(flow: np.ndarray) -> np.ndarray:
    """True where p + flow(p) lands inside the frame."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width), np.arange(height))
    target_x, target_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    return (target_x >= 0) & (target_x <= width - 1) & (target_y >= 0) & (target_y <= height - 1)


def non_occluded_mask(flow_backward: np.ndarray, flow_forward: np.ndarray) -> np.ndarray:
    """Forward-backward consistency (Ruder et al. 2016) at the pixels of frame i+1.

    flow_backward maps frame i+1 -> frame i; flow_forward maps frame i -> frame i+1.
    """
    forward_at_target = sample_at_flow(flow_forward, flow_backward)
    round_trip = flow_backward + forward_at_target
    squared = lambda field: (field**2).sum(axis=-1)  # noqa: E731
    bound = OCCLUSION_ALPHA * (squared(flow_backward) + squared(forward_at_target)) + OCCLUSION_BETA
    return (squared(round_trip) <= bound) & inside_frame_mask(flow_backward)


def match_size(edited: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Resize an edited frame to the source frame's size (area filter) when they differ."""
    if edited.shape[:2] == source.shape[:2]:
        return edited
    import cv2

    return cv2.resize(edited, (source.shape[1], source.shape[0]), interpolation=cv2.INTER_AREA)


def pair_warp_error(source_i, source_next, edited_i, edited_next) -> float | None:
    """E_warp of one pair: edited frame i warped onto i+1 with the source's flow; None if all pixels are occluded."""
    flow_backward = estimate_flow(source_next, source_i)
    flow_forward = estimate_flow(source_i, source_next)
    mask = non_occluded_mask(flow_backward, flow_forward)
    if not mask.any():
        return None
    warped = sample_at_flow(edited_i.astype(np.float32) / 255.0, flow_backward)
    squared_distance = ((warped - edited_next.astype(np.float32) / 255.0) ** 2).sum(axis=-1)
    return float(squared_distance[mask].mean())


class WarpErrorMeter:
    """Streaming E_warp: feed (source, edited) frame pairs in order, read `result()` at the end."""

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.pair_errors: list[float] = []

    def add(self, source_frame: np.ndarray, edited_frame: np.ndarray) -> None:
        edited_frame = match_size(edited_frame, source_frame)
        if self._previous is not None:
            error = pair_warp_error(self._previous[0], source_frame, self._previous[1], edited_frame)
            if error is not None:
                self.pair_errors.append(error)
        self._previous = (source_frame, edited_frame)

    def result(self) -> float | None:
        return float(np.mean(self.pair_errors)) if self.pair_errors else None


class FlickerMeter:
    """Streaming flicker: mean absolute difference of consecutive frames, in 8-bit units (0-255)."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self.pair_values: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        current = frame.astype(np.int16)
        if self._previous is not None:
            self.pair_values.append(float(np.abs(current - self._previous).mean()))
        self._previous = current

    def result(self) -> float | None:
        return float(np.mean(self.pair_values)) if self.pair_values else None


def paired_frames(source_frames: Iterable[np.ndarray], edited_frames: Iterable[np.ndarray]) -> Iterator[tuple]:
    """Zip two frame streams, raising EvaluationError if their lengths differ."""
    missing = object()
    for index, (source, edited) in enumerate(zip_longest(source_frames, edited_frames, fillvalue=missing)):
        if source is missing or edited is missing:
            longer = "source" if edited is missing else "edited"
            raise EvaluationError(
                f"source and edited clips differ in length: the {longer} clip has more than {index} frames; "
                "warp error needs frame-aligned clips"
            )
        yield source, edited


def warp_error(source_frames: Iterable[np.ndarray], edited_frames: Iterable[np.ndarray]) -> float | None:
    """Mean E_warp (Lai et al. 2018) over consecutive pairs; frames are uint8 RGB HxWx3; None if < 2 frames."""
    meter = WarpErrorMeter()
    for source, edited in paired_frames(source_frames, edited_frames):
        meter.add(source, edited)
    return meter.result()


def flicker(edited_frames: Iterable[np.ndarray]) -> float | None:
    """Mean absolute difference of consecutive edited frames (0-255 units); None if < 2 frames."""
    meter = FlickerMeter()
    for frame in edited_frames:
        meter.add(frame)
    return meter.result()
