"""Mux the source's first audio stream next to the encoded video, dropping all metadata (GPS locations included).

The video keeps every frame (no `-shortest`, which cuts the *video* when the audio ends first); the audio is read
from the source's first video frame for exactly the video's duration, so a longer track is cut and a shorter one
ends early. Audio is copied when the container takes the codec (MP4 takes AAC/MP3/AC-3/Opus, WebM Opus/Vorbis,
Matroska anything), else re-encoded (AAC; Opus for WebM): ffmpeg 9 does write Vorbis into MP4, but players refuse it.
"""

from __future__ import annotations

from pathlib import Path

from vedit_cli.errors import EncodeError
from vedit_cli.io.encode import container_format
from vedit_cli.io.ffmpeg import ffmpeg_path, run_ffmpeg, stderr_tail
from vedit_cli.io.probe import VideoInfo

COPYABLE_AUDIO = {
    "mp4": ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"),
    "mov": ("aac", "mp3", "ac3", "eac3", "alac"),
    "webm": ("opus", "vorbis"),
}
REENCODE_AUDIO = {"webm": ["-c:a", "libopus", "-b:a", "160k"]}
DEFAULT_REENCODE_AUDIO = ["-c:a", "aac", "-b:a", "192k"]
START_TOLERANCE_S = 0.001


def mux_audio(video_path: Path, source: VideoInfo, out_path: Path) -> None:
    """Write out_path = video_path's video + source's first audio stream (copied, or re-encoded when the container
    does not take the codec), aligned to the first video frame and cut to the video's length; no metadata,
    chapters, data or subtitle streams."""
    muxer = container_format(out_path)
    if not source.has_audio:
        _run_or_raise(_mux_args(video_path, None, out_path, muxer, []), out_path)
        return
    reencode = REENCODE_AUDIO.get(muxer, DEFAULT_REENCODE_AUDIO)
    if _can_copy(source, muxer):
        copied = run_ffmpeg(_mux_args(video_path, source, out_path, muxer, ["-c:a", "copy"]))
        if copied.returncode == 0:
            return
    _run_or_raise(_mux_args(video_path, source, out_path, muxer, reencode), out_path)


def _can_copy(source: VideoInfo, muxer: str) -> bool:
    """Copy when the container takes the codec and no trimming at the start is needed (copy cuts on packets)."""
    takes_codec = muxer == "matroska" or source.audio_codec in COPYABLE_AUDIO.get(muxer, ())
    return takes_codec and source.video_start <= START_TOLERANCE_S


def _mux_args(video_path: Path, source: VideoInfo | None, out_path: Path, muxer: str,
              audio_args: list[str]) -> list[str]:
    inputs = ["-i", ffmpeg_path(video_path)]
    maps = ["-map", "0:v:0"]
    if source is not None:
        start = ["-ss", f"{source.video_start:.6f}"] if source.video_start > START_TOLERANCE_S else []
        inputs += [*start, "-t", f"{source.duration:.6f}", "-i", ffmpeg_path(source.path)]
        maps += ["-map", "1:a:0"]
    no_metadata = ["-map_metadata", "-1", "-map_metadata:s:v", "-1", "-map_metadata:s:a", "-1",
                   "-map_chapters", "-1", "-fflags", "+bitexact"]
    faststart = ["-movflags", "+faststart"] if muxer in ("mp4", "mov") else []
    return ["-v", "error", "-y", *inputs, *maps, "-c:v", "copy", *audio_args, *no_metadata, *faststart,
            "-f", muxer, ffmpeg_path(out_path)]


def _run_or_raise(args: list[str], out_path: Path) -> None:
    result = run_ffmpeg(args)
    if result.returncode != 0:
        tail = stderr_tail(result.stderr).replace("\n", " | ")
        raise EncodeError(f"{out_path}: ffmpeg failed to mux the audio (exit {result.returncode}): {tail}")
