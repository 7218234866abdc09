"""Window planning and blend weights: properties over many clip lengths and window shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vedit_cli.pipeline.windows import blend_weights, frame_coverage, plan_windows


@st.composite
def clip_and_windows(draw):
    window_size = draw(st.integers(1, 24))
    overlap = draw(st.integers(0, window_size - 1))
    num_frames = draw(st.integers(1, 200))
    return num_frames, window_size, overlap


@settings(max_examples=300, deadline=None)
@given(clip_and_windows())
def test_windows_cover_every_frame_and_never_pass_the_end(case):
    num_frames, window_size, overlap = case
    windows = plan_windows(num_frames, window_size, overlap)
    covered = set()
    for window in windows:
        assert window.step == 1 and 0 <= window.start and window.stop <= num_frames
        assert len(window) == min(window_size, num_frames)
        covered.update(window)
    assert covered == set(range(num_frames))
    assert windows[-1].stop == num_frames
    assert [w.start for w in windows] == sorted({w.start for w in windows})


@settings(max_examples=300, deadline=None)
@given(clip_and_windows())
def test_neighbouring_windows_overlap_by_at_least_overlap(case):
    num_frames, window_size, overlap = case
    windows = plan_windows(num_frames, window_size, overlap)
    for previous, window in zip(windows, windows[1:]):
        assert previous.stop - window.start >= overlap
    for previous, window in zip(windows[:-2], windows[1:-1]):  # all but the shifted last window use the stride
        assert window.start - previous.start == window_size - overlap


@settings(max_examples=300, deadline=None)
@given(clip_and_windows())
def test_blend_weights_are_positive_and_sum_to_one_per_frame(case):
    num_frames, window_size, overlap = case
    windows = plan_windows(num_frames, window_size, overlap)
    weights = blend_weights(windows, num_frames)
    total = torch.zeros(num_frames)
    for window, weight in zip(windows, weights):
        assert weight.shape == (len(window),)
        assert bool((weight > 0).all())
        total[window.start : window.stop] += weight
    torch.testing.assert_close(total, torch.ones(num_frames))


def test_known_plan_and_linear_cross_fade():
    windows = plan_windows(40, 16, 4)
    assert windows == [range(0, 16), range(12, 28), range(24, 40)]
    weights = blend_weights(windows, 40)
    torch.testing.assert_close(weights[0][-4:], torch.tensor([0.8, 0.6, 0.4, 0.2]))
    torch.testing.assert_close(weights[1][:4], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert bool((weights[1][4:12] == 1).all())
    assert frame_coverage(windows, 40)[10:18] == [1, 1, 2, 2, 2, 2, 1, 1]


def test_short_clip_is_one_window_and_bad_shapes_raise():
    assert plan_windows(5, 16, 4) == [range(0, 5)]
    assert plan_windows(0, 16, 4) == []
    assert plan_windows(3, 1, 0) == [range(0, 1), range(1, 2), range(2, 3)]
    with pytest.raises(ValueError):
        plan_windows(10, 4, 4)
