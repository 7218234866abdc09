"""`vedit edit --ray`: the same jobs, edited on Ray actors; what the driver shows (workers, their logs, clips
done / running / failed, frames/s over all workers) and the same summary and --json (each clip names its worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Iterable, Optional

import typer

from vedit_cli.errors import UnusedOptionError

if TYPE_CHECKING:  # the option types below are read at start-up: no torch, no Ray imported by this module
    from vedit_cli.config import EditConfig
    from vedit_cli.editing.batch import ClipOutcome

PANEL_RAY = "Many GPUs or nodes (Ray)"
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray", metavar="local|auto|ADDRESS", show_default=False, rich_help_panel=PANEL_RAY,
    help='Edit the clips on Ray actors: local (start Ray here: one worker per GPU), auto (the cluster this node '
         'joined with `ray start`) or a cluster ADDRESS (host:6379, ray://host:10001). Needs Ray: the ray extra of vedit.')]
Workers = Annotated[Optional[int], typer.Option(
    min=1, show_default=False, rich_help_panel=PANEL_RAY,
    help="With --ray: number of workers (default: one per GPU, or 1 CPU worker without GPUs).")]
GpusPerWorker = Annotated[Optional[float], typer.Option(
    min=0, show_default=False, rich_help_panel=PANEL_RAY,
    help="With --ray: GPUs per worker; 0.5 puts two workers on a GPU (default: 1 with GPUs, else 0).")]
MaxRetries = Annotated[int, typer.Option(
    min=0, rich_help_panel=PANEL_RAY,
    help="With --ray: times a clip is retried on another worker after the worker editing it died.")]
ClipTimeout = Annotated[Optional[float], typer.Option(
    min=0, show_default=False, rich_help_panel=PANEL_RAY,
    help="With --ray: seconds one clip may take on a worker before it is stopped and counted failed (default: no limit).")]

RAY_ONLY = ("workers", "gpus_per_worker", "max_retries", "clip_timeout")


class RayRichObserver:
    """One bar on stderr: clips done of all, running, failed, frames/s over all workers; one line per worker."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from vedit_cli.commands.common import stderr_console

        self.console = stderr_console(quiet=False)
        self.quiet = quiet
        self.plan = None
        self.progress_bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]}"),
            TimeRemainingColumn(), console=self.console, transient=True, disable=quiet,
        )
        self.task = None

    def batch_started(self, total_clips: int, plan, description: str) -> None:
        self.plan = plan
        if not self.quiet:
            gpus = f", {plan.gpus:g} GPU" if plan.gpus else ""
            self._print(f"[bold]vedit[/bold]: {description}; on Ray: {plan.workers} worker(s) x ({plan.cpus} CPU"
                        f"{gpus}), hardware resolved on each worker")
        self.progress_bar.start()
        self.task = self.progress_bar.add_task("clips", total=total_clips, state="")

    def worker_started(self, info) -> None:
        if not self.quiet and not info.problem:
            hardware = info.hardware
            self._print(f"       worker {info.index}: {info.host} pid {info.pid}, {hardware.get('device')} "
                        f"{hardware.get('dtype')}, {hardware.get('torch_threads')} torch threads; log "
                        f"{info.host}:{info.log_path}")

    def notice(self, line: str) -> None:
        self._print(f"vedit: {line}")

    def progress(self, snapshot) -> None:
        state = f"running {snapshot.running}, failed {snapshot.failed}, {snapshot.frames_per_second:.1f} frames/s"
        self.progress_bar.update(self.task, completed=snapshot.done + snapshot.failed, state=state)

    def clip_finished(self, outcome: "ClipOutcome") -> None:
        from vedit_cli.commands.edit_report import _outcome_line

        if not self.quiet or outcome.status == "failed":
            where = f" [worker {outcome.worker['index']}]" if outcome.worker else ""
            self._print(_outcome_line(outcome) + where)

    def close(self) -> None:
        self.progress_bar.stop()

    def _print(self, line: str) -> None:
        self.progress_bar.console.print(line, highlight=False, soft_wrap=True)


def check_ray_options(ray: str | None, given: Iterable[str]) -> None:
    """--workers and the other Ray options mean nothing without --ray: say so instead of ignoring them."""
    if ray is None:
        for name in RAY_ONLY:
            if name in given:
                raise UnusedOptionError(f"--{name.replace('_', '-')} is used only with --ray local|auto|ADDRESS")


def edit_on_ray(jobs, config: "EditConfig", address: str, workers: int | None, gpus_per_worker: float | None,
                max_retries: int, clip_timeout: float | None, evaluate: bool, quiet: bool, json_output: bool,
                debug: bool) -> None:
    """Run the batch on Ray, then the same summary (or --json) and exit code as a local batch."""
    from dataclasses import replace

    from vedit_cli.commands.edit_report import report_summary
    from vedit_cli.editing.ray_batch import RayOptions, driver_run, import_ray, run_ray_batch

    import_ray()  # one line on how to install it, before anything starts
    options = RayOptions(address, workers, gpus_per_worker, max_retries, clip_timeout).validate()
    run = driver_run(config.model)
    config = replace(config, model=run.model)
    observer = RayRichObserver(quiet=quiet or json_output)
    try:
        results = run_ray_batch(jobs, config, run, options, observer, evaluate=evaluate, debug=debug)
    finally:
        observer.close()
    failed = report_summary(results, _settings(run, options, observer.plan), json_output=json_output, quiet=quiet)
    if failed:
        raise typer.Exit(code=1)


def _settings(run, options, plan) -> dict:
    """The resolved settings; hardware is per worker (each clip's `worker` says what it ran on)."""
    settings = {**run.as_dict(), "device": run.model.device, "dtype": run.model.dtype,
                "dtype_reason": "resolved on each Ray worker", "torch_threads": plan.cpus if plan else None}
    settings["ray"] = {"address": options.address, "workers": plan.workers if plan else 0,
                       "cpus_per_worker": plan.cpus if plan else 0, "gpus_per_worker": plan.gpus if plan else 0,
                       "max_retries": options.max_retries, "clip_timeout": options.clip_timeout}
    return settings
