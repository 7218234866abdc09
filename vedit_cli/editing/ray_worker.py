"""The worker side of `vedit edit --ray`: one Ray actor per worker (ClipWorker), the shared-storage check it runs,
and removal of the partial files a dead worker left (by the driver, which knows the dead process's HOST-PID)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vedit_cli.config import EditConfig
from vedit_cli.editing.batch import ClipOutcome
from vedit_cli.editing.jobs import ClipJob
from vedit_cli.errors import VeditError
from vedit_cli.settings import ResolvedRun

STORAGE_HINT = ("inputs, outputs and the weights folder must be at the same path on every node (shared storage such "
                "as NFS); mount them there, or run on nodes that have them")


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is, what it resolved, and where its log goes (reported by the worker itself)."""

    index: int
    host: str
    pid: int
    hardware: dict[str, Any]
    log_path: str
    writer_prefix: str  # HOST-PID: the start of every partial file name this process writes (io/partials.py)
    editor: str | None = None  # the loaded editor's description
    problem: str | None = None  # one line when this worker cannot edit (storage not shared, weights missing, ...)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "host": self.host, "pid": self.pid, "hardware": self.hardware,
                "log": self.log_path}


# -- shared storage ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageCheck:
    """Files the driver sees that every worker must see at the same path: a marker it writes beside the outputs,
    a few inputs, and the weights folder."""

    marker: Path
    token: str
    inputs: tuple[Path, ...]
    weights_dir: Path | None

    @classmethod
    def create(cls, jobs: list[ClipJob], weights_dir: Path | None) -> "StorageCheck":
        folder = jobs[0].output_path.parent.absolute()
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        marker = folder / f".vedit-ray-check-{token}"
        marker.write_text(token)
        inputs, seen = [], set()
        for job in jobs:
            parent = job.input_path.absolute().parent
            if parent not in seen and job.input_path.is_file():
                seen.add(parent)
                inputs.append(job.input_path.absolute())
        return cls(marker, token, tuple(inputs[:4]), weights_dir.absolute() if weights_dir else None)

    def problem(self) -> str | None:
        """On a worker: one line naming the first path the driver sees and this node does not."""
        try:
            if self.marker.read_text() != self.token:
                return f"{self.marker.parent} is another folder on this node than on the driver; {STORAGE_HINT}"
        except OSError:
            return f"cannot see the output folder {self.marker.parent} the driver writes to; {STORAGE_HINT}"
        for path in self.inputs:
            if not path.is_file():
                return f"cannot see the input {path} the driver sees; {STORAGE_HINT}"
        if self.weights_dir is not None and not self.weights_dir.is_dir():
            return f"cannot see the weights folder {self.weights_dir}; {STORAGE_HINT}"
        return None

    def remove(self) -> None:
        self.marker.unlink(missing_ok=True)


def remove_attempt_partials(output_path: Path, writer_prefix: str) -> list[Path]:
    """Remove the partial files one (dead or killed) writer process left beside `output_path`."""
    output_path = Path(output_path)
    head, tail = f".{output_path.stem}.{writer_prefix}-", f".partial{output_path.suffix}"
    removed = []
    try:
        entries = list(output_path.parent.iterdir())
    except FileNotFoundError:
        return removed
    for path in entries:
        if path.name.startswith(head) and path.name.endswith(tail):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# -- the worker (a Ray actor) ----------------------------------------------------------------------------------------


class ClipWorker:
    """One actor: resolves its hardware, checks storage, loads the editor once, edits whole clips on request."""

    def __init__(self, index: int, run: ResolvedRun, config: EditConfig, threads: int, check: StorageCheck,
                 evaluate: bool, debug: bool) -> None:
        from vedit_cli.io.partials import new_token

        self.index, self.config, self.check, self.evaluate, self.debug = index, config, check, evaluate, debug
        self.run, self.threads, self.editor = run, threads, None
        self.frames, self.total = 0, 0
        self.writer_prefix = new_token().rsplit("-", 1)[0]
        self.log_path = _worker_log_dir() / f"vedit-worker-{index}-{os.getpid()}.log"
        self.log = _file_logger(f"vedit.ray.worker{index}.{os.getpid()}", self.log_path)

    def start(self) -> WorkerInfo:
        """Resolve hardware (pinned torch threads), check shared storage, load the editor; never raises."""
        from vedit_cli.editing.batch import _create_editor
        from vedit_cli.hardware import resolve_hardware

        hardware, problem, description = {}, None, None
        try:
            model = self.run.model
            self.run = replace(self.run, hardware=resolve_hardware(model.device, model.dtype, self.threads))
            hardware = self.run.hardware.as_dict()
            problem = self.check.problem()
            if problem is None:
                self.editor = _create_editor(self.run, [None])
                description = self.editor.description
        except Exception as error:  # reported as this worker's one line; the driver decides what follows
            problem = _error_line(error)
            self.log.error("start failed:\n%s", traceback.format_exc())
        self.log.info("worker %d pid %d on %s: %s; %s", self.index, os.getpid(), socket.gethostname(),
                      hardware, problem or description)
        return WorkerInfo(self.index, socket.gethostname(), os.getpid(), hardware, str(self.log_path),
                          self.writer_prefix, description, problem)

    def edit(self, job: ClipJob) -> ClipOutcome:
        """Probe and edit one clip; every error becomes the outcome's one line, never an exception."""
        from vedit_cli.editing.batch import _evaluate
        from vedit_cli.editing.clip import edit_clip
        from vedit_cli.io.output import check_output
        from vedit_cli.io.probe import probe

        outcome, started = ClipOutcome(job), time.perf_counter()
        self.frames, self.total = 0, 0
        self.log.info("editing %s -> %s", job.input_path, job.output_path)
        try:
            check_output(job.input_path, job.output_path, self.config.overwrite)
            info = probe(job.input_path)
            self.total = info.frame_count
            result = edit_clip(job.input_path, job.output_path, self.editor, job.prompt, self.config,
                               on_progress=self._on_progress, info=info)
            outcome.frames, outcome.notes, outcome.status = result.frames_written, list(result.notes), "ok"
            outcome.editor = self.editor.description
            if self.evaluate:
                outcome.metrics = _evaluate(job)
        except Exception as error:  # each clip fails on its own; the worker goes on
            outcome.status, outcome.error = "failed", _error_line(error)
            if self.debug:
                outcome.error += "\n" + traceback.format_exc()
            self.log.error("failed %s:\n%s", job.input_path, traceback.format_exc())
        outcome.seconds = time.perf_counter() - started
        self.log.info("%s %s (%d frames, %.2f s)", outcome.status, job.input_path, outcome.frames, outcome.seconds)
        return outcome

    def progress(self) -> tuple[int, int]:
        """(frames written, frames in the clip) of the clip being edited; answered while edit() runs."""
        return self.frames, self.total

    def _on_progress(self, frames: int) -> None:
        self.frames = frames


def _error_line(error: BaseException) -> str:
    if isinstance(error, VeditError):
        return str(error)
    return f"internal error: {type(error).__name__}: {error} (set VEDIT_DEBUG=1 for the traceback)"


def _worker_log_dir() -> Path:
    """The Ray session's log folder on this node (where Ray puts worker-*.out/.err too)."""
    try:
        import ray

        return Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except Exception:  # a Ray without that internal: the session folder's usual place
        return Path("/tmp/ray/session_latest/logs")


def _file_logger(name: str, path: Path) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger
