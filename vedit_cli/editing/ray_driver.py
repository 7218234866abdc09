"""The driver's loop of `vedit edit --ray`: dispatch clips from a queue to idle workers, collect results, poll
progress, stop clips over their timeout; a dead worker's partial output is removed and its clip goes back to the
queue (or fails after --max-retries), and a fresh worker takes its place. Ctrl-C kills the busy workers."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from vedit_cli.editing.batch import ClipOutcome
from vedit_cli.editing.jobs import ClipJob
from vedit_cli.editing.ray_batch import RayOptions, RayProgress, WorkerPlan
from vedit_cli.editing.ray_worker import ClipWorker, WorkerInfo, remove_attempt_partials

POLL_SECONDS = 0.1  # how long the driver waits for a result before it looks at progress and timeouts
START_GRACE_SECONDS = 20.0  # the first clips wait this long for the other workers to load, so all share the batch
KILL_WAIT_SECONDS = 10.0  # after ray.kill, how long to wait for the process to be gone before removing its partials
SETTLE_SECONDS = 1.0  # partials must stay absent this long: a dead worker's encoder child may still finish its file


def remove_partials_settled(output_path, writer_prefix: str, limit: float = KILL_WAIT_SECONDS) -> None:
    """Remove a dead writer's partial files until none has reappeared for SETTLE_SECONDS (or `limit` passes): the
    ffmpeg child of a killed worker outlives it for a moment, sees its stdin close, and finishes (or rewrites, for
    +faststart) the file after a first removal."""
    started = last_seen = time.perf_counter()
    while True:
        now = time.perf_counter()
        if remove_attempt_partials(output_path, writer_prefix):
            last_seen = now
        if now - last_seen >= SETTLE_SECONDS or now - started >= limit:
            return
        time.sleep(0.05)


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


class Driver:
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
        remove_partials_settled(outcome.job.output_path, info.writer_prefix)
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
                remove_partials_settled(outcome.job.output_path, slot.info.writer_prefix)
                self._fail(outcome, slot, f"stopped after --clip-timeout {limit:g} s (a decoder that hangs, or a "
                                          "clip that needs a longer timeout); nothing was saved")
                self._replace(slot, died=False)

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

    def _replace(self, slot: _Slot, died: bool = True) -> None:
        """A fresh actor in the dead (or stopped) one's place; it reloads the editor. A place whose workers keep
        dying is given up after --max-retries replacements; a clip's timeout is no fault of the worker."""
        self._kill(slot)
        if died and slot.replacements > self.options.max_retries:
            self._break(slot, f"worker {slot.index} died {slot.replacements + 1} times; not restarted")
            return
        self.slots[self.slots.index(slot)] = self._new_slot(slot.index, slot.replacements + died)

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
            remove_partials_settled(outcome.job.output_path, info.writer_prefix)
            outcome.status, outcome.error = "failed", f"{outcome.job.input_path}: interrupted"


def _short(error: BaseException) -> str:
    """The first line of a Ray error: which actor died and why."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
