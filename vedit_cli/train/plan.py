"""Which sample each process trains on at each step, and the seed of every per-sample random draw (pure).

The order of samples is a function of (seed, epoch) only, and a sample's position `q` inside the global batch of
step `s` fixes its random draws (noise, timestep, condition dropout, augmentation) through `sample_seed(seed, s, q)`.
So one process with batch 2B and two processes with batch B see the same samples with the same noise, and resuming
at step k needs nothing but k (the data position is the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def sample_seed(seed: int, step: int, position: int) -> int:
    """A 63-bit seed for the random draws of the sample at `position` in the global batch of `step`."""
    state = np.random.SeedSequence([seed, step, position]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


@lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, length: int) -> np.ndarray:
    """The dataset indices in the order epoch `epoch` visits them."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(length)


@dataclass(frozen=True)
class BatchPlan:
    """Global batch = batch_size x num_processes x accumulation; positions are counted over the whole run."""

    dataset_length: int
    batch_size: int  # per process, per micro-step
    num_processes: int = 1
    accumulation: int = 1
    seed: int = 0
    shuffle: bool = True

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_processes * self.accumulation

    def positions(self, step: int, micro_step: int, rank: int) -> list[int]:
        """Positions (0 .. global_batch-1) inside step `step`'s global batch that `rank` trains on in `micro_step`."""
        first = (micro_step * self.num_processes + rank) * self.batch_size
        return list(range(first, first + self.batch_size))

    def dataset_index(self, step: int, position: int) -> int:
        """The dataset index at `position` of step `step`: epochs walk a fresh permutation each."""
        absolute = step * self.global_batch + position
        epoch, offset = divmod(absolute, self.dataset_length)
        if not self.shuffle:
            return offset
        return int(epoch_order(self.seed, epoch, self.dataset_length)[offset])

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.dataset_length
