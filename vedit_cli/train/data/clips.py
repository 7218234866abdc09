"""Frames or consecutive segments of clips, read with decord one sample at a time (never a whole clip in memory).

`ClipSegments(clips, segment_length=L, stride=S)` indexes every start frame of every clip at which L frames spaced
S apart fit; `load(index)` opens the clip, seeks and decodes just those frames ({"frames": uint8 [L, H, W, 3],
"clip": path, "start": frame}). `open_clips(path)` accepts a clip, a folder of clips, or a CSV/JSONL manifest with an
`input` (or `clip`/`path`) column. Clip lengths are read once from the container when the source is built.
Random access costs a seek and a decode from the previous keyframe (about 50 ms a frame at 512x512 with decord):
for small worlds extract frames once into a cache and train on that instead.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from vedit_cli.errors import TrainingDataError
from vedit_cli.manifest import read_manifest_rows
from vedit_cli.train.data.samples import BadSample

CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")
PATH_COLUMNS = ("input", "clip", "path")


def open_clips(path: Path) -> list[Path]:
    """The clips named by a file, a folder (recursively) or a CSV/JSONL manifest."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in CLIP_SUFFIXES)
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        rows = [row for _, row in read_manifest_rows(path, TrainingDataError)]
        column = next((name for name in PATH_COLUMNS if rows and name in rows[0]), None)
        if column is None:
            raise TrainingDataError(f"manifest {path} needs an 'input' column naming each clip")
        return [path.parent / row[column] for row in rows]
    if path.is_file():
        return [path]
    raise TrainingDataError(f"clips {path} do not exist")


class ClipSegments:
    """Every segment of `segment_length` frames, `stride` apart, starting every `step` frames in each clip."""

    def __init__(self, clips: list[Path], segment_length: int = 1, stride: int = 1, step: int = 1,
                 size: tuple[int, int] | None = None):
        self.segment_length, self.stride, self.step, self.size = segment_length, stride, step, size
        self.clips, self.counts, self.unreadable = [], [], []
        span = (segment_length - 1) * stride + 1
        for clip in clips:
            try:
                frames = len(self._reader(clip))
            except (RuntimeError, OSError, ValueError) as error:  # decord raises DECORDError (a RuntimeError)
                self.unreadable.append(f"{clip}: {error}")
                continue
            starts = 0 if frames < span else (frames - span) // step + 1
            if starts:
                self.clips.append(Path(clip))
                self.counts.append(starts)
        self.offsets = list(np.cumsum([0, *self.counts]))

    def _reader(self, clip: Path):
        import decord

        width, height = self.size or (-1, -1)
        return decord.VideoReader(str(clip), width=width, height=height, num_threads=1)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[Path, int]:
        clip = bisect.bisect_right(self.offsets, index) - 1
        return self.clips[clip], int(index - self.offsets[clip]) * self.step

    def describe(self, index: int) -> str:
        clip, start = self._locate(index)
        return f"{clip} frame {start}"

    def load(self, index: int) -> dict:
        clip, start = self._locate(index)
        try:
            reader = self._reader(clip)
            if start:
                reader.seek_accurate(start)
            frames = [reader.next().asnumpy()]
            for _ in range(self.segment_length - 1):
                if self.stride > 1:
                    reader.skip_frames(self.stride - 1)
                frames.append(reader.next().asnumpy())
        except (RuntimeError, OSError, ValueError, StopIteration) as error:
            raise BadSample(f"cannot decode ({type(error).__name__}: {error})") from error
        return {"frames": np.stack(frames), "clip": str(clip), "start": start}
