"""Measure one benchmark row: FLOPs per clip and per frame, wall time per frame and per stage, peak memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vedit_cli.editor import Editor
from vedit_cli.benchmark.flops import FlopProbe, StageCounts
from vedit_cli.benchmark.memory import read_peaks, reset_peaks
from vedit_cli.benchmark.timing import StageTimer, make_clock

TEXT_STAGE = "text_encoder"


@dataclass
class FlopResult:
    per_clip: StageCounts  # prepare(): text encoding, once per clip
    per_frame: StageCounts  # edit() over the clip, divided by its frame count


@dataclass
class TimeResult:
    per_frame: list[float] = field(default_factory=list)  # one sample per window: its seconds / its frames
    stages_per_frame: dict[str, list[float]] = field(default_factory=dict)
    prepare_per_clip: list[float] = field(default_factory=list)  # one sample per repeat
    memory: dict = field(default_factory=dict)


def make_clip(frames: int, height: int, width: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A seeded clip [T, 3, H, W] in [-1, 1]: speed does not depend on pixel values."""
    generator = torch.Generator("cpu").manual_seed(seed)
    clip = torch.rand(frames, 3, height, width, generator=generator) * 2 - 1
    return clip.to(device=device, dtype=dtype)


def split_windows(clip_tchw: torch.Tensor, window_size: int) -> list[torch.Tensor]:
    """Consecutive windows of the editor's size (the last may be shorter); overlap is not re-computed here."""
    return list(torch.split(clip_tchw, max(1, window_size)))


def run_clip(editor: Editor, clip_tchw: torch.Tensor) -> None:
    for window in split_windows(clip_tchw, editor.window_size):
        editor.edit(window)
    editor.flush()


def count_flops(editor: Editor, clip_tchw: torch.Tensor, prompt: str, shape_only: bool = True) -> FlopResult:
    """FLOPs of one clip; `shape_only` runs the stage modules on meta (seconds; the outputs are zeros)."""
    editor.reset()
    with FlopProbe(editor.stage_modules(), shape_only=shape_only) as probe:
        editor.prepare(prompt)
        per_clip = probe.take()
        run_clip(editor, clip_tchw)
        per_frame = probe.take().scaled(len(clip_tchw))
    return FlopResult(per_clip, per_frame)


def time_clip(editor: Editor, clip_tchw: torch.Tensor, prompt: str, repeats: int, warmup: int,
              device: torch.device, on_progress=None) -> TimeResult:
    """Untimed warm-up frames, then `repeats` timed clips: per-window wall time and per-stage time, peak memory."""
    clock = make_clock(device)
    result = TimeResult()
    with StageTimer(editor.stage_modules(), clock) as timer:
        editor.reset()
        editor.prepare(prompt)
        if warmup:
            run_clip(editor, clip_tchw[:warmup])
        timer.take()
        host_reset = reset_peaks(device)
        for repeat in range(repeats):
            _time_repeat(editor, clip_tchw, prompt, clock, timer, result)
            if on_progress:
                on_progress(repeat + 1, repeats)
        result.memory = read_peaks(device, host_reset)
    return result


def _time_repeat(editor: Editor, clip_tchw, prompt: str, clock, timer: StageTimer, result: TimeResult) -> None:
    editor.reset()
    start = clock.mark()
    editor.prepare(prompt)
    end = clock.mark()
    timer.take()  # synchronizes: `end` is readable
    result.prepare_per_clip.append(clock.seconds(start, end))
    windows = split_windows(clip_tchw, editor.window_size)
    for index, window in enumerate(windows):
        start = clock.mark()
        editor.edit(window)
        if index == len(windows) - 1:
            editor.flush()
        end = clock.mark()
        stage_seconds = timer.take()
        result.per_frame.append(clock.seconds(start, end) / len(window))
        for stage in set(stage_seconds) | set(result.stages_per_frame):
            samples = result.stages_per_frame.setdefault(stage, [])
            samples.append(stage_seconds.get(stage, 0.0) / len(window))
