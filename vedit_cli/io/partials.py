"""Hidden partial files beside an output, owned through a lock, and removal of those whose writer is gone.

Every file a writer leaves beside `NAME.mp4` carries one token, `HOST-PID-RANDOM` (a PID alone repeats across hosts
and is reused), and ends in `.partial.mp4`:
  .NAME.TOKEN.lock.partial.mp4    held with fcntl.lockf for the writer's whole life
  .NAME.TOKEN.video.partial.mp4   the encoder's output
  .NAME.TOKEN.muxed.partial.mp4   video + audio, renamed to NAME.mp4 once complete
The kernel, or the NFS lock manager, drops a POSIX lock when its process dies, SIGKILL and power cuts included, so a
partial whose lock can be taken (or that has no lock file) belongs to a writer that is gone and may be removed.
A writer creates and locks its lock file before any partial, and removes its partials before its lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import socket
from pathlib import Path

ROLES = ("lock", "video", "muxed")
_LOCK_BUSY = (errno.EACCES, errno.EAGAIN)
_HELD_TOKENS: set[str] = set()  # POSIX locks belong to the process: never test (or, by closing, drop) our own


def new_token() -> str:
    """HOST-PID-RANDOM: unique across hosts sharing a folder and across reuse of a PID."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def partial_path(output_path: Path, token: str, role: str) -> Path:
    """A hidden name beside the target that keeps the extension (ffmpeg and the muxer need it)."""
    return output_path.with_name(f".{output_path.stem}.{token}.{role}.partial{output_path.suffix}")


class PartialLock:
    """The lock one writer holds over its partial files; release() once they are removed."""

    def __init__(self, output_path: Path) -> None:
        self.output_path = Path(output_path)
        self.token = new_token()
        self.lock_path = partial_path(self.output_path, self.token, "lock")
        try:
            self._fd: int | None = _create_locked(self.lock_path)
        except BaseException:  # e.g. Ctrl-C between the file's creation and its lock: leave nothing behind
            self.lock_path.unlink(missing_ok=True)
            raise
        _HELD_TOKENS.add(self.token)

    def partial(self, role: str) -> Path:
        return partial_path(self.output_path, self.token, role)

    def release(self) -> None:
        """Delete the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        _HELD_TOKENS.discard(self.token)


def _create_locked(path: Path) -> int:
    """Create `path` and lock it; retry when a cleaner removed the file between its creation and our lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno != errno.ENOLCK:  # no lock manager: keep the file; cleaners then never remove ours
                os.close(fd)
                raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def remove_stale_partials(output_path: Path) -> list[Path]:
    """Remove the partial files of this output's writers that are gone (never a live writer's); return them."""
    output_path = Path(output_path)
    removed = []
    for token, paths in _partials_by_token(output_path).items():
        if token in _HELD_TOKENS or _legacy_writer_alive(token):
            continue
        lock_fd = _lock_if_stale(partial_path(output_path, token, "lock"))
        if lock_fd is False:
            continue
        removed += _remove(path for path in paths if not path.name.endswith(f".lock.partial{output_path.suffix}"))
        removed += _remove([partial_path(output_path, token, "lock")])
        if lock_fd is not None:
            os.close(lock_fd)
    return removed


def _partials_by_token(output_path: Path) -> dict[str, list[Path]]:
    pattern = re.compile(rf"^\.{re.escape(output_path.stem)}\.([A-Za-z0-9-]+)\.(?:{'|'.join(ROLES)})"
                         rf"\.partial{re.escape(output_path.suffix)}$")
    by_token: dict[str, list[Path]] = {}
    try:
        entries = list(output_path.parent.iterdir())
    except FileNotFoundError:
        return by_token
    for path in entries:
        match = pattern.match(path.name)
        if match:
            by_token.setdefault(match.group(1), []).append(path)
    return by_token


def _lock_if_stale(lock_path: Path) -> int | None | bool:
    """The locked fd of a dead writer's lock file; None when there is no lock file (stale too); False when alive."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in _LOCK_BUSY or error.errno == errno.ENOLCK:  # held, or no way to tell: leave it
            return False
        raise
    return fd


def _legacy_writer_alive(token: str) -> bool:
    """Partials of older vedit versions were named by PID alone: keep them while that PID runs here."""
    if not token.isdigit():
        return False
    try:
        os.kill(int(token), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(paths) -> list[Path]:
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
