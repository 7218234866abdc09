"""The one place that finds and runs the ffmpeg binary bundled with imageio-ffmpeg."""

from __future__ import annotations

import signal
import subprocess
import threading
from contextlib import contextmanager
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


@contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C while a child process starts, then raise it: an interrupt inside Popen would leave the
    child running with no owner to kill it (an encoder that then writes its file after the cleanup ran)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
