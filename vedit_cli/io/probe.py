"""Probe a video with the bundled ffmpeg: exact frame rate, frames that really decode, display size, audio.

imageio-ffmpeg ships ffmpeg but no ffprobe, so one ffmpeg run does both jobs: its stderr holds the stream header
(codec, pixel format, colour, SAR, rotation side data, audio), and its stdout is a `framecrc` listing of every
*decoded* frame's timestamp (`-fps_mode passthrough`, the demuxer's time base, the cheap `wrapped_avframe` encoder,
so no pixel data is hashed). Containers lie (edit lists, VP9 hidden frames, truncated files), so the decoded
frames, not the packets or the header's count, are the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vedit_cli.errors import InputVideoError
from vedit_cli.io.ffmpeg import ffmpeg_path, run_ffmpeg
from vedit_cli.io.timing import frame_rate_from_timestamps

HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
# ffmpeg's log lines when a file was cut short (mov, matroska, gif): decoding what survives would silently give a
# shorter clip, so such inputs are refused. Healthy clips log no error at all (checked on every shared clip).
TRUNCATION_MARKERS = ("partial file", "ended prematurely", "truncat", "lzw decode failed")


@dataclass(frozen=True)
class VideoInfo:
    """What the rest of vedit needs to know about an input clip."""

    path: Path
    container: str  # ffmpeg's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"
    codec: str  # "h264", "hevc", "vp9", "vp8", "gif", ...
    coded_width: int
    coded_height: int
    rotation: int  # clockwise degrees to turn the coded frame upright: 0, 90, 180, 270
    width: int  # display size: upright (rotation applied) and square pixels (SAR applied)
    height: int
    fps: Fraction  # exact for CFR (e.g. 30000/1001); the average rate for VFR
    frame_count: int  # frames that really decode
    pixel_format: str
    bit_depth: int
    color_transfer: str | None  # "smpte2084" (PQ), "arib-std-b67" (HLG), "bt709", None
    is_hdr: bool
    has_audio: bool
    audio_codec: str | None
    duration: float  # seconds of video: frame_count / fps
    is_cfr: bool = True  # False when the source's frame intervals vary (the output is CFR at the average rate)
    video_start: float = 0.0  # seconds from the file's start to the first video frame (audio is aligned to it)


@dataclass(frozen=True)
class _VideoStream:
    codec: str
    pixel_format: str
    color_transfer: str | None
    coded_width: int
    coded_height: int
    sample_aspect: Fraction | None
    header_fps: Fraction | None


def probe(path: str | Path) -> VideoInfo:
    """Read a clip's facts with one ffmpeg run; raise InputVideoError (one actionable line) for anything unusable."""
    path = Path(path)
    _check_file(path)
    result = run_ffmpeg(_probe_args(path))
    header = result.stderr.split("Stream mapping:")[0]
    container = _container(header, path, result.stderr)
    stream = _video_stream(header, path)
    timestamps, time_base = _decoded_timestamps(result.stdout)
    if not timestamps:
        raise InputVideoError(f"{path}: the video stream has no decodable frames (empty or corrupt); "
                              "re-export the clip and try again")
    _refuse_truncated(result.stderr, path, len(timestamps))
    fps, is_cfr = frame_rate_from_timestamps(timestamps, time_base, stream.header_fps)
    rotation = _rotation(header)
    width, height = _display_size(stream.coded_width, stream.coded_height, stream.sample_aspect, rotation)
    audio_codec = _audio_codec(header)
    return VideoInfo(
        path=path, container=container, codec=stream.codec,
        coded_width=stream.coded_width, coded_height=stream.coded_height, rotation=rotation,
        width=width, height=height, fps=fps, frame_count=len(timestamps),
        pixel_format=stream.pixel_format, bit_depth=_bit_depth(stream.pixel_format),
        color_transfer=stream.color_transfer, is_hdr=stream.color_transfer in HDR_TRANSFERS,
        has_audio=audio_codec is not None, audio_codec=audio_codec,
        duration=float(len(timestamps) / fps), is_cfr=is_cfr, video_start=float(min(timestamps) * time_base),
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputVideoError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise InputVideoError(f"{path}: is not a file; pass a video file")
    if path.stat().st_size == 0:
        raise InputVideoError(f"{path}: file is empty (0 bytes); re-copy or re-export the clip")


def _refuse_truncated(stderr: str, path: Path, frames_decoded: int) -> None:
    for line in stderr.splitlines():
        if line.startswith("[") and any(marker in line.lower() for marker in TRUNCATION_MARKERS):
            reason = line.split("] ", 1)[-1].strip()[:80]
            raise InputVideoError(f"{path}: the file is truncated or damaged ({reason}; only {frames_decoded} "
                                  "frames decode); re-copy or re-export the complete clip")


def _probe_args(path: Path) -> list[str]:
    """Header on stderr; one framecrc line per decoded frame (demuxer time base, no pixel hashing) on stdout."""
    return ["-nostats", "-noautorotate", "-i", ffmpeg_path(path), "-map", "0:V:0", "-an", "-sn", "-dn",
            "-fps_mode", "passthrough", "-enc_time_base:v", "demux", "-c:v", "wrapped_avframe",
            "-f", "framecrc", "-"]


def _container(header: str, path: Path, stderr: str) -> str:
    match = re.search(r"^Input #0, (.+?), from '", header, re.MULTILINE)
    if match is None:
        reason = _last_error_line(stderr)
        raise InputVideoError(f"{path}: not a readable video ({reason}); check that the file is a complete, "
                              "uncorrupted video (re-download or re-export it)")
    return match.group(1)


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    useful = [line for line in lines if "Error opening input" not in line and "Error opening input files" not in line]
    text = (useful or lines or ["ffmpeg gave no reason"])[-1]
    return text.removeprefix("[in#0 @ ").split("] ", 1)[-1][:120]


def _stream_lines(header: str, kind: str) -> list[str]:
    pattern = rf"^\s*Stream #0:\d+\S*: {kind}: (.*)$"
    return [match.group(1) for match in re.finditer(pattern, header, re.MULTILINE)]


def _video_stream(header: str, path: Path) -> _VideoStream:
    lines = [line for line in _stream_lines(header, "Video") if "(attached pic)" not in line]
    if not lines:
        what = "audio only" if _stream_lines(header, "Audio") else "no streams ffmpeg can use"
        raise InputVideoError(f"{path}: has no video stream ({what}); pass a video file")
    fields = _split_top_level(lines[0])
    size = next((re.match(r"^(\d+)x(\d+)", field) for field in fields if re.match(r"^\d+x\d+", field)), None)
    if size is None:
        raise InputVideoError(f"{path}: the video stream has no frame size (corrupt header); re-export the clip")
    pixel_format, color_transfer = _pixel_format_and_transfer(fields[1] if len(fields) > 1 else "")
    return _VideoStream(
        codec=fields[0].split()[0], pixel_format=pixel_format, color_transfer=color_transfer,
        coded_width=int(size.group(1)), coded_height=int(size.group(2)),
        sample_aspect=_sample_aspect(lines[0]), header_fps=_header_fps(lines[0]),
    )


def _split_top_level(text: str) -> list[str]:
    """Split ffmpeg's stream description on commas that are not inside parentheses."""
    fields, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            fields.append(current.strip())
            current = ""
        else:
            current += char
    return [*fields, current.strip()]


def _pixel_format_and_transfer(field: str) -> tuple[str, str | None]:
    """`yuv420p10le(tv, bt2020nc/bt2020/smpte2084)` -> ("yuv420p10le", "smpte2084"); `bt709` alone means all three."""
    match = re.match(r"^([\w]+)(?:\((.*)\))?", field)
    if match is None:
        return "unknown", None
    transfer = None
    for part in (match.group(2) or "").split(","):
        part = part.strip()
        if part.startswith(("bt", "smpte", "arib", "iec", "log", "linear", "gamma", "unknown")):
            colours = part.split("/")
            transfer = colours[2] if len(colours) == 3 else colours[0]
            break
    return match.group(1), None if transfer in (None, "unknown", "reserved") else transfer


def _sample_aspect(line: str) -> Fraction | None:
    match = re.search(r"SAR (\d+):(\d+)", line)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return None
    return Fraction(int(match.group(1)), int(match.group(2)))


def _header_fps(line: str) -> Fraction | None:
    match = re.search(r"([\d.]+)k? (?:fps|tbr)", line)
    if match is None or float(match.group(1)) <= 0:
        return None
    return Fraction(match.group(1)).limit_denominator(1001)


def _rotation(header: str) -> int:
    """Clockwise degrees: ffmpeg prints the display matrix's counter-clockwise angle ("rotation of -90.00")."""
    video_part = header.split(": Audio:")[0]
    match = re.search(r"rotation of (-?[\d.]+) degrees", video_part, re.IGNORECASE)
    if match is None:
        return 0
    return int(round(-float(match.group(1)) / 90.0)) * 90 % 360


def _display_size(coded_width: int, coded_height: int, sample_aspect: Fraction | None,
                  rotation: int) -> tuple[int, int]:
    """Square-pixel width (SAR applied to the width, as players do), then swapped for a quarter turn."""
    width = coded_width if sample_aspect in (None, 1) else max(1, round(coded_width * sample_aspect))
    return (coded_height, width) if rotation in (90, 270) else (width, coded_height)


def _bit_depth(pixel_format: str) -> int:
    match = re.search(r"p(\d+)(?:le|be)$", pixel_format)
    return int(match.group(1)) if match else 8


def _audio_codec(header: str) -> str | None:
    lines = _stream_lines(header, "Audio")
    return lines[0].split()[0].rstrip(",") if lines else None


def _decoded_timestamps(framecrc: str) -> tuple[list[int], Fraction]:
    """Presentation timestamps of the decoded frames and their time base, from ffmpeg's framecrc listing."""
    time_base = Fraction(1, 1000)
    timestamps = []
    for line in framecrc.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            timestamps.append(int(line.split(",")[2]))
    return timestamps, time_base
