"""Probe a video with the bundled ffmpeg: exact frame rate, frame count, display size, audio: container facts only.

imageio-ffmpeg ships ffmpeg but no ffprobe, so one ffmpeg run does both jobs without decoding a single frame: its
stderr holds the stream header (codec, pixel format, colour, SAR, rotation side data, audio), and its stdout is a
`framecrc` listing of the video stream's packets, copied (`-c:v copy`), in the demuxer's time base. Packets are not
always frames, so the listing is corrected as the decoder would: packets flagged discard (outside an edit list) are
dropped, and VP9's hidden alt-ref frames are merged back into their superframes (`vp9_superframe`, a second
copy run for VP9 only). For codecs whose packets may hold frames that are never shown (VP8 alt-ref frames) or whose
packet accounting is not known, the frames are decoded and counted instead. The decoder counts again while decoding
(io/decode.py): a clip that decodes another number of frames is refused there, as are truncations only the decoder
sees (a GIF cut short).
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
# Codecs whose every copied packet (after the corrections above) is one shown frame. Left out: VP8 (hidden alt-ref
# frames have packets of their own), MPEG-1/2/4 part 2 (packed B-frames, field pictures); and MPEG-TS, which may carry
# each field of an interlaced H.264/HEVC frame in a packet of its own.
PACKET_PER_FRAME_CODECS = ("h264", "hevc", "av1", "vp9", "gif", "mjpeg", "png", "apng", "prores", "dnxhd", "rawvideo",
                           "ffv1", "qtrle", "utvideo")
FIELD_PACKET_CONTAINERS = ("mpegts",)
# Bitstream filters that turn a codec's packets into one packet per shown frame.
FRAME_BSF = {"vp9": "vp9_superframe"}
PACKET_FLAG_DISCARD = 0x4  # AV_PKT_FLAG_DISCARD: the demuxer's "decode, but do not show" (edit lists)


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
    frame_count: int  # frames the container holds (shown frames, not packets); decoding checks it
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
    """Read a clip's facts without decoding it; raise InputVideoError (one actionable line) for anything unusable."""
    path = Path(path)
    _check_file(path)
    result = run_ffmpeg(_probe_args(path))
    header = result.stderr.split("Stream mapping:")[0]
    container = _container(header, path, result.stderr)
    stream = _video_stream(header, path)
    if stream.codec in FRAME_BSF or not _packets_are_frames(container, stream.codec):
        result = run_ffmpeg(_frame_listing_args(path, container, stream.codec))
    frames = _listed_frames(result.stdout)
    if not frames.timestamps:
        raise InputVideoError(f"{path}: the video stream has no decodable frames (empty or corrupt); "
                              "re-export the clip and try again")
    _refuse_truncated(result.stderr, path)
    fps, is_cfr = frame_rate_from_timestamps(frames.timestamps, frames.time_base, stream.header_fps, frames.durations)
    rotation = _rotation(header)
    width, height = _display_size(stream.coded_width, stream.coded_height, stream.sample_aspect, rotation)
    audio_codec = _audio_codec(header)
    frame_count = len(frames.timestamps)
    return VideoInfo(
        path=path, container=container, codec=stream.codec,
        coded_width=stream.coded_width, coded_height=stream.coded_height, rotation=rotation,
        width=width, height=height, fps=fps, frame_count=frame_count,
        pixel_format=stream.pixel_format, bit_depth=_bit_depth(stream.pixel_format),
        color_transfer=stream.color_transfer, is_hdr=stream.color_transfer in HDR_TRANSFERS,
        has_audio=audio_codec is not None, audio_codec=audio_codec,
        duration=float(frame_count / fps), is_cfr=is_cfr,
        video_start=float(min(frames.timestamps) * frames.time_base),
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputVideoError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise InputVideoError(f"{path}: is not a file; pass a video file")
    if path.stat().st_size == 0:
        raise InputVideoError(f"{path}: file is empty (0 bytes); re-copy or re-export the clip")


def truncation_reason(stderr: str) -> str | None:
    """ffmpeg's own words when its log says the file was cut short or damaged, else None."""
    for line in stderr.splitlines():
        if line.startswith("[") and any(marker in line.lower() for marker in TRUNCATION_MARKERS):
            return line.split("] ", 1)[-1].strip()[:80]
    return None


def _refuse_truncated(stderr: str, path: Path) -> None:
    reason = truncation_reason(stderr)
    if reason is not None:
        raise InputVideoError(f"{path}: the file is truncated or damaged ({reason}); "
                              "re-copy or re-export the complete clip")


def _probe_args(path: Path) -> list[str]:
    """Header on stderr; one framecrc line per video packet (copied, no decoding) on stdout."""
    return ["-nostats", "-noautorotate", "-i", ffmpeg_path(path), "-map", "0:V:0", "-an", "-sn", "-dn",
            "-c:v", "copy", "-f", "framecrc", "-"]


def _packets_are_frames(container: str, codec: str) -> bool:
    """Whether the copied packets (through FRAME_BSF's filter where it names one) are one per shown frame."""
    return codec in PACKET_PER_FRAME_CODECS and container not in FIELD_PACKET_CONTAINERS


def _frame_listing_args(path: Path, container: str, codec: str) -> list[str]:
    """One framecrc line per shown frame: packets through the codec's filter, or, failing one, decoded frames
    (the demuxer's time base, the cheap `wrapped_avframe` encoder, so no pixel data is hashed)."""
    inputs = ["-nostats", "-noautorotate", "-i", ffmpeg_path(path), "-map", "0:V:0", "-an", "-sn", "-dn"]
    if codec in FRAME_BSF and _packets_are_frames(container, codec):
        return [*inputs, "-c:v", "copy", "-bsf:v", FRAME_BSF[codec], "-f", "framecrc", "-"]
    return [*inputs, "-fps_mode", "passthrough", "-enc_time_base:v", "demux", "-c:v", "wrapped_avframe",
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


@dataclass(frozen=True)
class _FrameListing:
    timestamps: list[int]  # presentation timestamps of the shown frames, in time_base units
    durations: list[int]
    time_base: Fraction


def _listed_frames(framecrc: str) -> _FrameListing:
    """Shown frames from ffmpeg's framecrc listing (`stream, dts, pts, duration, size, crc[, F=flags]`)."""
    time_base = Fraction(1, 1000)
    timestamps, durations = [], []
    for line in framecrc.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            fields = [field.strip() for field in line.split(",")]
            flags = next((int(field[2:], 16) for field in fields[6:] if field.startswith("F=")), 0)
            if not flags & PACKET_FLAG_DISCARD:
                timestamps.append(int(fields[2]))
                durations.append(int(fields[3]))
    return _FrameListing(timestamps, durations, time_base)
