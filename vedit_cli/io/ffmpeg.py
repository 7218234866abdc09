"""The one place that finds and runs the ffmpeg binary bundled with imageio-ffmpeg."""

from __future__ import annotations

import subprocess
from functools import lru_cache

STDERR_TAIL_CHARS = 1500


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary that imageio-ffmpeg ships (no ffprobe is bundled)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with `args` to completion, capturing stdout and stderr as text; never raises on exit code."""
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", *args]
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout)


def stderr_tail(stderr: str | bytes, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last lines of ffmpeg's stderr, for error messages."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    return stderr.strip()[-chars:]


@lru_cache(maxsize=1)
def available_filters() -> frozenset[str]:
    """Names of the filters this ffmpeg build has (zscale and tonemap are optional in builds)."""
    listing = run_ffmpeg(["-filters"]).stdout
    names = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "->" in parts[2]:
            names.add(parts[1])
    return frozenset(names)


def ffmpeg_path(path) -> str:
    """A path ffmpeg cannot mistake for an option ("-x.mp4") or a protocol ("take:2.mp4")."""
    from pathlib import Path

    return "file:" + str(Path(path).absolute())
