"""Fidelity to a reference (ground-truth) clip: PSNR and SSIM per frame, streamed.

PSNR: 10 log10(255^2 / MSE) over all RGB values of a frame (8-bit units). SSIM: Wang et al. 2004 ("Image quality
assessment: from error visibility to structural similarity"), 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
L 255, on each RGB channel, averaged. An edited frame of another size is resized to the reference's (area filter).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import zip_longest

import numpy as np

from vedit_cli.errors import EvaluationError

SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
PSNR_CAP = 100.0  # identical frames: a finite value (JSON has no infinity)


def frame_psnr(reference: np.ndarray, edited: np.ndarray) -> float:
    mse = float(((reference.astype(np.float64) - edited.astype(np.float64)) ** 2).mean())
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * np.log10(255.0**2 / mse))


def frame_ssim(reference: np.ndarray, edited: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) over the frame and its channels."""
    import cv2

    x, y = reference.astype(np.float64), edited.astype(np.float64)
    blur = lambda image: cv2.GaussianBlur(image, (11, 11), 1.5)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2))
    return float(ssim_map.mean())


class ReferenceMeter:
    """Streaming PSNR and SSIM: feed (reference, edited) frame pairs in order; per-frame values are kept."""

    def __init__(self) -> None:
        self.per_frame: dict[str, list[float]] = {"psnr": [], "ssim": []}

    def add(self, reference_frame: np.ndarray, edited_frame: np.ndarray) -> None:
        from vedit_cli.metrics.temporal import match_size

        edited_frame = match_size(edited_frame, reference_frame)
        self.per_frame["psnr"].append(frame_psnr(reference_frame, edited_frame))
        self.per_frame["ssim"].append(frame_ssim(reference_frame, edited_frame))

    def result(self, metric: str) -> float | None:
        values = self.per_frame[metric]
        return float(np.mean(values)) if values else None


def reference_pairs(reference_frames: Iterable[np.ndarray], edited_frames: Iterable[np.ndarray]) -> Iterator[tuple]:
    """Zip reference and edited frames, raising EvaluationError if their lengths differ."""
    missing = object()
    for index, (reference, edited) in enumerate(zip_longest(reference_frames, edited_frames, fillvalue=missing)):
        if reference is missing or edited is missing:
            longer = "reference" if edited is missing else "edited"
            raise EvaluationError(f"reference and edited clips differ in length: the {longer} clip has more than "
                                  f"{index} frames; PSNR and SSIM compare frame by frame")
        yield reference, edited
