"""The MoViE (arXiv 2412.06578) student's weights: `<weights_dir>/movie-student/`, small files on top of the
teacher's UNet.

Layout (written by the distillation command, read here):
  guidance_embedding.safetensors   required: the (s_I, s_T) embedding, its config in the metadata
  unet_delta.safetensors           optional: fine-tuned minus teacher UNet weights, added to the teacher's
  unet/                            optional instead of the delta: a full diffusers UNet folder (safetensors)
"""

from __future__ import annotations

from pathlib import Path

import torch

from vedit_cli.config import TrainedSchedule
from vedit_cli.errors import WeightsIntegrityError, WeightsMissingError
from vedit_cli.models import guidance_embedding

STUDENT_NAME = "movie-student"
EMBEDDING_FILE = "guidance_embedding.safetensors"
DELTA_FILE = "unet_delta.safetensors"


def student_dir(weights_dir: Path) -> Path:
    return Path(weights_dir) / STUDENT_NAME


def student_available(weights_dir: Path) -> bool:
    return (student_dir(weights_dir) / EMBEDDING_FILE).is_file()


def resolve_mode(movie_mode: str, weights_dir: Path) -> str:
    """auto -> student when its weights are present, else teacher; an explicit student needs its weights."""
    if movie_mode == "teacher":
        return "teacher"
    if student_available(weights_dir):
        return "student"
    if movie_mode == "student":
        raise WeightsMissingError(
            f"--movie-mode student needs {student_dir(weights_dir) / EMBEDDING_FILE}, which is absent; "
            "train the student first, or run --movie-mode teacher"
        )
    return "teacher"


def trained_schedule(weights_dir: Path) -> TrainedSchedule:
    """The step count and timestep spacing the student was distilled for, from its embedding's metadata;
    students saved without them are MoViE's one-step recipe (1 step, trailing: from pure noise)."""
    from safetensors import safe_open

    with safe_open(str(student_dir(weights_dir) / EMBEDDING_FILE), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return TrainedSchedule(steps=int(metadata.get("trained_steps", 1)),
                           spacing=metadata.get("timestep_spacing", "trailing"),
                           prediction_type=metadata.get("prediction_type", "epsilon"))


def apply_unet_delta(unet, delta_path: Path):
    """Add a safetensors delta (fine-tuned minus teacher) to the UNet's weights, refusing unknown keys."""
    from safetensors.torch import load_file

    delta = load_file(str(delta_path))
    state = unet.state_dict()
    unknown = sorted(set(delta) - set(state))
    if unknown:
        raise WeightsIntegrityError(f"{delta_path} has weights this UNet lacks (e.g. {unknown[0]}); re-export it")
    with torch.no_grad():
        for name, change in delta.items():
            state[name].add_(change.to(device=state[name].device, dtype=state[name].dtype))
    return unet


def load_student_unet(teacher_unet, weights_dir: Path, dtype: torch.dtype):
    """The student UNet: the teacher's (or the folder's full UNet), plus delta, plus the guidance embedding."""
    from diffusers import UNet2DConditionModel

    from vedit_cli.backends.movie.loading import load_model

    folder = student_dir(weights_dir)
    unet = teacher_unet
    if (folder / "unet").is_dir():
        unet = load_model(UNet2DConditionModel, folder, "unet", STUDENT_NAME, weights_dir, dtype)
    if (folder / DELTA_FILE).is_file():
        apply_unet_delta(unet, folder / DELTA_FILE)
    embedding = guidance_embedding.load(folder / EMBEDDING_FILE, guidance_embedding.unet_time_embed_dim(unet))
    guidance_embedding.attach(unet, embedding.to(device=unet.device, dtype=dtype))
    return unet
