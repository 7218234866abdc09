"""Edit a batch of clips on Ray actors, across every GPU of a machine or a cluster.

The driver (this process) plans nothing new: it takes the jobs `plan_jobs` made, skips finished outputs, and feeds
the rest one clip at a time from its own queue to long-lived actors (`ClipWorker`), each of which resolves its own
hardware, checks that it sees the driver's files (shared storage), loads the editor once and edits whole clips
(windows and recurrent memory need a clip's frames in order on one worker). Ray Core actors and a driver-side queue
rather than Ray Data: a clip is one unit that must be retried whole on another worker after a worker dies, its
partial output removed first, and stopped after a timeout; Ray Data retries blocks inside a pipeline and cannot say
which attempt left which file. Ray is imported only here, only when `--ray` is used. Never prints.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Protocol

from vedit_cli.config import EditConfig, ModelConfig
from vedit_cli.editing.batch import ClipOutcome
from vedit_cli.editing.jobs import ClipJob
from vedit_cli.editing.ray_worker import StorageCheck, WorkerInfo
from vedit_cli.errors import ConfigError
from vedit_cli.settings import ResolvedRun

INSTALL_HINT = 'the --ray option needs Ray, which is not installed: pip install "vedit[ray]"'


@dataclass(frozen=True)
class RayOptions:
    """`--ray ADDRESS --workers N --gpus-per-worker F --max-retries R --clip-timeout S`."""

    address: str = "local"  # "local": start Ray here; "auto": the cluster this node belongs to; or host:port, ray://...
    workers: int | None = None  # None: one per GPU (GPUs / gpus_per_worker), else 1 CPU worker
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs and --device allows them, else 0
    max_retries: int = 2  # attempts after the first when the worker editing a clip dies
    clip_timeout: float | None = None  # seconds one clip may take on a worker (probe to commit); None: no limit

    def validate(self) -> "RayOptions":
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker:g}")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {self.max_retries}")
        if self.clip_timeout is not None and self.clip_timeout <= 0:
            raise ConfigError(f"--clip-timeout must be a positive number of seconds, got {self.clip_timeout:g}")
        return self


@dataclass(frozen=True)
class WorkerPlan:
    """How many actors, and what each one reserves."""

    workers: int
    cpus: int  # CPUs reserved per worker; also its torch threads
    gpus: float


@dataclass(frozen=True)
class RayProgress:
    """The driver's view of the whole batch, all workers together."""

    total: int
    done: int
    running: int
    failed: int
    frames: int
    frames_per_second: float
    driver_overhead: float = 0.0  # seconds per finished clip between dispatch and result not spent editing (mean)


class RayObserver(Protocol):
    def batch_started(self, total_clips: int, plan: WorkerPlan, description: str) -> None: ...
    def worker_started(self, info: WorkerInfo) -> None: ...
    def notice(self, line: str) -> None: ...
    def progress(self, snapshot: RayProgress) -> None: ...
    def clip_finished(self, outcome: ClipOutcome) -> None: ...


class SilentRayObserver:
    def batch_started(self, total_clips: int, plan: WorkerPlan, description: str) -> None: ...
    def worker_started(self, info: WorkerInfo) -> None: ...
    def notice(self, line: str) -> None: ...
    def progress(self, snapshot: RayProgress) -> None: ...
    def clip_finished(self, outcome: ClipOutcome) -> None: ...


def import_ray():
    """Ray, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def driver_run(model: ModelConfig) -> ResolvedRun:
    """The driver's run: the user's settings with defaults filled in; hardware is resolved by each worker (the
    driver may have no GPU at all), so the one here only says so."""
    import torch

    from vedit_cli.hardware import Hardware
    from vedit_cli.settings import resolve_run

    return resolve_run(model, hardware=Hardware(torch.device("cpu"), torch.float32, "resolved on each Ray worker", 0))


def connect(address: str) -> bool:
    """Join (or start) Ray; True when this call started it, so the caller shuts it down."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, logging_level=logging.ERROR)  # worker output goes to their log files
    _check_reachable(address)
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({error}); start one with "
                          "`ray start --head` on the head node, or use --ray local") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port (or ray://host:port) that answers no TCP connection is refused in seconds; ray.init would
    retry it for minutes, printing its own connection errors."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address in ("local", "auto") or not host or not port.isdigit():
        return
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({error.strerror or error}); start one "
                          "with `ray start --head` on the head node, or use --ray local") from None


def plan_workers(resources: dict[str, float], options: RayOptions, device: str) -> WorkerPlan:
    """Workers and their reservations from the cluster's resources: one per GPU by default, else one CPU worker."""
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    if device == "cuda" and gpus == 0:
        raise ConfigError("--device cuda was asked for but the Ray cluster has no GPU; use --device auto or cpu")
    if device not in ("auto", "cuda") and options.gpus_per_worker:
        raise ConfigError(f"--gpus-per-worker {options.gpus_per_worker:g} needs --device auto or cuda, "
                          f"not {device}")
    per_worker_gpus = options.gpus_per_worker
    if per_worker_gpus is None:
        per_worker_gpus = 1.0 if device in ("auto", "cuda") and gpus > 0 else 0.0
    workers = options.workers or (int(gpus // per_worker_gpus) if per_worker_gpus else 1)
    if workers < 1 or workers * per_worker_gpus > gpus + 1e-9:
        raise ConfigError(f"{options.workers or 'one'} worker(s) x {per_worker_gpus:g} GPU need more than the "
                          f"{gpus:g} GPU(s) this Ray cluster has; lower --workers or --gpus-per-worker")
    if workers > cpus:
        raise ConfigError(f"--workers {workers} needs at least one CPU each but this Ray cluster has {cpus:g} CPUs")
    return WorkerPlan(workers, max(1, math.floor(cpus / workers)), per_worker_gpus)


def run_ray_batch(jobs: list[ClipJob], config: EditConfig, run: ResolvedRun, options: RayOptions,
                  observer: RayObserver | None = None, evaluate: bool = False, debug: bool = False) -> list[ClipOutcome]:
    """1. skip finished outputs  2. join Ray  3. start the workers (each resolves its hardware, checks storage,
    loads the editor)  4. feed them clips from the queue, retrying a dead worker's clip  5. stop them.
    `run` is the driver's (settings.resolve_run); a Ray instance already running in this process is used as is."""
    ray = import_ray()
    observer = observer or SilentRayObserver()
    outcomes = [ClipOutcome(job) for job in jobs]
    _skip_finished(outcomes, config)
    runnable = [outcome for outcome in outcomes if outcome.status == "pending"]
    started_ray = connect(options.address) if runnable else False
    check = None
    try:
        plan = plan_workers(ray.cluster_resources(), options, config.model.device) if runnable else WorkerPlan(0, 0, 0)
        if runnable:
            run = _ensure_weights(run)
            check = StorageCheck.create([outcome.job for outcome in runnable], run.weights_dir)
        observer.batch_started(len(runnable), plan, run.summary().replace(f" on {run.hardware.describe()}", ""))
        for outcome in outcomes:
            if outcome.status != "pending":
                observer.clip_finished(outcome)
        if runnable:
            from vedit_cli.editing.ray_driver import Driver

            Driver(ray, run, replace(config, model=run.model), options, plan, check, observer, evaluate,
                    debug).run(runnable)
    finally:
        if check is not None:
            check.remove()
        if started_ray:
            ray.shutdown()
    return outcomes


def _skip_finished(outcomes: list[ClipOutcome], config: EditConfig) -> None:
    """On the driver, no probing: finished outputs are skipped, an empty prompt refused; workers probe."""
    from vedit_cli.editor import backend_needs_prompt
    from vedit_cli.io.partials import remove_stale_partials

    needs_prompt = backend_needs_prompt(config.model.backend)
    for outcome in outcomes:
        job = outcome.job
        if job.output_path.exists() and not config.overwrite:
            outcome.status = "skipped"
            remove_stale_partials(job.output_path)  # left by an --overwrite run of it that was killed
        elif needs_prompt and not job.prompt.strip():
            outcome.status = "failed"
            outcome.error = f"{job.input_path}: the {config.model.backend} backend needs a non-empty prompt"


def _ensure_weights(run: ResolvedRun) -> ResolvedRun:
    """Missing weights are downloaded once, here, when allowed; workers then only verify (no download races)."""
    from vedit_cli.weights.hub import ensure_entries
    from vedit_cli.weights.registry import entries_for_model

    model = run.model
    if run.weights_dir is None or not model.allow_download:
        return run
    ensure_entries(entries_for_model(model), run.weights_dir, True)
    return replace(run, model=replace(model, allow_download=False))
