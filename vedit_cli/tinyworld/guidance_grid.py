"""Does guidance still act after distillation? On a grid of (s_T, s_I), including values outside the student's
training ranges and asymmetric pairs, the mean distance of the edit from its source (pixel MAE, 0-255) for the
teacher and for the student, on the same frames and instructions, through the backend's own editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEXT_SCALES = (2.0, 7.5, 14.0)  # 14 is outside the student's training range (1, 12)
IMAGE_SCALES = (1.0, 1.5, 2.5)  # 2.5 is outside (1, 2)


@dataclass(frozen=True)
class Grid:
    label: str
    distances: np.ndarray  # [len(TEXT_SCALES), len(IMAGE_SCALES)]

    @property
    def range(self) -> float:
        return float(self.distances.max() - self.distances.min())


def distance_grid(label: str, weights_dir: Path, mode: str, frames_nhwc: np.ndarray, instructions: list[str],
                  size: int, steps: int | None = None) -> Grid:
    """Mean |edit - source| per (s_T, s_I) for one movie mode ("teacher" or "student") of a weights folder."""
    import torch

    from vedit_cli.config import ModelConfig
    from vedit_cli.editor import create_editor
    from vedit_cli.pipeline.frames import frames_to_tensor, tensor_to_frames
    from vedit_cli.settings import resolve_run

    frames = frames_to_tensor(list(frames_nhwc))
    distances = np.zeros((len(TEXT_SCALES), len(IMAGE_SCALES)))
    for row, s_text in enumerate(TEXT_SCALES):
        for column, s_image in enumerate(IMAGE_SCALES):
            model = ModelConfig(backend="movie", movie_mode=mode, steps=steps, guidance_scale=s_text,
                                image_guidance_scale=s_image, size=size, device="cpu", dtype="float32",
                                weights_dir=Path(weights_dir), allow_download=False)
            editor = create_editor(resolve_run(model))
            total = []
            for instruction in instructions:
                editor.prepare(instruction)
                with torch.inference_mode():
                    edited = np.stack(tensor_to_frames(editor.edit(frames)))
                total.append(np.abs(edited.astype(np.float64) - frames_nhwc.astype(np.float64)).mean())
            distances[row, column] = float(np.mean(total))
    return Grid(label, distances)


def agreement(teacher: Grid, student: Grid) -> dict:
    """How the student's grid follows the teacher's: its range as a fraction of the teacher's, and the rank
    correlation (Spearman) of the 9 cells."""
    def ranks(values):
        return np.argsort(np.argsort(values.ravel())).astype(float)

    a, b = ranks(teacher.distances), ranks(student.distances)
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() and b.std() else float("nan")
    return {"range_fraction": student.range / teacher.range if teacher.range else float("nan"),
            "spearman": correlation}


def grid_table(grids: list[Grid]) -> str:
    header = "| model | " + " | ".join(f"s_T {t:g}, s_I {i:g}" for t in TEXT_SCALES for i in IMAGE_SCALES) + " | range |"
    lines = [header, "|---|" + "---:|" * (len(TEXT_SCALES) * len(IMAGE_SCALES) + 1)]
    for grid in grids:
        cells = " | ".join(f"{value:.1f}" for value in grid.distances.ravel())
        lines.append(f"| {grid.label} | {cells} | {grid.range:.1f} |")
    return "\n".join(lines)
