"""Warp error and flicker (vedit_cli/metrics/temporal.py) on synthetic clips with a known global translation."""

from __future__ import annotations

import numpy as np
import pytest

from vedit_cli.errors import EvaluationError
from vedit_cli.metrics.temporal import (
    estimate_flow,
    flicker,
    non_occluded_mask,
    warp_error,
)

STEP = (3, 2)  # content moves by this many pixels (x, y) per frame
SIZE = (96, 128)  # height, width


def smooth_texture(seed: int, size: int = 220) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 3)
    return ((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)


def translated_clip(texture: np.ndarray, frames: int = 6) -> list[np.ndarray]:
    """Crops of one texture whose window moves by STEP each frame: a clip with exact global motion."""
    height, width = SIZE
    return [texture[20 + i * STEP[1] : 20 + i * STEP[1] + height, 20 + i * STEP[0] : 20 + i * STEP[0] + width].copy()
            for i in range(frames)]


def with_flicker(clip: list[np.ndarray], amplitude: float) -> list[np.ndarray]:
    """Alternate the brightness of every other frame by +-amplitude (8-bit units)."""
    return [np.clip(f.astype(np.float32) + (amplitude if i % 2 else -amplitude), 0, 255).astype(np.uint8)
            for i, f in enumerate(clip)]


@pytest.fixture(scope="module")
def source_clip():
    return translated_clip(smooth_texture(0))


@pytest.fixture(scope="module")
def consistent_edit():
    """A different 'style' (another texture) that moves exactly as the source does."""
    return translated_clip(smooth_texture(1))


def test_flow_recovers_known_translation(source_clip):
    flow = estimate_flow(source_clip[0], source_clip[1])  # frame0(p) ~ frame1(p + flow): content moves by -STEP
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(interior.mean(axis=0), [-STEP[0], -STEP[1]], atol=0.05)


def test_occlusion_mask_flags_pixels_that_leave_the_frame(source_clip):
    backward = estimate_flow(source_clip[1], source_clip[0])
    forward = estimate_flow(source_clip[0], source_clip[1])
    mask = non_occluded_mask(backward, forward)
    assert mask[16:-16, 16:-16].all()
    assert not mask[:, -1].any() and not mask[-1, :].any()  # frame 1's last column/row come from outside frame 0


def test_warp_error_is_zero_for_an_edit_that_follows_the_source_motion(source_clip, consistent_edit):
    assert warp_error(source_clip, consistent_edit) < 2e-4
    assert warp_error(source_clip, source_clip) < 2e-4


def test_warp_error_grows_with_flicker_and_is_monotone(source_clip, consistent_edit):
    errors = [warp_error(source_clip, with_flicker(consistent_edit, a)) for a in (0, 4, 8, 16, 32)]
    assert errors[1] > 10 * errors[0]
    assert all(later > earlier for earlier, later in zip(errors, errors[1:]))
    # alternating +-a in all 3 channels: squared RGB distance of (2a/255) per channel
    np.testing.assert_allclose(errors[3], 3 * (32 / 255) ** 2, rtol=0.1)


def test_warp_error_uses_the_source_motion_not_the_edit(source_clip, consistent_edit):
    """An edit that stands still while the source moves is temporally inconsistent with it."""
    frozen = [consistent_edit[0]] * len(consistent_edit)
    assert warp_error(source_clip, frozen) > 50 * warp_error(source_clip, consistent_edit)


def test_flicker_is_mean_abs_difference_of_consecutive_frames():
    frames = [np.full((4, 5, 3), value, np.uint8) for value in (10, 30, 25)]
    assert flicker(frames) == pytest.approx((20 + 5) / 2)
    assert flicker(frames[:1]) is None


def test_flicker_is_monotone_in_flicker_amplitude(consistent_edit):
    values = [flicker(with_flicker(consistent_edit, a)) for a in (0, 4, 8, 16)]
    assert all(later > earlier for earlier, later in zip(values, values[1:]))


def test_edited_frames_of_another_size_are_resized_to_the_source(source_clip, consistent_edit):
    import cv2

    half = [cv2.resize(f, (SIZE[1] // 2, SIZE[0] // 2), interpolation=cv2.INTER_AREA) for f in consistent_edit]
    assert warp_error(source_clip, half) < 5e-3


def test_length_mismatch_is_an_evaluation_error(source_clip, consistent_edit):
    with pytest.raises(EvaluationError, match="differ in length"):
        warp_error(source_clip, consistent_edit[:-1])


def test_real_clip_identity_edit_beats_a_flickering_copy(shared_videos):
    """On a real TGVE clip (decoded through vedit_cli.io), the unedited source is steadier than a flickered copy."""
    pytest.importorskip("vedit_cli.io.decode")
    from itertools import islice

    from vedit_cli.metrics.frames import iter_frames

    source = list(islice(iter_frames(shared_videos / "tgve" / "videos" / "gold-fish.mp4"), 6))
    assert source[0].shape == (480, 480, 3) and source[0].dtype == np.uint8
    steady = warp_error(source, source)
    assert steady < 5e-3
    assert warp_error(source, with_flicker(source, 8)) > steady + 2 * 3 * (8 / 255) ** 2 * 0.5
