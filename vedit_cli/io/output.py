"""Write one finished clip atomically: hidden temp files beside the target, renamed only when complete; the temp
files of earlier writers of the same target that died (SIGKILL, power cut) are removed first (see io/partials.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vedit_cli.config import EncodeConfig
from vedit_cli.errors import FrameCountError, OutputError
from vedit_cli.io.audio import mux_audio
from vedit_cli.io.encode import CONTAINER_FORMATS, VideoWriter, check_encode_target, size_change_note
from vedit_cli.io.partials import PartialLock, remove_stale_partials
from vedit_cli.io.probe import VideoInfo


def check_output(input_path: Path, output_path: Path, overwrite: bool) -> None:
    """Refuse an output that is the input (always), exists without `overwrite`, lies in an unwritable folder, or has
    an extension vedit cannot write."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in CONTAINER_FORMATS:
        raise OutputError(f"{output_path}: cannot write {output_path.suffix or 'files without an extension'}; "
                          f"name the output with one of {', '.join(CONTAINER_FORMATS)}")
    if _same_file(input_path, output_path):
        raise OutputError(f"{output_path}: is the input file; choose a different output name (inputs are never "
                          "overwritten)")
    if output_path.is_dir():
        raise OutputError(f"{output_path}: is a directory; give an output file name such as out.mp4")
    if output_path.exists() and not overwrite:
        raise OutputError(f"{output_path}: already exists; pass --overwrite or choose another name")
    folder = _nearest_existing_folder(output_path.parent)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{output_path}: cannot write in {folder} (permission denied); choose another folder")


def _same_file(input_path: Path, output_path: Path) -> bool:
    if output_path.exists() and input_path.exists():
        return os.path.samefile(input_path, output_path)
    return input_path.resolve() == output_path.resolve()


def _nearest_existing_folder(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; choose another output folder")
    return folder


class ClipWriter:
    """Context manager: frames -> hidden partial video; commit() checks the count, muxes audio, renames into place.
    Leaving the block without commit (an exception, Ctrl-C) kills ffmpeg and deletes every temp file; a writer
    killed outright leaves them behind, locked by nobody, and the next writer of the same output removes them."""

    def __init__(self, output_path: Path, source: VideoInfo, width: int, height: int, encode: EncodeConfig) -> None:
        self.output_path = Path(output_path)
        self.source = source
        check_encode_target(self.output_path, encode)
        if _same_file(source.path, self.output_path):
            raise OutputError(f"{self.output_path}: is the input file; choose a different output name")
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.output_path)
        self._lock: PartialLock | None = None
        self._committed = False
        self.notes = tuple(note for note in (size_change_note(width, height, encode),) if note)
        try:  # from the lock file's creation on, an interruption (Ctrl-C) anywhere here removes what was made
            self._lock = PartialLock(self.output_path)
            self._video_path = self._lock.partial("video")
            self._muxed_path = self._lock.partial("muxed")
            self._writer = VideoWriter(self._video_path, width, height, source.fps, encode)
        except BaseException:
            self._remove_temps()
            raise

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    @property
    def encoded_size(self) -> tuple[int, int]:
        """(width, height) the output holds: the frames' size, odd sides cropped by one unless keep_odd_size."""
        return self._writer.encoded_size

    def write(self, frame_hwc_uint8: np.ndarray) -> None:
        self._writer.write(frame_hwc_uint8)

    def commit(self, expected_frames: int) -> Path:
        """Finish the clip only if every expected frame arrived; the output appears whole or not at all."""
        if self.frames_written != expected_frames:
            self.abort()
            raise FrameCountError(f"{self.output_path}: wrote {self.frames_written} frames but the input has "
                                  f"{expected_frames}; nothing was saved (this is a bug: please report it)")
        try:
            self._writer.close()
            mux_audio(self._video_path, self.source, self._muxed_path)
            os.replace(self._muxed_path, self.output_path)
        except BaseException:
            self.abort()
            raise
        self._committed = True
        self._remove_temps()
        return self.output_path

    def abort(self) -> None:
        """Kill the encoder and delete every temp file; the target is left as it was."""
        self._writer.abort()
        self._remove_temps()

    def _remove_temps(self) -> None:
        if self._lock is None:
            return
        for role in ("video", "muxed"):
            self._lock.partial(role).unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if not self._committed:
            self.abort()
        return False
