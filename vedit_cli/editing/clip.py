"""Edit one clip end to end: check the output path, probe, decode, edit, encode, and commit atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vedit_cli.editor import Editor
from vedit_cli.config import EditConfig
from vedit_cli.errors import ConfigError
from vedit_cli.pipeline.frames import processing_size
from vedit_cli.pipeline.runner import ClipStats, run_clip

if TYPE_CHECKING:
    from vedit_cli.io.probe import VideoInfo


@dataclass(frozen=True)
class ClipResult:
    """What one edited clip produced."""

    input_path: Path
    output_path: Path
    info: "VideoInfo"  # the input's probe
    stats: ClipStats
    output_size: tuple[int, int]  # (width, height) written
    notes: tuple[str, ...] = ()  # what the output changed and why, for the clip's line (e.g. an odd size cropped)

    @property
    def frames_written(self) -> int:
        return self.stats.frames_written

    @property
    def fps(self) -> float:
        """Frames per second of the whole edit (decode + edit + encode)."""
        return self.stats.fps


def output_size_for(info: "VideoInfo", editor: Editor, config: EditConfig) -> tuple[int, int]:
    """(width, height) to write: the source's display size, or the processing size when asked."""
    if config.output_size == "processing" and editor.resizes:
        return processing_size(info.width, info.height, config.model.size)
    return info.width, info.height


def edit_clip(
    input_path: str | Path,
    output_path: str | Path,
    editor: Editor,
    prompt: str,
    config: EditConfig,
    on_progress: Callable[[int], None] | None = None,
    info: "VideoInfo | None" = None,
) -> ClipResult:
    """Edit `input_path` into `output_path` with the same frame count, frame rate, display size and audio (an odd
    side is cropped by one pixel for 4:2:0 unless `config.encode.keep_odd_size`; the result's notes say so)."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.output import ClipWriter, check_output
    from vedit_cli.io.probe import probe

    # 1. Refuse a bad output path before any work (exists without --overwrite, equals the input, unwritable).
    check_output(Path(input_path), Path(output_path), config.overwrite)
    # 2. Probe (unless the caller already did): exact fps, frames that really decode, display size, audio.
    info = info if info is not None else probe(input_path)
    # 3. An instruction-following editor with no instruction would silently return a near-copy.
    if editor.needs_prompt and not prompt.strip():
        raise ConfigError(f"{input_path}: the {config.model.backend} backend needs a non-empty edit instruction")
    width, height = output_size_for(info, editor, config)
    # 4. Decode -> edit -> encode, overlapped; the writer keeps everything in temporary files until commit.
    with ClipWriter(Path(output_path), info, width, height, config.encode) as writer:
        frames = read_frames(info)
        stats = run_clip(frames, info.frame_count, editor, prompt, writer, (width, height), config, on_progress)
        # 5. Mux audio and rename into place only when every frame read was written.
        final_path = writer.commit(stats.frames_read)
    return ClipResult(Path(input_path), Path(final_path), info, stats, writer.encoded_size, writer.notes)
