"""The sample-source contract and the per-process micro-batch dataset built on the BatchPlan.

A source has `__len__`, `load(index) -> dict` and `describe(index) -> str`; a sample it cannot read raises BadSample
(readers turn their own I/O and decoding errors into it). The loader skips a bad sample and counts it: it is
replaced by a readable one with weight 0, so every micro-batch keeps its nominal size (DDP ranks stay in step) and
the skipped sample adds nothing to the loss.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from vedit_cli.errors import TrainingDataError
from vedit_cli.train.plan import BatchPlan, sample_seed


class BadSample(Exception):
    """One sample cannot be read or prepared; the loader skips and counts it."""


class SampleSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> dict: ...

    def describe(self, index: int) -> str: ...


Prepare = Callable[[dict, int], dict]  # (raw sample, per-sample seed) -> tensors; raises BadSample
Collate = Callable[[list[dict]], dict]


class MicroBatches(torch.utils.data.Dataset):
    """Item i is this rank's micro-batch number i counted from `start_step` (torch DataLoader, batch_size=None)."""

    def __init__(self, source: SampleSource, plan: BatchPlan, rank: int, start_step: int, max_steps: int,
                 prepare: Prepare, collate: Collate):
        self.source, self.plan, self.rank = source, plan, rank
        self.start_step, self.max_steps = start_step, max_steps
        self.prepare, self.collate = prepare, collate
        self._fallback: dict | None = None

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.plan.accumulation

    def __getitem__(self, item: int) -> dict[str, Any]:
        step, micro_step = divmod(item, self.plan.accumulation)
        step += self.start_step
        samples, weights, seeds, skipped = [], [], [], []
        for position in self.plan.positions(step, micro_step, self.rank):
            index = self.plan.dataset_index(step, position)
            seed = sample_seed(self.plan.seed, step, position)
            try:
                samples.append(self.prepare(self.source.load(index), seed))
                weights.append(1.0)
            except BadSample as error:
                skipped.append(f"{self.source.describe(index)}: {error}")
                samples.append(self._fallback_sample(seed))
                weights.append(0.0)
            seeds.append(seed)
        batch = self.collate(samples)
        batch.update(weight=torch.tensor(weights), sample_seed=torch.tensor(seeds, dtype=torch.int64),
                     skipped=skipped, step=step)
        return batch

    def _fallback_sample(self, seed: int) -> dict:
        """The first readable sample of the source (weight 0: it only keeps the batch shape)."""
        if self._fallback is None:
            first_error = None
            for index in range(len(self.source)):
                try:
                    self._fallback = self.prepare(self.source.load(index), seed)
                    break
                except BadSample as error:
                    first_error = first_error or f"{self.source.describe(index)}: {error}"
            else:
                raise TrainingDataError(f"none of the {len(self.source)} training samples could be read (first: "
                                        f"{first_error}); check the data path and format")
        return self._fallback


def check_source(source: SampleSource, what: str) -> None:
    """Fail at once, in one line, on an empty source (a bad sample is skipped later, an empty dataset is not)."""
    if len(source) == 0:
        raise TrainingDataError(f"{what} holds no samples; check the path and the column names")
