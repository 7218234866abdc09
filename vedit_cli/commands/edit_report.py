"""What `vedit edit` shows: rich progress per clip and overall (stderr), one line per failure, a summary or JSON."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vedit_cli.editing.jobs import ClipJob
from vedit_cli.commands.common import print_json, stderr_console
from vedit_cli.editing.batch import ClipOutcome


class RichObserver:
    """Two bars on stderr: clips overall and frames of the current clip (with frames/s)."""

    def __init__(self, quiet: bool) -> None:
        self.console = stderr_console(quiet=False)
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console, transient=True,
            disable=quiet,
        )
        self.overall = None
        self.clip = None
        self.frames = 0

    def batch_started(self, total_clips: int, run, description: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold]vedit[/bold]: {run.summary()}", highlight=False, soft_wrap=True)
            self.console.print(f"       {description}", highlight=False, soft_wrap=True)
        self.progress.start()
        self.overall = self.progress.add_task("clips", total=total_clips, rate="")

    def clip_started(self, job: ClipJob, total_frames: int) -> None:
        self.frames = 0
        self.clip = self.progress.add_task(job.input_path.name, total=total_frames, rate="")

    def frames_done(self, frames: int) -> None:
        self.frames = frames
        task = self.progress.tasks[self._index(self.clip)]
        rate = f"{task.speed:.1f} frames/s" if task.speed else ""
        self.progress.update(self.clip, completed=frames, rate=rate)

    def clip_finished(self, outcome: ClipOutcome) -> None:
        if self.clip is not None:  # the clip ran (it was not skipped or refused up front)
            self.progress.remove_task(self.clip)
            self.progress.advance(self.overall)
            self.clip = None
        if not self.quiet or outcome.status == "failed":
            self.progress.console.print(_outcome_line(outcome), highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()

    def _index(self, task_id) -> int:
        return next(i for i, task in enumerate(self.progress.tasks) if task.id == task_id)


def _outcome_line(outcome: ClipOutcome) -> str:
    job = outcome.job
    if outcome.status == "ok":
        metrics = "".join(f", {name} {value:.4g}" for name, value in outcome.metrics.items() if isinstance(value, float))
        notes = "".join(f"; {note}" for note in outcome.notes)
        return (f"ok      {job.input_path} -> {job.output_path} ({outcome.frames} frames, {outcome.fps:.1f} frames/s"
                f"{metrics}){notes}")
    if outcome.status == "skipped":
        return f"skipped {job.input_path}: {job.output_path} exists (--overwrite to redo)"
    return f"failed  {job.input_path}: {outcome.error}"


def report_summary(outcomes: list[ClipOutcome], settings: dict, json_output: bool, quiet: bool) -> int:
    """Print the summary (or JSON on stdout, with the resolved settings); returns the number of failed clips."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ok", "skipped", "failed")}
    if json_output:
        print_json({
            "settings": settings,
            "summary": counts,
            "clips": [
                {"input": str(o.job.input_path), "output": str(o.job.output_path), "prompt": o.job.prompt,
                 "status": o.status, "frames": o.frames, "seconds": round(o.seconds, 3), "fps": round(o.fps, 2),
                 "error": o.error, "editor": o.editor, "metrics": o.metrics, "notes": o.notes,
                 **({"worker": o.worker} if o.worker else {})}  # on Ray: host, pid, hardware, log of its worker
                for o in outcomes
            ],
        })
        return counts["failed"]
    console = stderr_console()
    if not quiet or counts["failed"]:
        console.print(f"{counts['ok']} edited, {counts['skipped']} skipped, {counts['failed']} failed", highlight=False)
    for outcome in outcomes:
        if outcome.status == "failed":
            console.print(f"  failed: {outcome.job.input_path}", highlight=False, soft_wrap=True)
    return counts["failed"]
