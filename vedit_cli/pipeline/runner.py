"""Runs one clip through an editor with decoding, editing and encoding overlapped.

reader thread (decode + preprocess) -> bounded queue -> this thread (windows -> editor.edit -> overlap blend)
-> bounded queue -> writer thread (postprocess + sink.write). Memory is bounded by the window size and the queue
bounds, never by the clip length: input frames are dropped once no later window needs them, and each output frame
is sent to the writer as soon as every window that covers it has been edited.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from vedit_cli.editor import Editor
from vedit_cli.config import EditConfig
from vedit_cli.errors import FrameCountError
from vedit_cli.pipeline.frames import FrameGeometry, plan_geometry, postprocess, preprocess
from vedit_cli.pipeline.windows import blend_weights, frame_coverage, plan_windows

POLL_SECONDS = 0.05  # how often a blocked thread looks at the stop flag
JOIN_SECONDS = 10.0  # how long to wait for a helper thread after a failure
_END = object()


class FrameSink(Protocol):
    def write(self, frame_hwc: np.ndarray) -> None: ...


@dataclass(frozen=True)
class ClipStats:
    """What one run did: frames in and out, wall time, and throughput."""

    frames_read: int
    frames_written: int
    seconds: float
    geometry: FrameGeometry | None

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0


class _Stage(threading.Thread):
    """A daemon thread that records its exception for the main thread instead of printing it."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._work, self.stop, self.error = target, stop, None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = error
            self.stop.set()


def _put(items: queue.Queue, item, stop: threading.Event) -> bool:
    """Put, waking regularly to give up when `stop` is set; returns False when it gave up."""
    while not stop.is_set():
        try:
            items.put(item, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(items: queue.Queue, stop: threading.Event):
    """Get, waking regularly to give up (returning _END) when `stop` is set."""
    while not stop.is_set():
        try:
            return items.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
    return _END


def _raise_failure(stages: tuple[_Stage, ...], stop: threading.Event) -> None:
    """Re-raise the error of a failed stage in the main thread; complain if the pipeline stopped without one."""
    for stage in stages:
        if stage.error is not None:
            raise stage.error
    if stop.is_set():
        raise RuntimeError("the pipeline was stopped")


def _get_checked(items: queue.Queue, stop: threading.Event, stages: tuple[_Stage, ...]):
    """Get for the main thread: re-raise a failed stage's error as soon as it happens."""
    while True:
        _raise_failure(stages, stop)
        try:
            return items.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue


def _read_frames(frames: Iterator[np.ndarray], geometry: FrameGeometry, num_frames: int, inputs: queue.Queue, stop):
    """Reader thread: decode and preprocess in order; refuse a source that yields more frames than probed."""
    count = 0
    try:
        for frame in frames:
            if count == num_frames:
                raise FrameCountError(f"the decoder gave more frames than the {num_frames} probed; not writing output")
            if not _put(inputs, preprocess(frame, geometry), stop):
                return
            count += 1
        _put(inputs, _END, stop)
    finally:
        _close(frames)


def _write_frames(outputs: queue.Queue, sink: FrameSink, geometry: FrameGeometry, counter: list[int], stop,
                  on_progress: Callable[[int], None] | None) -> None:
    """Writer thread: postprocess and hand each frame to the sink; calls `on_progress(frames_written)`."""
    while (frame_chw := _get(outputs, stop)) is not _END:
        sink.write(postprocess(frame_chw, geometry))
        counter[0] += 1
        if on_progress is not None:
            on_progress(counter[0])


class _OverlapBlender:
    """Maps the editor's output stream onto frames, blends overlapping windows, and releases finished frames."""

    def __init__(self, windows: list[range], num_frames: int, emit: Callable[[torch.Tensor], None]):
        self.windows, self.weights = windows, blend_weights(windows, num_frames)
        self.coverage = frame_coverage(windows, num_frames)
        self.slots: deque[tuple[int, int]] = deque()  # (window, position) still owed by the editor
        self.sums: dict[int, torch.Tensor] = {}
        self.received: dict[int, int] = {}
        self.next_frame, self.emit = 0, emit

    def expect(self, window_index: int) -> None:
        """Record that the frames of this window were given to the editor."""
        self.slots.extend((window_index, position) for position in range(len(self.windows[window_index])))

    def _finished(self, frame: int) -> bool:
        return self.received.get(frame) == self.coverage[frame]

    def accept(self, edited_tchw: torch.Tensor | None) -> None:
        """Take edited frames in order; emit every frame whose covering windows have all been returned."""
        if edited_tchw is None:
            return
        if len(edited_tchw) > len(self.slots):
            raise FrameCountError(f"the editor returned {len(edited_tchw)} frames but only {len(self.slots)} were owed")
        for frame_chw in edited_tchw:
            window_index, position = self.slots.popleft()
            frame = self.windows[window_index].start + position
            weight = float(self.weights[window_index][position])
            weighted = frame_chw.float() * weight if self.coverage[frame] > 1 else frame_chw
            self.sums[frame] = self.sums[frame] + weighted if frame in self.sums else weighted
            self.received[frame] = self.received.get(frame, 0) + 1
        while self.next_frame < len(self.coverage) and self._finished(self.next_frame):
            del self.received[self.next_frame]
            self.emit(self.sums.pop(self.next_frame))
            self.next_frame += 1


class _InputWindow:
    """The decoded frames still needed by the current or a later window, keyed from `first`."""

    def __init__(self, inputs: queue.Queue, stages: tuple[_Stage, ...], stop: threading.Event):
        self.inputs, self.stages, self.stop = inputs, stages, stop
        self.frames: deque[torch.Tensor] = deque()
        self.first, self.read = 0, 0

    def take(self, window: range, num_frames: int) -> torch.Tensor:
        """Frames of `window` stacked [T, 3, H, W], reading from the reader thread as far as needed."""
        while self.read < window.stop:
            item = _get_checked(self.inputs, self.stop, self.stages)
            if item is _END:
                raise FrameCountError(f"decoded only {self.read} of the {num_frames} probed frames; not writing output")
            self.frames.append(item)
            self.read += 1
        offset = window.start - self.first
        if len(window) == 1:
            return self.frames[offset].unsqueeze(0)
        return torch.stack([self.frames[offset + index] for index in range(len(window))])

    def drop_before(self, frame: int) -> None:
        """Forget frames no later window needs."""
        while self.first < frame and self.frames:
            self.frames.popleft()
            self.first += 1

    def finish(self, num_frames: int) -> None:
        """Check the reader ended exactly at `num_frames`."""
        if _get_checked(self.inputs, self.stop, self.stages) is not _END:
            raise FrameCountError(f"the decoder gave more frames than the {num_frames} probed; not writing output")


def _edit_windows(editor: Editor, windows: list[range], num_frames: int, source: _InputWindow,
                  blender: _OverlapBlender) -> None:
    """Main loop: feed each window to the editor, hold the frames later windows share, then flush the editor."""
    for index, window in enumerate(windows):
        frames_tchw = source.take(window, num_frames)
        source.drop_before(windows[index + 1].start if index + 1 < len(windows) else num_frames)
        blender.expect(index)
        editor.seek(window.start)
        blender.accept(editor.edit(frames_tchw))
        if len(blender.slots) > max(editor.latency, 0):
            raise FrameCountError(
                f"the editor held back {len(blender.slots)} frames, more than its latency of {editor.latency}"
            )
    blender.accept(editor.flush())
    if blender.slots or blender.next_frame != num_frames:
        raise FrameCountError(f"the editor returned {blender.next_frame} of {num_frames} frames; not writing output")
    source.finish(num_frames)


def run_clip(
    frames: Iterable[np.ndarray],
    num_frames: int,
    editor: Editor,
    prompt: str,
    sink: FrameSink,
    output_size: tuple[int, int] | None,
    config: EditConfig,
    on_progress: Callable[[int], None] | None = None,
) -> ClipStats:
    """Edit `num_frames` decoded frames into `sink`; raises FrameCountError unless frames out == frames in.

    `output_size` (width, height) overrides the size written; None: the source size, or the processing size when
    `config.output_size == "processing"`. `on_progress(frames_written)` is called from the writer thread.
    """
    started = time.perf_counter()
    iterator = iter(frames)
    try:  # until the reader thread owns the source, close it here on any failure (stops a decoder process)
        first = next(iterator, None)
        if first is None:
            if num_frames:
                raise FrameCountError(f"decoded 0 of the {num_frames} probed frames; not writing output")
            return ClipStats(0, 0, time.perf_counter() - started, None)
        geometry = _geometry(first, editor, config, output_size)
        editor.reset()
        editor.prepare(prompt)
    except BaseException:
        _close(iterator)
        raise
    written = _run_threads(_chain(first, iterator), num_frames, editor, sink, geometry, config, on_progress)
    return ClipStats(num_frames, written, time.perf_counter() - started, geometry)


def _geometry(first: np.ndarray, editor: Editor, config: EditConfig, output_size) -> FrameGeometry:
    """Sizes for this clip, from the first decoded frame."""
    height, width = first.shape[:2]
    geometry = plan_geometry(width, height, config.model.size, editor.size_multiple, editor.resizes, config.output_size)
    if output_size is not None and tuple(output_size) != geometry.output:
        geometry = FrameGeometry(geometry.source, geometry.resized, geometry.padded, tuple(output_size))
    return geometry


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The first frame again, then the rest; closing it closes the source iterator."""
    try:
        yield first
        yield from rest
    finally:
        _close(rest)


def _close(frames: Iterator[np.ndarray]) -> None:
    """Close a generator source (its finally blocks stop decoders); plain iterators need nothing."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def _run_threads(frames, num_frames, editor, sink, geometry, config, on_progress) -> int:
    """Start reader and writer, edit on this thread, and stop everything promptly if any part fails."""
    stop = threading.Event()
    bound = max(1, config.queue_frames)
    inputs, outputs = queue.Queue(maxsize=bound), queue.Queue(maxsize=bound)
    written = [0]
    reader = _Stage("vedit-reader", lambda: _read_frames(frames, geometry, num_frames, inputs, stop), stop)
    writer = _Stage("vedit-writer", lambda: _write_frames(outputs, sink, geometry, written, stop, on_progress), stop)

    def emit(frame_chw: torch.Tensor) -> None:
        _raise_failure((reader, writer), stop)
        if not _put(outputs, frame_chw, stop):
            _raise_failure((reader, writer), stop)

    reader.start()
    writer.start()
    try:
        windows = plan_windows(num_frames, editor.window_size, editor.overlap)
        source = _InputWindow(inputs, (reader, writer), stop)
        _edit_windows(editor, windows, num_frames, source, _OverlapBlender(windows, num_frames, emit))
        _put(outputs, _END, stop)
        while writer.is_alive():
            writer.join(POLL_SECONDS)
        _raise_failure((reader, writer), threading.Event())
    finally:
        stop.set()
        reader.join(JOIN_SECONDS)
        writer.join(JOIN_SECONDS)
    if written[0] != num_frames:
        raise FrameCountError(f"wrote {written[0]} of {num_frames} frames; not keeping the output")
    return written[0]
