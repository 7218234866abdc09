"""Decode a probed clip into upright, display-size uint8 RGB frames, one at a time (the only module importing decord).

Two readers behind one generator: decord for plain 8-bit SDR clips whose frame count decord agrees with, and an
ffmpeg rawvideo pipe for everything else (GIF, VP8 — decord#91 —, 10-bit, HDR, non-square pixels, or whenever
decord fails). Memory stays bounded: frames are read one by one (decord's `get_batch` leaks, decord#197/#208, and
can hang on over-reported counts, decord#373, so it is never used). The probe reads no frame, so the readers count:
a clip that decodes fewer or more frames than the probe's frame_count, or whose decoder reports it cut short, raises
InputVideoError before the last frame is handed on, and no output is kept.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator

import numpy as np

from vedit_cli.errors import InputVideoError
from vedit_cli.io.ffmpeg import available_filters, ffmpeg_exe, ffmpeg_path, stderr_tail
from vedit_cli.io.probe import VideoInfo, truncation_reason

DECORD_CODECS = ("h264", "hevc", "vp9", "mpeg4", "av1")

# HDR (PQ or HLG) -> SDR BT.709: linearise, Hable tone curve, back to BT.709 gamma (zimg via ffmpeg's zscale).
TONEMAP_FILTERS = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
                   "tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv,format=yuv420p")


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """Yield exactly info.frame_count uint8 RGB frames [height, width, 3], upright, in order, or raise
    InputVideoError when the clip decodes another number of frames; closing the generator early stops the decoder."""
    if _decord_suitable(info):
        yield from _read_with_decord_then_ffmpeg(info)
    else:
        yield from read_frames_ffmpeg(info)


def _decord_suitable(info: VideoInfo) -> bool:
    """decord converts with no tone mapping, no SAR and no 10-bit dithering; it mis-decodes some VP8 (decord#91),
    and its colour conversion of odd-sized frames differs from ffmpeg's by up to 18 levels (bear-vp9 161x121)."""
    upright_coded = (info.coded_height, info.coded_width) if info.rotation in (90, 270) else (
        info.coded_width, info.coded_height)
    even_size = info.coded_width % 2 == 0 and info.coded_height % 2 == 0
    return (info.codec in DECORD_CODECS and info.bit_depth == 8 and not info.is_hdr and even_size
            and upright_coded == (info.width, info.height))


def _read_with_decord_then_ffmpeg(info: VideoInfo) -> Iterator[np.ndarray]:
    """decord while it agrees with the probe; on any disagreement or error, ffmpeg from the next frame on."""
    yielded = 0
    try:
        for frame in _decord_frames(info):
            yield frame
            yielded += 1
    except _DecordMisbehaved:
        pass
    if yielded < info.frame_count:
        yield from read_frames_ffmpeg(info, skip=yielded)


class _DecordMisbehaved(Exception):
    """decord could not open the file, disagrees on the frame count or shape, or failed mid-stream."""


def _decord_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    try:
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # libav's warnings would print from library code
        # One decoder thread: decord's threaded decoder fails at random mid-stream on VP9 ("Error sending packet",
        # EAGAIN), which switched readers mid-clip; with one thread it decodes the same frames every time.
        reader = decord.VideoReader(str(info.path.absolute()), ctx=decord.cpu(0), num_threads=1)
    except Exception as error:  # decord raises its own DECORDError and plain RuntimeErrors
        raise _DecordMisbehaved(str(error)) from error
    try:
        if len(reader) != info.frame_count:  # containers over-report (edit lists, hidden frames): trust the probe
            raise _DecordMisbehaved(f"decord counts {len(reader)} frames, probe decoded {info.frame_count}")
        for _ in range(info.frame_count):
            frame = _next_decord_frame(reader)
            if frame.shape != (info.height, info.width, 3):
                raise _DecordMisbehaved(f"decord frame shape {frame.shape}")
            yield frame
    finally:
        del reader


def _next_decord_frame(reader) -> np.ndarray:
    try:
        return reader.next().asnumpy()
    except Exception as error:  # StopIteration too early, or a decode error
        raise _DecordMisbehaved(str(error)) from error


def read_frames_ffmpeg(info: VideoInfo, skip: int = 0) -> Iterator[np.ndarray]:
    """The fallback reader: ffmpeg decodes, turns upright (autorotate), tone-maps HDR, scales non-square pixels to
    the display size and pipes rgb24; frames before `skip` are decoded and dropped. Reads to the end of the stream,
    so that a clip decoding more frames than probed, or cut short, is refused."""
    frame_bytes = info.width * info.height * 3
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(_ffmpeg_decode_command(info), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=stderr_file, bufsize=0)
        try:
            decoded, held = 0, None  # each frame is handed on once the next one (or a clean end) is seen
            while (buffer := _read_exactly(process.stdout, frame_bytes)) is not None:
                if decoded == info.frame_count:
                    raise InputVideoError(f"{info.path}: decodes more frames than the {info.frame_count} its container "
                                          "lists; the file may be damaged: re-export it")
                if held is not None:
                    yield held
                held = _as_frame(buffer, info) if decoded >= skip else None
                decoded += 1
            process.wait()
            _refuse_short_or_truncated(info, decoded, stderr_file)
            if held is not None:
                yield held
        finally:
            _stop(process)


def _as_frame(buffer: bytearray, info: VideoInfo) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.uint8).reshape(info.height, info.width, 3)


def _refuse_short_or_truncated(info: VideoInfo, frames_decoded: int, stderr_file) -> None:
    stderr_file.seek(0)
    stderr = stderr_file.read().decode("utf-8", errors="replace")
    reason = truncation_reason(stderr)
    if reason is not None:
        raise InputVideoError(f"{info.path}: the file is truncated or damaged ({reason}; {frames_decoded} of "
                              f"{info.frame_count} frames decode); re-copy or re-export the complete clip")
    if frames_decoded < info.frame_count:
        raise InputVideoError(_short_read_message(info, frames_decoded, stderr))


def _ffmpeg_decode_command(info: VideoInfo) -> list[str]:
    filters = [*_tonemap_filters(info), f"scale={info.width}:{info.height}:flags=bicubic", "setsar=1"]
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", ffmpeg_path(info.path),
            "-map", "0:V:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough", "-vf", ",".join(filters),
            "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]


def _tonemap_filters(info: VideoInfo) -> list[str]:
    """Tone-map PQ/HLG to SDR when this ffmpeg has zscale and tonemap; otherwise swscale's plain conversion
    (an approximation: highlights clip and colours look washed out, but the frames are still usable)."""
    if not info.is_hdr or not {"zscale", "tonemap"} <= available_filters():
        return []
    return [TONEMAP_FILTERS]


def _read_exactly(stream, size: int) -> bytearray | None:
    """Read exactly `size` bytes into a fresh writable buffer, or None at end of stream."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            return None
        filled += count
    return buffer


def _short_read_message(info: VideoInfo, index: int, stderr: str) -> str:
    tail = stderr_tail(stderr, chars=200).replace("\n", " | ")
    return (f"{info.path}: decoding stopped after {index} of {info.frame_count} frames ({tail or 'no ffmpeg error'});"
            " the file may be damaged: re-export it")


def _stop(process: subprocess.Popen) -> None:
    """Kill the decoder (a no-op when it already exited) and reap it, so no process is left behind."""
    if process.poll() is None:
        process.kill()
    process.stdout.close()
    process.wait()
