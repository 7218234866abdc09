"""End-to-end frames/s of `edit_clip` with the copy backend beside a raw encode of the same frames, in one run.

Usage: .venv/bin/python scripts/io_throughput.py [--frames 300] [--size 512] [--repeats 2]

Synthesises a WxW clip with ffmpeg's lavfi testsrc2 in a temporary folder, then times
  pipeline: edit_clip(copy backend) = decode + to-tensor + edit + from-tensor + encode, threads overlapped;
  raw:      the same clip decoded into memory first, then only written through the same ClipWriter/encoder settings.
The ratio pipeline/raw says how much of the encoder's speed the pipeline keeps (target >= 85%, issue 11).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass
class Timing:
    """Wall seconds and CPU seconds (this process; ffmpeg children) of one run."""

    frames: int
    wall: float
    cpu_python: float
    cpu_ffmpeg: float
    inner_wall: float | None = None  # run_clip alone (no probe, no audio mux/commit)

    @property
    def fps(self) -> float:
        return self.frames / self.wall


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def timed(run) -> Timing:
    """Run `run() -> (frames, inner_wall)` and measure it."""
    cpu_before, started = _cpu(), time.perf_counter()
    frames, inner_wall = run()
    wall, cpu_after = time.perf_counter() - started, _cpu()
    return Timing(frames, wall, cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1], inner_wall)


def time_pipeline(source: Path, output: Path, config) -> Timing:
    """edit_clip with the copy backend: probe + decode + to-tensor + edit + from-tensor + encode + mux."""
    from vedit_cli.editor import create_editor
    from vedit_cli.editing.clip import edit_clip

    from vedit_cli.settings import resolve_run

    editor = create_editor(resolve_run(config.model))

    def run():
        result = edit_clip(source, output, editor, "", config)
        return result.frames_written, result.stats.seconds

    return timed(run)


def time_raw_encode(source: Path, output: Path, config) -> Timing:
    """Pre-decoded frames written through the same ClipWriter (same encoder settings, same audio mux)."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.output import ClipWriter
    from vedit_cli.io.probe import probe

    info = probe(source)
    frames = list(read_frames(info))

    def run():
        with ClipWriter(output, info, info.width, info.height, config.encode) as writer:
            for frame in frames:
                writer.write(frame)
            writer.commit(len(frames))
        return len(frames), None

    return timed(run)


def time_decode(source: Path) -> Timing:
    """Decoding alone, for reference."""
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    info = probe(source)
    return timed(lambda: (sum(1 for _ in read_frames(info)), None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs for each side")
    args = parser.parse_args()

    from vedit_cli.config import EditConfig, ModelConfig

    config = EditConfig(model=ModelConfig(backend="copy"), overwrite=True)
    with tempfile.TemporaryDirectory(prefix="vedit_io_") as folder:
        source = synthesise_clip(Path(folder), args.frames, args.size)
        pipeline, raw = [], []
        for _ in range(args.repeats):  # interleaved, so machine load affects both sides alike
            raw.append(time_raw_encode(source, Path(folder) / "raw.mp4", config))
            pipeline.append(time_pipeline(source, Path(folder) / "edited.mp4", config))
        decode = time_decode(source)
    best_raw, best_pipeline = max(raw, key=lambda t: t.fps), max(pipeline, key=lambda t: t.fps)
    print(f"clip: {args.frames} frames of {args.size}x{args.size}, encoder {config.encode.codec} "
          f"preset={config.encode.preset} crf={config.encode.crf}; best of {args.repeats}, interleaved")
    print(f"decode alone:                         {decode.fps:7.1f} frames/s  cpu {_per_frame(decode)}")
    print(f"raw encode of pre-decoded frames:     {best_raw.fps:7.1f} frames/s  cpu {_per_frame(best_raw)}")
    print(f"edit_clip copy (probe..commit):       {best_pipeline.fps:7.1f} frames/s  cpu {_per_frame(best_pipeline)}")
    inner_fps = best_pipeline.frames / best_pipeline.inner_wall
    print(f"  of which run_clip (decode+edit+encode, no probe/mux): {inner_fps:7.1f} frames/s")
    print(f"ratio edit_clip/raw: {best_pipeline.fps / best_raw.fps:.1%}; run_clip/raw: {inner_fps / best_raw.fps:.1%}"
          " (target >= 85%)")
    cpu_ratio = _cpu_total(best_raw) / _cpu_total(best_pipeline)
    print(f"cpu-time ratio raw/edit_clip: {cpu_ratio:.1%} (what the wall ratio tends to when every core is busy)")


def _cpu_total(timing: Timing) -> float:
    return timing.cpu_python + timing.cpu_ffmpeg


def _per_frame(timing: Timing) -> str:
    return (f"{1000 * timing.cpu_python / timing.frames:5.2f} ms/frame python + "
            f"{1000 * timing.cpu_ffmpeg / timing.frames:5.2f} ms/frame ffmpeg")

if __name__ == "__main__":
    main()
