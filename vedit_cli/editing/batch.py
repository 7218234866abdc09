"""Edit a list of clip jobs with one editor: skip finished outputs, check every input first, and keep going
past bad clips. Reports through an observer; never prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from vedit_cli.editing.jobs import ClipJob
from vedit_cli.config import EditConfig
from vedit_cli.errors import ConfigError, VeditError
from vedit_cli.settings import ResolvedRun


@dataclass
class ClipOutcome:
    """What happened to one clip: status is "ok", "skipped" or "failed"."""

    job: ClipJob
    status: str = "pending"
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    editor: str | None = None  # which backend and mode edited it, e.g. "movie teacher: 10 steps x 3 passes, ..."
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the output changed and why (e.g. an odd size cropped)
    worker: dict[str, Any] | None = None  # on Ray: the worker that edited it (host, pid, hardware, log)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class BatchObserver(Protocol):
    def batch_started(self, total_clips: int, run: ResolvedRun, description: str) -> None: ...
    def clip_started(self, job: ClipJob, total_frames: int) -> None: ...
    def frames_done(self, frames: int) -> None: ...
    def clip_finished(self, outcome: ClipOutcome) -> None: ...


class SilentObserver:
    def batch_started(self, total_clips: int, run: ResolvedRun, description: str) -> None: ...
    def clip_started(self, job: ClipJob, total_frames: int) -> None: ...
    def frames_done(self, frames: int) -> None: ...
    def clip_finished(self, outcome: ClipOutcome) -> None: ...


def run_batch(jobs: list[ClipJob], config: EditConfig, run: ResolvedRun, observer: BatchObserver | None = None,
              evaluate: bool = False, debug: bool = False) -> list[ClipOutcome]:
    """1. skip finished outputs  2. probe inputs  3. load the editor once  4. edit clip by clip.
    `config.model` is `run.model`: the request with its defaults resolved once (settings.resolve_run)."""
    observer = observer or SilentObserver()
    outcomes = [ClipOutcome(job) for job in jobs]
    infos = _check_inputs(outcomes, config, debug)
    runnable = [outcome for outcome in outcomes if outcome.status == "pending"]
    editor = _create_editor(run, runnable)
    observer.batch_started(len(runnable), run, editor.description if editor else "nothing to edit")
    for outcome in outcomes:
        if outcome.status == "pending":
            _edit_one(outcome, infos[outcome.job], editor, config, observer, evaluate, debug)
        observer.clip_finished(outcome)
    return outcomes


def _check_inputs(outcomes: list[ClipOutcome], config: EditConfig, debug: bool) -> dict:
    """Cheap checks before any model loads: outputs that exist, unreadable inputs, empty prompts."""
    from vedit_cli.editor import backend_needs_prompt
    from vedit_cli.io.output import check_output
    from vedit_cli.io.partials import remove_stale_partials
    from vedit_cli.io.probe import probe

    needs_prompt = backend_needs_prompt(config.model.backend)
    infos = {}
    for outcome in outcomes:
        job = outcome.job
        if job.output_path.exists() and not config.overwrite:
            outcome.status = "skipped"
            remove_stale_partials(job.output_path)  # left by an --overwrite run of it that was killed
            continue
        try:
            if needs_prompt and not job.prompt.strip():
                raise ConfigError(f"{job.input_path}: the {config.model.backend} backend needs a non-empty prompt")
            check_output(job.input_path, job.output_path, config.overwrite)
            infos[job] = probe(job.input_path)
        except VeditError as error:
            _fail(outcome, error, debug)
    return infos


def _create_editor(run: ResolvedRun, runnable: list[ClipOutcome]):
    """Check (and, when allowed, download and verify) the backend's checkpoints, then load it once."""
    if not runnable:
        return None
    from vedit_cli.editor import create_editor

    if run.weights_dir is not None:
        from vedit_cli.weights.hub import ensure_entries
        from vedit_cli.weights.registry import entries_for_model

        ensure_entries(entries_for_model(run.model), run.weights_dir, run.model.allow_download)
    return create_editor(run)


def _edit_one(outcome, info, editor, config, observer, evaluate: bool, debug: bool) -> None:
    from vedit_cli.editing.clip import edit_clip

    job = outcome.job
    observer.clip_started(job, info.frame_count)
    started = time.perf_counter()
    try:
        result = edit_clip(job.input_path, job.output_path, editor, job.prompt, config,
                           on_progress=observer.frames_done, info=info)
        outcome.frames = result.frames_written
        outcome.notes = list(result.notes)
        outcome.editor = editor.description
        outcome.status = "ok"
        if evaluate:
            outcome.metrics = _evaluate(job)
    except Exception as error:  # each clip fails on its own; the batch goes on
        _fail(outcome, error, debug)
    outcome.seconds = time.perf_counter() - started


def _evaluate(job: ClipJob) -> dict[str, Any]:
    from vedit_cli.metrics.evaluation import evaluate_clip

    report = evaluate_clip(job.output_path, source_path=job.input_path, prompt=job.prompt,
                           metrics=("warp_error", "flicker"))
    return report["metrics"]


def _fail(outcome: ClipOutcome, error: BaseException, debug: bool) -> None:
    if debug:
        raise error
    outcome.status = "failed"
    if isinstance(error, VeditError):
        outcome.error = str(error)
    else:
        outcome.error = f"internal error: {type(error).__name__}: {error} (set VEDIT_DEBUG=1 for the traceback)"
