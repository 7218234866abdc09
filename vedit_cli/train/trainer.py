"""One training loop for every recipe, on huggingface accelerate.

One process on a CPU or a GPU; many GPUs or nodes with `accelerate launch` (DDP; on CPUs the gloo backend, e.g.
`torchrun --nproc-per-node 2`); mixed precision, gradient accumulation, gradient checkpointing where the model has
it, EMA (diffusers.training_utils.EMAModel) when `ema_decay` is set, checkpoints every N steps keeping the last K,
exact resume (model, optimizer, LR schedule, EMA, RNG, data position), validation every N steps, a JSONL log.

A recipe (see `Recipe`) supplies the model, the data and a per-sample loss. The loss of a micro-batch is the sum of
the per-sample losses over the nominal batch size (a skipped sample weighs 0), so the gradient is the mean over the
global batch whatever the process count. The library never prints: `progress(event)` receives every event.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from vedit_cli.errors import ConfigError
from vedit_cli.train import checkpoints as ckpt
from vedit_cli.train.config import TrainerConfig
from vedit_cli.train.data.samples import MicroBatches, SampleSource, check_source
from vedit_cli.train.plan import BatchPlan

Progress = Callable[[dict], None]
MAX_SKIP_REASONS_LOGGED = 50
class Recipe(Protocol):
    """What a recipe gives the trainer. `model` is the one trained module (its requires_grad parameters train)."""

    model: torch.nn.Module
    source: SampleSource

    def setup(self, accelerator) -> None:
        """Move frozen components to accelerator.device (in the mixed-precision dtype) and precompute constants."""

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        """CPU work on one raw sample (decode, resize, augment with `seed`); raises BadSample. Runs in workers."""

    def collate(self, samples: list[dict]) -> dict: ...

    def loss(self, model: torch.nn.Module, batch: dict, step: int) -> torch.Tensor:
        """Per-sample losses [B]; random draws come from SampleRandom(batch["sample_seed"])."""

    def validate(self, model: torch.nn.Module, step: int, folder: Path) -> None: ...

    def save(self, model: torch.nn.Module) -> Path:
        """Write the trained model where the recipe's output belongs; return that folder."""


@dataclass
class TrainResult:
    output: Path
    work_dir: Path
    start_step: int
    steps: int
    skipped_samples: int
    last_loss: float | None
    seconds: float
    rank_digests: list[str] = field(default_factory=list)


def train(recipe: Recipe, config: TrainerConfig, progress: Progress | None = None) -> TrainResult:
    """Run `recipe` to config.max_steps (from the newest checkpoint when config.resume) and save its output."""
    from accelerate.state import AcceleratorState, GradientState

    config.check()
    check_source(recipe.source, "the training data")
    try:
        return _Run(recipe, config, progress or (lambda event: None)).run()
    finally:
        AcceleratorState._reset_state()  # a later train() in this process starts from a clean accelerate state
        GradientState._reset_state()


def _as_is(batch: dict) -> dict:
    """The DataLoader's collate: MicroBatches items are whole micro-batches (a named function: spawn pickles it)."""
    return batch


def _trackers(config: TrainerConfig) -> list[str] | None:
    """["tensorboard"] when asked and installed; asked and absent is one line saying what to install."""
    import importlib.util

    if not config.tensorboard:
        return None
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return ["tensorboard"]


class _Run:
    def __init__(self, recipe: Recipe, config: TrainerConfig, progress: Progress):
        self.recipe, self.config, self.progress = recipe, config, progress
        self.work_dir = Path(config.work_dir)

    def run(self) -> TrainResult:
        started = time.perf_counter()
        self._accelerate()
        start_step, skipped = self._restore()
        loader = self._loader(start_step)
        self.log = ckpt.JsonlLog(self.work_dir / "log.jsonl", self.main, start_step if self.config.resume else None)
        self._emit({"event": "start", "step": start_step, "max_steps": self.config.max_steps,
                    "processes": self.accelerator.num_processes, "backend": self.accelerator.state.backend,
                    "global_batch": self.plan.global_batch, "samples": len(self.recipe.source),
                    "resumed": start_step > 0})
        step, last_loss, skipped = self._loop(loader, start_step, skipped)
        digests = self._rank_digests()
        output = self._save_output()
        seconds = time.perf_counter() - started
        self._emit({"event": "end", "step": step, "output": str(output), "skipped_samples": skipped,
                    "rank_digests": digests, "seconds": round(seconds, 2)})
        self._release()
        return TrainResult(output, self.work_dir, start_step, step, skipped, last_loss, seconds, digests)

    # 1. accelerate, optimizer, schedule, EMA
    def _accelerate(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, set_seed
        from diffusers.optimization import get_scheduler

        config = self.config
        cpu = config.cpu or not torch.cuda.is_available()
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by accelerate launch / torchrun
        handlers = [InitProcessGroupKwargs(backend="gloo")] if cpu and distributed else []  # not mpi on CPUs
        project = ProjectConfiguration(project_dir=str(self.work_dir), logging_dir=str(self.work_dir / "tensorboard"))
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            cpu=cpu, kwargs_handlers=handlers, project_config=project, log_with=_trackers(config),
        )
        if config.tensorboard:
            self.accelerator.init_trackers("vedit-train")
        self.main = self.accelerator.is_main_process
        set_seed(config.seed)
        self.recipe.setup(self.accelerator)
        model = self.recipe.model
        if config.gradient_checkpointing and hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing()
        model.train()
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, betas=config.adam_betas,
                                      weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
        # stepped here once per optimizer step (not prepared: accelerate would step it once per process)
        self.lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                          num_training_steps=config.max_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema = None
        if config.ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.parameters, decay=config.ema_decay)
            self.ema.to(self.accelerator.device)

    # 2. resume
    def _restore(self) -> tuple[int, int]:
        if self.main:
            ckpt.remove_partials(self.work_dir)
        self.accelerator.wait_for_everyone()
        checkpoint = ckpt.latest_checkpoint(self.work_dir) if self.config.resume else None
        if checkpoint is None:
            return 0, 0
        state = ckpt.read_state(checkpoint)
        if state.get("global_batch") not in (None, self._global_batch()):
            raise ConfigError(f"{checkpoint} was trained with a global batch of {state['global_batch']} "
                              f"(batch x processes x accumulation); this run has {self._global_batch()}: "
                              "resume with the same global batch, or start a new --work-dir")
        self.accelerator.load_state(str(checkpoint))
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.ema is not None:
            ckpt.load_ema(self.ema, checkpoint, state["ema_optimization_step"])
        return int(state["step"]), int(state.get("skipped_samples", 0))

    def _global_batch(self) -> int:
        c = self.config
        return c.batch_size * self.accelerator.num_processes * c.gradient_accumulation_steps

    # 3. data
    def _loader(self, start_step: int):
        config, accelerator = self.config, self.accelerator
        self.plan = BatchPlan(len(self.recipe.source), config.batch_size, accelerator.num_processes,
                              config.gradient_accumulation_steps, config.seed, config.shuffle)
        dataset = MicroBatches(self.recipe.source, self.plan, accelerator.process_index, start_step,
                               config.max_steps, self.recipe.prepare_sample, self.recipe.collate)
        return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=config.num_workers,
                                           collate_fn=_as_is)

    # 4. the loop
    def _loop(self, loader, step: int, skipped: int) -> tuple[int, float | None, int]:
        micro_losses, micro_skipped, last_loss = [], [], None
        for batch in loader:
            with self.accelerator.accumulate(self.model):
                per_sample = self.recipe.loss(self.model, batch, batch["step"])
                weight = batch["weight"].to(per_sample.device, per_sample.dtype)
                loss = (per_sample * weight).sum() / len(weight)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients and self.config.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            micro_losses.append(loss.detach().float())
            micro_skipped += batch["skipped"]
            if not self.accelerator.sync_gradients:
                continue
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.parameters)
            step += 1
            last_loss, skipped = self._after_step(step, micro_losses, micro_skipped, skipped)
            micro_losses, micro_skipped = [], []
        return step, last_loss, skipped

    def _after_step(self, step: int, losses: list, reasons: list[str], skipped: int) -> tuple[float, int]:
        accelerator = self.accelerator
        # mean over micro-steps, then over processes: the global batch's loss
        loss = accelerator.reduce(torch.stack(losses).mean().to(accelerator.device), "mean").item()
        new_skips = int(accelerator.reduce(torch.tensor(len(reasons), device=accelerator.device), "sum").item())
        if new_skips:
            from accelerate.utils import gather_object

            for reason in gather_object(reasons)[: max(0, MAX_SKIP_REASONS_LOGGED - skipped)]:
                self._emit({"event": "skipped", "step": step, "sample": reason})
        skipped += new_skips
        record = {"loss": loss, "lr": self.lr_scheduler.get_last_lr()[0], "skipped_samples": skipped}
        self._emit({"event": "step", "step": step, "max_steps": self.config.max_steps, **record,
                    "epoch": round(self.plan.epoch_of(step), 4)})
        if self.config.tensorboard:
            accelerator.log(record, step=step)
        if step % self.config.checkpoint_every == 0 or step == self.config.max_steps:
            self._checkpoint(step, skipped)
        if self.config.validate_every and step % self.config.validate_every == 0:
            self._validate(step)
        if not math.isfinite(loss):
            raise ConfigError(f"the loss became {loss} at step {step}; lower --learning-rate or use float32 "
                              f"(--mixed-precision no); resume from {ckpt.latest_checkpoint(self.work_dir)}")
        return loss, skipped

    def _checkpoint(self, step: int, skipped: int) -> None:
        partial = ckpt.partial_dir(self.work_dir, step)
        self.accelerator.save_state(str(partial))
        self.accelerator.wait_for_everyone()
        if self.main:
            if self.ema is not None:
                ckpt.save_ema(self.ema, partial)
            state = {"step": step, "skipped_samples": skipped, "global_batch": self.plan.global_batch,
                     "lr_scheduler": self.lr_scheduler.state_dict(),
                     "ema_optimization_step": self.ema.optimization_step if self.ema is not None else None,
                     "processes": self.accelerator.num_processes, "seed": self.config.seed}
            final = ckpt.finish_checkpoint(self.work_dir, step, state, self.config.keep_checkpoints)
            self._emit({"event": "checkpoint", "step": step, "path": str(final)})
        self.accelerator.wait_for_everyone()

    def _validate(self, step: int) -> None:
        if self.main:
            folder = self.work_dir / "validation" / f"step-{step:07d}"
            folder.mkdir(parents=True, exist_ok=True)
            with self._ema_weights():
                model = self.accelerator.unwrap_model(self.model).eval()
                with torch.no_grad(), self.accelerator.autocast():  # frozen parts may be in fp16/bf16
                    self.recipe.validate(model, step, folder)
                model.train()
            self._emit({"event": "validation", "step": step, "path": str(folder)})
        self.accelerator.wait_for_everyone()

    def _ema_weights(self):
        """Within: the model holds the EMA weights (when EMA is on), restored after."""
        import contextlib

        if self.ema is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def swapped():
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)
            try:
                yield
            finally:
                self.ema.restore(self.parameters)

        return swapped()

    # 5. the end
    def _rank_digests(self) -> list[str]:
        """sha256 of every process's trained weights: DDP keeps them identical, and the log shows it."""
        from accelerate.utils import gather_object

        digest = hashlib.sha256()
        for parameter in self.parameters:
            digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
        return gather_object([digest.hexdigest()[:16]])

    def _save_output(self) -> Path:
        output = None
        if self.main:
            model = self.accelerator.unwrap_model(self.model).eval()
            if self.ema is not None:
                self.ema.copy_to(self.parameters)
            output = self.recipe.save(model)
        self.accelerator.wait_for_everyone()
        from accelerate.utils import broadcast_object_list

        return Path(broadcast_object_list([output])[0])

    def _release(self) -> None:
        """Drop the DDP wrapper while its process group lives (destroying the group first hangs gloo), then end."""
        self.accelerator.wait_for_everyone()
        self.model = self.optimizer = None
        self.accelerator.free_memory()
        self.accelerator.end_training()

    def _emit(self, event: dict) -> None:
        if self.main:
            self.log.write({**event, "time": round(time.time(), 3)}) if hasattr(self, "log") else None
            self.progress(event)
