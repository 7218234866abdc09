"""Per-sample random draws: one torch.Generator per sample, seeded by plan.sample_seed(seed, step, position), so a
sample's noise, timestep and dropout do not depend on the batch it lands in, the process count, or a resume."""

from __future__ import annotations

import torch


class SampleRandom:
    """Draws in the order they are asked for; each call returns one value (or tensor) per sample, stacked, on CPU."""

    def __init__(self, seeds: torch.Tensor | list[int]):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def rand(self) -> torch.Tensor:
        """[B] uniform in [0, 1)."""
        return torch.cat([torch.rand(1, generator=g) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        """[B] integers in [0, high)."""
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators])

    def randn(self, *shape: int) -> torch.Tensor:
        """[B, *shape] standard normal."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators])
