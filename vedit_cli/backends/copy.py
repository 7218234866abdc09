"""The `copy` backend: no model; frames pass through unchanged, to check the I/O path."""

from __future__ import annotations

import torch

from vedit_cli.editor import Editor


class CopyEditor(Editor):
    needs_prompt = False
    needs_weights = False
    size_multiple = 1
    resizes = False
    description = "copy: frames pass through unchanged (no model)"

    @classmethod
    def from_run(cls, run) -> "CopyEditor":
        return cls()

    def prepare(self, prompt: str) -> None:
        pass

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        return frames_tchw
