"""End-to-end frames/s of `edit_clip` with the copy backend beside a raw encode of the same frames, in one run.

Usage: .venv/bin/python scripts/io_throughput.py [--frames 300] [--size 512] [--repeats 2]

Synthesises a WxW clip with ffmpeg's lavfi testsrc2 in a temporary folder, then times
  pipeline: edit_clip(copy backend) = decode + to-tensor + edit + from-tensor + encode, threads overlapped;
  raw:      the same clip decoded into memory first, then only written through the same ClipWriter/encoder settings.
The ratio pipeline/raw says how much of the encoder's speed the pipeline keeps (target >= 70%).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def synthesise_clip(folder: Path, frames: int, size: int, fps: int = 30) -> Path:
    """A testsrc2 clip of `frames` frames at size x size, H.264, with a sine audio track."""
    from vedit_cli.io.ffmpeg import run_ffmpeg, stderr_tail

    path = folder / f"testsrc2_{size}.mp4"
    result = run_ffmpeg([
        "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-frames:v", str(frames),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ])
    if result.returncode != 0:
        sys.exit(f"ffmpeg could not synthesise the test clip: {stderr_tail(result.stderr)}")
    return path


def time_pipeline(source: Path, output: Path, config) -> tuple[float, int]:
    """Seconds and frames of edit_clip with the copy backend."""
    from vedit_cli.backends.base import create_editor
    from vedit_cli.edit_clip import edit_clip

    editor = create_editor(config.model)
    started = time.perf_counter()
    result = edit_clip(source, output, editor, "", config)
    return time.perf_counter() - started, result.frames_written


def time_raw_encode(source: Path, output: Path, config) -> tuple[float, int]:
    """Seconds and frames to write pre-decoded frames through the same ClipWriter (same encoder settings)."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.output import ClipWriter
    from vedit_cli.io.probe import probe

    info = probe(source)
    frames = list(read_frames(info))
    started = time.perf_counter()
    with ClipWriter(output, info, info.width, info.height, config.encode) as writer:
        for frame in frames:
            writer.write(frame)
        writer.commit(len(frames))
    return time.perf_counter() - started, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs for each side")
    args = parser.parse_args()

    from vedit_cli.config import EditConfig, ModelConfig

    config = EditConfig(model=ModelConfig(backend="copy"), overwrite=True)
    with tempfile.TemporaryDirectory(prefix="vedit_io_") as folder:
        source = synthesise_clip(Path(folder), args.frames, args.size)
        pipeline, raw = [], []
        for _ in range(args.repeats):  # interleaved, so machine load affects both sides alike
            raw.append(time_raw_encode(source, Path(folder) / "raw.mp4", config))
            pipeline.append(time_pipeline(source, Path(folder) / "edited.mp4", config))
    pipeline_fps = max(frames / seconds for seconds, frames in pipeline)
    raw_fps = max(frames / seconds for seconds, frames in raw)
    print(f"clip: {args.frames} frames of {args.size}x{args.size}, encoder {config.encode.codec} "
          f"preset={config.encode.preset} crf={config.encode.crf}, best of {args.repeats}")
    print(f"raw encode of pre-decoded frames: {raw_fps:8.1f} frames/s")
    print(f"edit_clip copy (decode+edit+encode): {pipeline_fps:8.1f} frames/s")
    print(f"ratio pipeline/raw: {pipeline_fps / raw_fps:.1%} (target >= 70%)")


if __name__ == "__main__":
    main()
