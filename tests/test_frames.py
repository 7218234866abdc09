"""Frame conversions, geometry, resizing and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vedit_cli.pipeline.frames import (
    frames_to_tensor,
    pad_uint8,
    plan_geometry,
    postprocess,
    preprocess,
    processing_size,
    resize_uint8,
    round_up,
    tensor_to_frames,
    to_tensor,
)


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_uint8_round_trip_is_exact_for_every_value():
    frame = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    frame = frame.astype(np.uint8)
    tensor = frames_to_tensor([frame, frame[::-1]])
    assert tensor.shape == (2, 3, 16, 16) and tensor.dtype == torch.float32
    assert float(tensor.min()) == -1.0 and float(tensor.max()) == 1.0
    back = tensor_to_frames(tensor)
    np.testing.assert_array_equal(back[0], frame)
    np.testing.assert_array_equal(back[1], frame[::-1])


def test_channels_follow_rgb_order():
    frame = np.zeros((2, 2, 3), dtype=np.uint8)
    frame[..., 0] = 255
    tensor = to_tensor(frame)
    assert torch.equal(tensor[0], torch.ones(2, 2)) and torch.equal(tensor[1], -torch.ones(2, 2))


@pytest.mark.parametrize(
    ("width", "height", "short_side", "expected"),
    [(1280, 720, 512, (910, 512)), (720, 1280, 512, (512, 910)), (161, 121, 64, (85, 64)), (480, 480, 512, (512, 512))],
)
def test_processing_size_keeps_aspect(width, height, short_side, expected):
    assert processing_size(width, height, short_side) == expected


def test_geometry_pads_to_the_multiple_and_outputs_source_or_processing_size():
    geometry = plan_geometry(426, 240, 64, 8)
    assert geometry.resized == (114, 64) and geometry.padded == (120, 64) and geometry.output == (426, 240)
    assert plan_geometry(426, 240, 64, 8, output_size="processing").output == (114, 64)
    copy = plan_geometry(161, 121, 512, 1, resizes=False)
    assert copy.resized == copy.padded == copy.output == (161, 121)
    assert round_up(57, 8) == 64 and round_up(64, 8) == 64


def test_resize_antialiases_when_shrinking():
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: nearest/bilinear sampling would alias to black or white
    small = resize_uint8(stripes, (16, 16))
    assert small.shape == (16, 16, 3)
    assert np.abs(small.astype(int) - 128).max() <= 2


def test_pad_reflects_and_falls_back_to_replicate_on_tiny_frames():
    frame = random_frame(5, 7)
    padded = pad_uint8(frame, (8, 8))
    assert padded.shape == (8, 8, 3)
    np.testing.assert_array_equal(padded[:5, :7], frame)
    np.testing.assert_array_equal(padded[5, :7], frame[3])  # reflect-101: row 5 mirrors row 3
    tiny = pad_uint8(frame[:1, :1], (8, 8))
    assert (tiny == frame[0, 0]).all()


def test_preprocess_then_postprocess_crops_padding_and_restores_size():
    frame = np.full((121, 161, 3), 77, dtype=np.uint8)
    geometry = plan_geometry(161, 121, 64, 16)
    tensor = preprocess(frame, geometry)
    assert tensor.shape == (3, 64, 96)  # resized 85x64, padded to 96x64
    out = postprocess(tensor, geometry)
    assert out.shape == (121, 161, 3)
    assert np.abs(out.astype(int) - 77).max() <= 1


def test_postprocess_discards_what_the_editor_wrote_into_the_padding():
    geometry = plan_geometry(10, 6, 6, 8, output_size="processing")
    edited = torch.full((3, 8, 16), -1.0)
    edited[:, 6:, :] = 1.0
    edited[:, :, 10:] = 1.0
    assert (postprocess(edited, geometry) == 0).all()


def test_preprocess_is_identity_for_non_resizing_editors():
    frame = random_frame(121, 161, seed=3)
    geometry = plan_geometry(161, 121, 512, 1, resizes=False)
    np.testing.assert_array_equal(postprocess(preprocess(frame, geometry), geometry), frame)


def test_preprocess_rejects_frames_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected uint8 frames"):
        preprocess(random_frame(10, 10), plan_geometry(12, 10, 64, 8))
