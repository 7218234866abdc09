"""Anchor-frame attention in the movie teacher (tiny model): what holds exactly, and that it acts."""

from __future__ import annotations

import torch

from tests.test_movie import make_editor, random_frames


def edit_clip(editor, frames, batched: bool = True) -> torch.Tensor:
    editor.prepare("make it snowy")
    if batched:
        return editor.edit(frames)
    return torch.cat([editor.edit(frames[i:i + 1]) for i in range(frames.shape[0])])


def test_identical_frames_are_unchanged_by_anchor_attention(tiny_weights):
    """Attending to a duplicate of one's own keys/values gives the same softmax average: exact up to rounding."""
    frames = torch.cat([random_frames()] * 2)
    with_anchor = edit_clip(make_editor(tiny_weights, anchor=True), frames)
    without = edit_clip(make_editor(tiny_weights), frames)
    assert torch.allclose(with_anchor, without, atol=1e-5), (with_anchor - without).abs().max()


def test_anchor_changes_later_frames_but_not_the_anchor_itself(tiny_weights):
    frames = random_frames(2)
    with_anchor = edit_clip(make_editor(tiny_weights, anchor=True), frames)
    without = edit_clip(make_editor(tiny_weights), frames)
    assert torch.allclose(with_anchor[0], without[0], atol=1e-5)  # alone vs in a batch: rounding only
    assert not torch.allclose(with_anchor[1], without[1], atol=1e-4)


def test_batched_frames_equal_single_frames_with_anchor_and_keyframes(tiny_weights):
    frames = random_frames(3)
    editor = make_editor(tiny_weights, anchor=True, keyframe_interval=2)
    assert editor._segments(4) == [(slice(0, 1), True), (slice(1, 2), False), (slice(2, 3), True),
                                   (slice(3, 4), False)]
    editor.seek(2)  # the runner says where the window starts: frame 2 is a keyframe
    assert editor._segments(2) == [(slice(0, 1), True), (slice(1, 2), False)]
    batched = edit_clip(editor, frames)
    singles = edit_clip(editor, frames, batched=False)
    assert torch.allclose(batched, singles, atol=1e-5)
    assert "anchor attention (keyframe every 2)" in editor.description


def test_a_new_keyframe_replaces_the_anchor(tiny_weights):
    frames = random_frames(4)
    first_only = edit_clip(make_editor(tiny_weights, anchor=True), frames)
    keyframes = edit_clip(make_editor(tiny_weights, anchor=True, keyframe_interval=2), frames)
    assert torch.allclose(first_only[1], keyframes[1], atol=1e-5)  # both attend to frame 0
    assert not torch.allclose(first_only[3], keyframes[3], atol=1e-4)  # frame 3 attends to frame 2 instead
