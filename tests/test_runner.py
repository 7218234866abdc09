"""The threaded runner with fake editors: windows, overlap blending, latency, frame counts, failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from vedit_cli.editor import Editor
from vedit_cli.config import EditConfig, ModelConfig
from vedit_cli.errors import FrameCountError
from vedit_cli.pipeline.runner import run_clip
from vedit_cli.pipeline.windows import blend_weights, plan_windows

SIZE = (8, 6)  # width, height of the test frames


def clip(num_frames: int, step: int = 4) -> list[np.ndarray]:
    """Flat frames whose value encodes their index (10, 14, 18, ...), with a little texture."""
    frames = []
    for index in range(num_frames):
        frame = np.full((SIZE[1], SIZE[0], 3), 10 + (step * index) % 200, dtype=np.uint8)
        frame[0, 0] = (7 * index) % 256
        frames.append(frame)
    return frames


class ListSink:
    def __init__(self):
        self.frames: list[np.ndarray] = []

    def write(self, frame_hwc: np.ndarray) -> None:
        self.frames.append(frame_hwc)


class FakeEditor(Editor):
    """Negates frames; records the calls the runner makes."""

    resizes = False
    needs_prompt = False

    def __init__(self, window_size: int = 1, overlap: int = 0):
        self.window_size, self.overlap = window_size, overlap
        self.calls: list[str] = []
        self.window_lengths: list[int] = []
        self.seeks: list[int] = []

    def seek(self, frame_index: int) -> None:
        self.seeks.append(frame_index)

    def reset(self) -> None:
        self.calls.append("reset")

    def prepare(self, prompt: str) -> None:
        self.calls.append(f"prepare:{prompt}")

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        self.window_lengths.append(len(frames_tchw))
        return -frames_tchw


class WindowOffsetEditor(FakeEditor):
    """Adds 0.1 * (window number) to every frame of a window, so overlap blending shows in the output."""

    def __init__(self, window_size: int, overlap: int):
        super().__init__(window_size, overlap)
        self.window_index = 0

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        self.window_index += 1
        self.window_lengths.append(len(frames_tchw))
        return frames_tchw + 0.1 * self.window_index


class StreamingEditor(FakeEditor):
    """Holds back `latency` frames like a streaming model; `flush` returns them."""

    def __init__(self, latency: int):
        super().__init__()
        self.latency, self.held = latency, []

    def reset(self) -> None:
        super().reset()
        self.held = []

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        self.held.extend(-frames_tchw)
        ready, self.held = self.held[: -self.latency], self.held[-self.latency :]
        return torch.stack(ready) if ready else frames_tchw[:0]

    def flush(self) -> torch.Tensor | None:
        held, self.held = self.held, []
        return torch.stack(held) if held else None


def negated(frame: np.ndarray) -> np.ndarray:
    return (255 - frame.astype(np.int64)).astype(np.uint8)


def run(frames, editor, num_frames=None, config=None, **kwargs):
    sink = ListSink()
    config = config or EditConfig(model=ModelConfig(backend="copy", size=64), queue_frames=4)
    stats = run_clip(frames, len(frames) if num_frames is None else num_frames, editor, "a prompt", sink, None, config,
                     **kwargs)
    return sink, stats


def assert_no_runner_threads():
    deadline = time.monotonic() + 5
    while any(t.name.startswith("vedit-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [t.name for t in threading.enumerate() if t.name.startswith("vedit-")] == []


def test_window_of_one_edits_every_frame_in_order():
    frames, editor, progress = clip(25), FakeEditor(), []
    sink, stats = run(frames, editor, on_progress=progress.append)
    assert stats.frames_read == stats.frames_written == 25 and stats.fps > 0
    assert len(sink.frames) == 25
    for got, source in zip(sink.frames, frames):
        np.testing.assert_array_equal(got, negated(source))
    assert editor.calls == ["reset", "prepare:a prompt"] and editor.window_lengths == [1] * 25
    assert editor.seeks == list(range(25))
    assert progress == list(range(1, 26))
    assert_no_runner_threads()


def test_overlapping_windows_are_blended_with_linear_weights():
    frames, editor = clip(40), WindowOffsetEditor(16, 4)
    sink, _ = run(frames, editor)
    assert editor.window_lengths == [16, 16, 16] and len(sink.frames) == 40
    assert editor.seeks == [0, 12, 24]
    windows = plan_windows(40, 16, 4)
    offsets = np.zeros(40)
    for number, (window, weight) in enumerate(zip(windows, blend_weights(windows, 40)), start=1):
        offsets[window.start : window.stop] += 0.1 * number * weight.numpy()
    for index, (got, source) in enumerate(zip(sink.frames, frames)):
        expected = np.minimum(source.astype(float) + 127.5 * offsets[index], 255)
        assert np.abs(got.astype(float) - expected).max() <= 1.0, f"frame {index}"
    # frame 13 sits 2/5 into the first overlap: neither window's value alone (which skipping the blend would give)
    assert abs(int(sink.frames[13][1, 1, 0]) - (int(frames[13][1, 1, 0]) + 17.85)) <= 1


def test_clip_shorter_than_a_window_is_one_window():
    editor = WindowOffsetEditor(16, 4)
    sink, _ = run(clip(5), editor)
    assert editor.window_lengths == [5] and len(sink.frames) == 5


def test_streaming_editor_with_latency_is_flushed():
    frames, editor = clip(30), StreamingEditor(latency=2)
    sink, stats = run(frames, editor)
    assert stats.frames_written == 30
    for got, source in zip(sink.frames, frames):
        np.testing.assert_array_equal(got, negated(source))
    assert editor.held == []


def test_memory_is_bounded_by_window_not_clip_length():
    pulled = [0]
    at_first_write = []

    def frames():
        for frame in clip(300):
            pulled[0] += 1
            yield frame

    class RecordingSink(ListSink):
        def write(self, frame_hwc):
            if not self.frames:
                at_first_write.append(pulled[0])
            super().write(frame_hwc)

    sink = RecordingSink()
    config = EditConfig(model=ModelConfig(backend="copy"), queue_frames=4)
    run_clip(frames(), 300, WindowOffsetEditor(16, 4), "", sink, None, config)
    assert len(sink.frames) == 300
    assert at_first_write[0] <= 16 + 4 + 2, "the runner read far ahead of what it had written"


def test_output_size_override_resizes_written_frames():
    sink = ListSink()
    config = EditConfig(model=ModelConfig(backend="copy"), queue_frames=4)
    run_clip(clip(3), 3, FakeEditor(), "", sink, (16, 12), config)
    assert [f.shape for f in sink.frames] == [(12, 16, 3)] * 3


def test_resizing_editor_gets_padded_processing_size_and_output_returns_to_source():
    class ShapeEditor(FakeEditor):
        resizes, size_multiple = True, 16

        def edit(self, frames_tchw):
            self.window_lengths.append(tuple(frames_tchw.shape))
            return frames_tchw

    frames = [np.full((121, 161, 3), 90, dtype=np.uint8)] * 3
    editor = ShapeEditor()
    sink, stats = run(frames, editor)
    assert editor.window_lengths == [(1, 3, 64, 96)] * 3
    assert stats.geometry.resized == (85, 64)
    assert all(f.shape == (121, 161, 3) and np.abs(f.astype(int) - 90).max() <= 1 for f in sink.frames)


def test_editor_that_drops_a_frame_raises_frame_count_error():
    class DroppingEditor(FakeEditor):
        def edit(self, frames_tchw):
            return frames_tchw[:-1]

    with pytest.raises(FrameCountError, match="held back"):
        run(clip(20), DroppingEditor(4, 0))
    assert_no_runner_threads()


def test_streaming_editor_that_loses_frames_at_flush_raises():
    class LossyFlush(StreamingEditor):
        def flush(self):
            held = super().flush()
            return held[:1]

    with pytest.raises(FrameCountError, match="returned 29 of 30"):
        run(clip(30), LossyFlush(latency=2))
    assert_no_runner_threads()


def test_editor_returning_extra_frames_raises():
    class Duplicating(FakeEditor):
        def edit(self, frames_tchw):
            return torch.cat([frames_tchw, frames_tchw])

    with pytest.raises(FrameCountError, match="owed"):
        run(clip(5), Duplicating())


@pytest.mark.parametrize("surplus", [-3, 2])
def test_source_with_other_frame_count_than_probed_raises(surplus):
    with pytest.raises(FrameCountError, match="probed"):
        run(clip(20 + surplus), FakeEditor(), num_frames=20)
    assert_no_runner_threads()


@pytest.mark.parametrize("error_type", [RuntimeError, KeyboardInterrupt])
def test_editor_error_propagates_and_stops_threads(error_type):
    class Failing(FakeEditor):
        def edit(self, frames_tchw):
            if len(self.window_lengths) == 3:
                raise error_type("boom")
            return super().edit(frames_tchw)

    with pytest.raises(error_type, match="boom"):
        run(clip(200), Failing())
    assert_no_runner_threads()


def test_reader_and_writer_errors_propagate():
    def broken_source():
        yield from clip(5)
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        run(list(broken_source()) and broken_source(), FakeEditor(), num_frames=20)
    assert_no_runner_threads()

    class BrokenSink(ListSink):
        def write(self, frame_hwc):
            if len(self.frames) == 7:
                raise BrokenPipeError("ffmpeg exited")
            super().write(frame_hwc)

    config = EditConfig(model=ModelConfig(backend="copy"), queue_frames=2)
    with pytest.raises(BrokenPipeError, match="ffmpeg exited"):
        run_clip(clip(200), 200, FakeEditor(), "", BrokenSink(), None, config)
    assert_no_runner_threads()


def test_source_iterator_is_closed_when_editing_fails():
    closed = []

    def source():
        try:
            yield from clip(100)
        finally:
            closed.append(True)

    class Failing(FakeEditor):
        def edit(self, frames_tchw):
            raise ValueError("bad")

    with pytest.raises(ValueError):
        run(source(), Failing(), num_frames=100)
    assert_no_runner_threads()
    assert closed == [True]


def test_source_is_closed_when_prepare_fails():
    closed = []

    def source():
        try:
            yield from clip(10)
        finally:
            closed.append(True)

    class FailingPrepare(FakeEditor):
        def prepare(self, prompt):
            raise RuntimeError("no weights")

    with pytest.raises(RuntimeError, match="no weights"):
        run(source(), FailingPrepare(), num_frames=10)
    assert closed == [True]
