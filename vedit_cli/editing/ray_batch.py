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
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Protocol

from vedit_cli.config import EditConfig, ModelConfig
from vedit_cli.editing.batch import ClipOutcome
from vedit_cli.editing.jobs import ClipJob
from vedit_cli.editing.ray_worker import ClipWorker, StorageCheck, WorkerInfo, remove_attempt_partials
from vedit_cli.errors import ConfigError
from vedit_cli.settings import ResolvedRun

INSTALL_HINT = 'the --ray option needs Ray, which is not installed: pip install "vedit[ray]"'
POLL_SECONDS = 0.1  # how long the driver waits for a result before it looks at progress and timeouts
START_GRACE_SECONDS = 20.0  # the first clips wait this long for the other workers to load, so all share the batch
KILL_WAIT_SECONDS = 10.0  # after ray.kill, how long to wait for the process to be gone before removing its partials


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
    common = dict(log_to_driver=False, logging_level=logging.WARNING)  # worker output goes to their log files
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({error}); start one with "
                          "`ray start --head` on the head node, or use --ray local") from None
    return True


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
            _Driver(ray, run, replace(config, model=run.model), options, plan, check, observer, evaluate,
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

    needs_prompt = backend_needs_prompt(config.model.backend)
    for outcome in outcomes:
        job = outcome.job
        if job.output_path.exists() and not config.overwrite:
            outcome.status = "skipped"
        elif needs_prompt and not job.prompt.strip():
            outcome.status = "failed"
            outcome.error = f"{job.input_path}: the {config.model.backend} backend needs a non-empty prompt"


def _ensure_weights(run: ResolvedRun) -> ResolvedRun:
    """Missing weights are downloaded once, here, when allowed; workers then only verify (no download races)."""
    from vedit_cli.weights.hub import download_allowed, ensure_entries
    from vedit_cli.weights.registry import entries_for_backend

    model = run.model
    if run.weights_dir is None or not download_allowed(model.allow_download):
        return run
    ensure_entries(entries_for_backend(model.backend), run.weights_dir, True)
    return replace(run, model=replace(model, allow_download=False))


@dataclass
class _Slot:
    """One worker place: its current actor, and the call in flight (start or edit)."""

    index: int
    actor: Any
    ref: Any
    state: str = "starting"  # starting, idle, busy, broken
    info: WorkerInfo | None = None
    outcome: ClipOutcome | None = None
    started: float = 0.0
    frames: int = 0
    progress_ref: Any = None
    replacements: int = 0


class _Driver:
    """The driver's loop: dispatch, collect, progress, timeouts; a dead worker's clip goes back to the queue."""

    def __init__(self, ray, run, config, options: RayOptions, plan: WorkerPlan, check, observer, evaluate, debug):
        self.ray, self.options, self.plan, self.observer = ray, options, plan, observer
        self.actor_class = ray.remote(ClipWorker).options(num_cpus=plan.cpus, num_gpus=plan.gpus,
                                                          max_concurrency=2, max_restarts=0)
        self.arguments = (run, config, plan.cpus, check, evaluate, debug)
        self.queue: deque[ClipOutcome] = deque()
        self.attempts: dict[ClipJob, int] = {}
        self.problems: list[str] = []
        self.slots: list[_Slot] = []
        self.finished: list[ClipOutcome] = []
        self.frames_finished = 0
        self.overheads: list[float] = []  # per clip: driver round trip minus the worker's own clip seconds
        self.started = time.perf_counter()
        self.first_ready: float | None = None  # when the first worker was ready; dispatch waits for the others

    def run(self, runnable: list[ClipOutcome]) -> None:
        self.queue.extend(runnable)
        self.slots = [self._new_slot(index) for index in range(self.plan.workers)]
        try:
            while self.queue or any(slot.state == "busy" for slot in self.slots):
                if self.queue and all(slot.state == "broken" for slot in self.slots):
                    self._fail_queue()
                    break
                self._dispatch()
                self._collect()
                self._poll_progress()
                self._stop_overdue()
                self.observer.progress(self._snapshot())
        except BaseException:  # Ctrl-C (or a bug): stop the cluster work and remove partial outputs
            self._cancel()
            raise
        finally:
            for slot in self.slots:
                self._kill(slot)

    # -- steps of the loop

    def _new_slot(self, index: int, replacements: int = 0) -> _Slot:
        actor = self.actor_class.remote(index, *self.arguments)
        return _Slot(index, actor, actor.start.remote(), replacements=replacements)

    def _dispatch(self) -> None:
        if not self._all_started():
            return
        for slot in self.slots:
            if slot.state == "idle" and self.queue:
                slot.outcome = self.queue.popleft()
                slot.ref, slot.state = slot.actor.edit.remote(slot.outcome.job), "busy"
                slot.started, slot.frames = time.perf_counter(), 0

    def _collect(self) -> None:
        waiting = {slot.ref: slot for slot in self.slots if slot.ref is not None}
        if not waiting:
            time.sleep(POLL_SECONDS)
            return
        ready, _ = self.ray.wait(list(waiting), num_returns=1, timeout=POLL_SECONDS)
        if ready:  # and whatever else is ready now
            ready, _ = self.ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        for ref in ready:
            slot = waiting[ref]
            slot.ref = None
            try:
                value = self.ray.get(ref)
            except Exception as error:  # the actor died: killed, out of memory, node lost
                self._lost(slot, error)
                continue
            self._started(slot, value) if slot.state == "starting" else self._finished(slot, value)

    def _started(self, slot: _Slot, info: WorkerInfo) -> None:
        slot.info = info
        self.observer.worker_started(info)
        if info.problem:
            self._break(slot, f"worker {slot.index} on {info.host}: {info.problem}")
        else:
            slot.state = "idle"
            self.first_ready = self.first_ready or time.perf_counter()

    def _all_started(self) -> bool:
        """True once no first start is pending, or the first ready worker has waited START_GRACE_SECONDS."""
        if self.first_ready is None:
            return False
        pending = any(slot.state == "starting" and slot.replacements == 0 for slot in self.slots)
        return not pending or time.perf_counter() - self.first_ready > START_GRACE_SECONDS

    def _finished(self, slot: _Slot, result: ClipOutcome) -> None:
        outcome = slot.outcome
        for name in ("status", "frames", "seconds", "error", "editor", "metrics", "notes"):
            setattr(outcome, name, getattr(result, name))
        outcome.worker = slot.info.as_dict()
        self.frames_finished += outcome.frames
        self.overheads.append(max(0.0, time.perf_counter() - slot.started - result.seconds))
        slot.state, slot.outcome = "idle", None
        self._report(outcome)

    def _lost(self, slot: _Slot, error: BaseException) -> None:
        """A worker died: remove its partial output, put its clip back (or fail it), start a replacement."""
        reason = _short(error)
        if slot.state == "starting":
            self._break(slot, f"worker {slot.index} died while starting: {reason}")
            return
        outcome, info = slot.outcome, slot.info
        remove_attempt_partials(outcome.job.output_path, info.writer_prefix)
        tries = self.attempts[outcome.job] = self.attempts.get(outcome.job, 0) + 1
        where = f"worker {slot.index} ({info.host} pid {info.pid})"
        if tries <= self.options.max_retries:
            self.queue.appendleft(outcome)
            self.observer.notice(f"{where} died while editing {outcome.job.input_path} ({reason}); its partial "
                                 f"output was removed; retry {tries} of {self.options.max_retries} on another worker")
        else:
            self._fail(outcome, slot, f"the worker editing it died {tries} times ({reason}); gave up after "
                                      f"--max-retries {self.options.max_retries}; nothing was saved")
        self._replace(slot)

    def _poll_progress(self) -> None:
        for slot in self.slots:
            if slot.state != "busy":
                continue
            if slot.progress_ref is None:
                slot.progress_ref = slot.actor.progress.remote()
                continue
            ready, _ = self.ray.wait([slot.progress_ref], timeout=0)
            if ready:
                try:
                    slot.frames = self.ray.get(slot.progress_ref)[0]
                except Exception:  # the worker died; _collect handles it
                    pass
                slot.progress_ref = None

    def _stop_overdue(self) -> None:
        limit = self.options.clip_timeout
        now = time.perf_counter()
        for slot in self.slots:
            if limit is not None and slot.state == "busy" and now - slot.started > limit:
                outcome = slot.outcome
                self._kill(slot, wait=True)
                remove_attempt_partials(outcome.job.output_path, slot.info.writer_prefix)
                self._fail(outcome, slot, f"stopped after --clip-timeout {limit:g} s (a decoder that hangs, or a "
                                          "clip that needs a longer timeout); nothing was saved")
                self._replace(slot)

    def _snapshot(self) -> RayProgress:
        done = sum(outcome.status == "ok" for outcome in self.finished)
        failed = sum(outcome.status == "failed" for outcome in self.finished)
        running = [slot for slot in self.slots if slot.state == "busy"]
        frames = self.frames_finished + sum(slot.frames for slot in running)
        elapsed = time.perf_counter() - self.started
        total = len(self.finished) + len(running) + len(self.queue)
        overhead = sum(self.overheads) / len(self.overheads) if self.overheads else 0.0
        return RayProgress(total, done, len(running), failed, frames, frames / elapsed if elapsed > 0 else 0.0,
                           overhead)

    # -- helpers

    def _report(self, outcome: ClipOutcome) -> None:
        self.finished.append(outcome)
        self.observer.clip_finished(outcome)

    def _fail(self, outcome: ClipOutcome, slot: _Slot, line: str) -> None:
        outcome.status, outcome.error = "failed", f"{outcome.job.input_path}: {line}"
        outcome.seconds = time.perf_counter() - slot.started
        outcome.worker = slot.info.as_dict() if slot.info else None
        self._report(outcome)

    def _break(self, slot: _Slot, line: str) -> None:
        slot.state = "broken"
        self.problems.append(line)
        self.observer.notice(line)

    def _replace(self, slot: _Slot) -> None:
        """A fresh actor in the dead one's place (it reloads the editor), a bounded number of times."""
        self._kill(slot)
        if slot.replacements > self.options.max_retries:
            self._break(slot, f"worker {slot.index} died {slot.replacements + 1} times; not restarted")
            return
        self.slots[self.slots.index(slot)] = self._new_slot(slot.index, slot.replacements + 1)

    def _kill(self, slot: _Slot, wait: bool = False) -> None:
        try:
            self.ray.kill(slot.actor, no_restart=True)
            if wait and slot.ref is not None:
                self.ray.wait([slot.ref], timeout=KILL_WAIT_SECONDS)  # resolves (with an error) once it is gone
        except Exception:  # already gone
            pass
        slot.ref, slot.state = None, "broken"

    def _fail_queue(self) -> None:
        reason = self.problems[0] if self.problems else "no Ray worker could start"
        while self.queue:
            outcome = self.queue.popleft()
            outcome.status, outcome.error = "failed", f"{outcome.job.input_path}: no worker can edit it: {reason}"
            self._report(outcome)

    def _cancel(self) -> None:
        """Ctrl-C: kill the busy workers, wait until they are gone, then remove their partial outputs."""
        busy = [slot for slot in self.slots if slot.state == "busy"]
        for slot in busy:
            outcome, info = slot.outcome, slot.info
            self._kill(slot, wait=True)
            remove_attempt_partials(outcome.job.output_path, info.writer_prefix)
            outcome.status, outcome.error = "failed", f"{outcome.job.input_path}: interrupted"


def _short(error: BaseException) -> str:
    """The first line of a Ray error: which actor died and why."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
