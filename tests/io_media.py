"""Helpers for the I/O tests: the MANIFEST's facts about ../shared/videos and small ffmpeg measurements."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vedit_cli.io.ffmpeg import run_ffmpeg


@dataclass(frozen=True)
class ClipFacts:
    """One MANIFEST row: frames decoded, display size, clockwise rotation, audio codec, fps (exact when CFR)."""

    frames: int
    size: tuple[int, int]
    rotation: int
    audio: str | None
    fps: Fraction
    cfr: bool = True


MANIFEST = {
    "flipping_a_pancake.mkv": ClipFacts(310, (426, 240), 0, "opus", Fraction(30)),
    "video_90.mov": ClipFacts(3, (320, 568), 90, None, Fraction(30)),
    "fire2.mp4": ClipFacts(25, (1280, 720), 180, "aac", Fraction("10.51"), cfr=False),
    "portrait_4k60.mp4": ClipFacts(18, (2160, 3840), 90, "aac", Fraction("60.06"), cfr=False),
    "realshort.mp4": ClipFacts(36, (320, 240), 0, "aac", Fraction(45000, 1499)),
    "hdr10-video-with-sdr-container.mp4": ClipFacts(28, (1920, 1080), 0, "aac", Fraction("27.52"), cfr=False),
    "dolbyVision-hdr.MOV": ClipFacts(4, (720, 1280), 90, "aac", Fraction(30)),
    "roadtrip-vp92-10bit.webm": ClipFacts(72, (426, 240), 0, None, Fraction(24000, 1001)),
    "bear-vp9-odd-dimensions.webm": ClipFacts(30, (161, 121), 0, None, Fraction(30000, 1001)),
    "chrome.webm": ClipFacts(899, (480, 270), 0, "vorbis", Fraction(30000, 1001)),
    "pigs_in_a_polka.gif": ClipFacts(30, (314, 273), 0, None, Fraction(10)),
    "newtonscradle.gif": ClipFacts(36, (200, 150), 0, None, Fraction("43.75"), cfr=False),
    "tgve/videos/gold-fish.mp4": ClipFacts(32, (480, 480), 0, None, Fraction(10)),
    "tgve/videos/miami-surf.mp4": ClipFacts(32, (480, 480), 0, None, Fraction(10)),
    "tgve/videos/cat-in-the-sun.mp4": ClipFacts(32, (480, 480), 0, None, Fraction(10)),
    "tgve/videos/dirt-road-driving.mp4": ClipFacts(128, (480, 480), 0, None, Fraction(14)),
}
VFR_FPS_TOLERANCE = 0.01  # the MANIFEST rounds VFR averages and ffmpeg's header uses a slightly different span


def audio_duration(path: Path) -> float:
    """Seconds of decoded audio in the first audio stream (edit lists applied), from a framecrc listing."""
    listing = run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:a:0", "-c:a", "pcm_s16le",
                          "-f", "framecrc", "-"]).stdout
    time_base = Fraction(next(line for line in listing.splitlines() if line.startswith("#tb 0:")).split(":")[1].strip())
    packets = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    start, end = int(packets[0][2]), int(packets[-1][2]) + int(packets[-1][3])
    return float((end - start) * time_base)


def header_text(path: Path) -> str:
    """ffmpeg's description of a file (streams and metadata), as `ffmpeg -i` prints it."""
    return run_ffmpeg(["-i", str(path)]).stderr.split("At least one output file")[0]


def make_clip(path: Path, seconds: float = 1.0, size: str = "64x48", rate: str = "30000/1001",
              audio: bool = True, extra: tuple[str, ...] = (), pattern: str = "testsrc2") -> Path:
    """A synthetic test clip (testsrc2 video, sine audio) written by the bundled ffmpeg; testsrc2 rounds sizes down
    to even, pattern="testsrc" (RGB) keeps odd ones."""
    inputs = ["-f", "lavfi", "-i", f"{pattern}=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"] + (["-c:a", "aac"] if audio else [])
    result = run_ffmpeg(["-v", "error", "-y", *inputs, *codecs, *extra, str(path)])
    assert result.returncode == 0, result.stderr
    return path


def assert_output_matches_source(source, out, keep_odd_size: bool = False) -> None:
    """What every output promises: frames, rate (VFR -> CFR at the average), upright display size (an odd side
    cropped by one for 4:2:0 unless keep_odd_size), audio, no GPS."""
    import pytest

    assert out.frame_count == source.frame_count
    if source.is_cfr:
        assert out.fps == source.fps
    else:
        assert float(out.fps) == pytest.approx(float(source.fps), rel=1e-3)
    size = (source.width, source.height) if keep_odd_size else (source.width // 2 * 2, source.height // 2 * 2)
    assert (out.width, out.height, out.rotation) == (*size, 0)
    assert out.has_audio == source.has_audio
    if out.has_audio:
        assert abs(audio_duration(out.path) - out.duration) <= 1 / float(out.fps)
    assert "location" not in header_text(out.path).lower()
