"""Encode uint8 RGB frames with the bundled ffmpeg at an exact rational frame rate, playable everywhere by default.

Not imageio-ffmpeg's `write_frames`: it formats fps with two decimals (30000/1001 -> 29.97, drift on long clips) and
its `macro_block_size=16` silently rescales sizes that are not multiples of 16. Here the raw frames enter ffmpeg
with `-framerate num/den` and are never scaled. 4:2:0 (what browsers, QuickTime, phones and hardware decoders play)
halves chroma in both directions, so it holds even sizes only: an odd side loses its last column or row (cropped,
at most one of each) and the clip stays 4:2:0. `EncodeConfig.keep_odd_size` keeps the exact odd size instead, in
4:4:4 (H.264 High 4:4:4 Predictive, HEVC RExt, VP9 profile 1), which many players refuse. Same rule for every codec.
"""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from vedit_cli.config import EncodeConfig
from vedit_cli.errors import ConfigError, EncodeError
from vedit_cli.io.ffmpeg import ffmpeg_exe, ffmpeg_path, interrupts_deferred, stderr_tail

SUPPORTED_CODECS = ("libx264", "libx265", "libvpx-vp9")
CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
WEBM_CODECS = ("libvpx-vp9",)
MAX_CRF = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63}
VP9_SPEED = {"ultrafast": 8, "superfast": 8, "veryfast": 7, "faster": 6, "fast": 5,
             "medium": 4, "slow": 2, "slower": 1, "veryslow": 0, "placebo": 0}
PRESETS = tuple(VP9_SPEED)  # x264/x265 preset names; VP9 maps them onto -cpu-used


def container_format(path: Path) -> str:
    """ffmpeg's muxer name for an output path's extension (temp files keep the extension)."""
    muxer = CONTAINER_FORMATS.get(path.suffix.lower())
    if muxer is None:
        raise ConfigError(f"{path}: unsupported output extension {path.suffix!r}; "
                          f"use one of {', '.join(CONTAINER_FORMATS)}")
    return muxer


def check_encode_target(path: Path, encode: EncodeConfig) -> None:
    """Refuse codec/container combinations ffmpeg would reject, before any frame is decoded."""
    muxer = container_format(path)
    if encode.codec not in SUPPORTED_CODECS:
        raise ConfigError(f"--codec must be one of {', '.join(SUPPORTED_CODECS)}; got {encode.codec!r}")
    if muxer == "webm" and encode.codec not in WEBM_CODECS:
        raise ConfigError(f"{path}: WebM holds only VP8/VP9/AV1 video, not {encode.codec}; "
                          "pass --codec libvpx-vp9 or write .mp4/.mkv")
    if encode.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}; got {encode.preset!r}")
    if encode.crf > MAX_CRF[encode.codec]:
        raise ConfigError(f"--crf for {encode.codec} must be at most {MAX_CRF[encode.codec]}, got {encode.crf}")


def encoded_size(width: int, height: int, encode: EncodeConfig) -> tuple[int, int]:
    """The (width, height) written: odd sides cropped by one to fit chroma subsampling, unless keep_odd_size."""
    if encode.keep_odd_size or not _subsampled(encode.pixel_format):
        return width, height
    return width - width % 2, height - height % 2


def output_pixel_format(width: int, height: int, encode: EncodeConfig) -> str:
    """The configured format for the size written, or yuv444p when that size is odd and kept exactly."""
    odd = width % 2 == 1 or height % 2 == 1
    return "yuv444p" if odd and _subsampled(encode.pixel_format) else encode.pixel_format


def size_change_note(width: int, height: int, encode: EncodeConfig) -> str | None:
    """One line for the clip's report when the size written differs from the frames' size, else None."""
    written = encoded_size(width, height, encode)
    if written == (width, height):
        return None
    return (f"cropped {width}x{height} to {written[0]}x{written[1]} (4:2:0, playable everywhere, needs even sizes; "
            f"--keep-odd-size keeps {width}x{height} in 4:4:4)")


def _subsampled(pixel_format: str) -> bool:
    return pixel_format.startswith(("yuv420", "yuv422", "nv12", "nv21"))


def _codec_args(encode: EncodeConfig, muxer: str) -> list[str]:
    if encode.codec == "libvpx-vp9":
        speed = VP9_SPEED[encode.preset]
        deadline = "realtime" if speed >= 6 else "good"
        return ["-c:v", "libvpx-vp9", "-crf", str(encode.crf), "-b:v", "0", "-deadline", deadline,
                "-cpu-used", str(speed), "-row-mt", "1"]
    args = ["-c:v", encode.codec, "-crf", str(encode.crf), "-preset", encode.preset]
    if encode.codec == "libx265":
        args += ["-x265-params", "log-level=error"] + (["-tag:v", "hvc1"] if muxer in ("mp4", "mov") else [])
    return args


def encode_command(path: Path, width: int, height: int, fps: Fraction, encode: EncodeConfig) -> list[str]:
    """rgb24 width x height on stdin at exactly `fps` -> BT.709 limited-range video (tagged as such) at
    encoded_size(width, height): the last column/row cropped off an odd side, never scaled."""
    muxer = container_format(path)
    rate = f"{fps.numerator}/{fps.denominator}"
    written = encoded_size(width, height, encode)
    crop = [f"crop={written[0]}:{written[1]}:0:0"] if written != (width, height) else []
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "-",
            "-an", "-sn", "-dn", "-map_metadata", "-1", "-fps_mode", "passthrough",
            "-vf", ",".join([*crop, "scale=out_color_matrix=bt709:out_range=tv"]),
            *_codec_args(encode, muxer), "-pix_fmt", output_pixel_format(*written, encode),
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            "-f", muxer, ffmpeg_path(path)]


class VideoWriter:
    """Context manager feeding frames to one ffmpeg encoder process."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, encode: EncodeConfig) -> None:
        check_encode_target(Path(path), encode)
        self.path, self.width, self.height = Path(path), width, height
        self.encoded_size = encoded_size(width, height, encode)  # what the file holds (odd sides cropped by one)
        self.frames_written = 0
        self._stderr = tempfile.TemporaryFile()
        self._process = None
        try:
            with interrupts_deferred():
                self._process = subprocess.Popen(encode_command(self.path, width, height, Fraction(fps), encode),
                                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                 stderr=self._stderr)
        except BaseException:  # Ctrl-C held back during the start: the encoder is killed before it writes
            if self._process is not None:
                self.abort()
            raise

    def write(self, frame_hwc_uint8: np.ndarray) -> None:
        """Send one [height, width, 3] uint8 RGB frame to the encoder."""
        if frame_hwc_uint8.shape != (self.height, self.width, 3) or frame_hwc_uint8.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {(self.height, self.width, 3)}, got "
                             f"{frame_hwc_uint8.dtype} {frame_hwc_uint8.shape}")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame_hwc_uint8).data)
        except (BrokenPipeError, ValueError, OSError) as error:
            self.abort()
            raise EncodeError(f"{self.path}: ffmpeg stopped accepting frames ({error}): {self._tail()}") from error
        self.frames_written += 1

    def close(self) -> int:
        """Finish the stream and wait for ffmpeg; the number of frames written."""
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
        if self._process.wait() != 0:
            raise EncodeError(f"{self.path}: ffmpeg failed to encode (exit {self._process.returncode}): {self._tail()}")
        self._stderr.close()
        return self.frames_written

    def abort(self) -> None:
        """Kill ffmpeg and reap it: no process is left behind (the partial file is the caller's to delete)."""
        if self._process.poll() is None:
            self._process.kill()
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        self._process.wait()

    def _tail(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return stderr_tail(self._stderr.read()).replace("\n", " | ")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
