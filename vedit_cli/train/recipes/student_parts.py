"""What every MoViE student stage shares: the frozen teacher (InstructPix2Pix UNet, VAE, text encoder, tokenizer),
its three-pass guided prediction, the guidance-scale draws, and the student folder's layout.

Latent conventions are InstructPix2Pix's (vedit_cli.backends.movie.sampling): image latents are the VAE's unscaled
mode; denoised latents are scaled by the VAE's scaling factor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from vedit_cli.errors import WeightsMissingError
from vedit_cli.train.recipes.pix2pix import BASE_FILES


def check_teacher(folder: Path) -> Path:
    """The teacher folder, or one WeightsMissingError line naming what is missing and what to pass."""
    folder = Path(folder)
    hint = ("pass the InstructPix2Pix folder the student distils (diffusers layout: `vedit download "
            "instruct-pix2pix`, then --teacher-dir ~/.cache/vedit/weights/instruct-pix2pix)")
    if not folder.is_dir():
        raise WeightsMissingError(f"teacher {folder} is not a local folder; {hint}")
    missing = [name for name in BASE_FILES if not (folder / name).is_file()]
    if missing:
        raise WeightsMissingError(f"teacher {folder} is incomplete (missing: {', '.join(missing)}); {hint}")
    return folder


class FrozenTeacher:
    """The InstructPix2Pix folder's parts, all frozen. `unet` predicts what its scheduler config says
    (epsilon for InstructPix2Pix; v_prediction where the teacher was trained so): the students' first two stages
    regress it and inherit its parameterisation."""

    def __init__(self, folder: Path):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.folder = check_teacher(folder)
        load = dict(use_safetensors=True, local_files_only=True)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(self.folder), subfolder="tokenizer", local_files_only=True)
        if len(self.tokenizer) <= 2:
            raise WeightsMissingError(f"teacher {self.folder}: tokenizer/ holds no usable vocabulary")
        try:
            self.unet = UNet2DConditionModel.from_pretrained(str(self.folder), subfolder="unet", **load)
            self.vae = AutoencoderKL.from_pretrained(str(self.folder), subfolder="vae", **load)
            self.text_encoder = CLIPTextModel.from_pretrained(str(self.folder), subfolder="text_encoder", **load)
        except (OSError, EnvironmentError) as error:
            raise WeightsMissingError(f"teacher {self.folder}: cannot load unet/, vae/ or text_encoder/ as "
                                      f"safetensors ({error})") from error
        if self.unet.config.in_channels != 8:
            raise WeightsMissingError(f"teacher {self.folder}: its UNet has {self.unet.config.in_channels} input "
                                      "channels; the student distils an InstructPix2Pix teacher (8)")
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False).eval()
        self.scheduler_config = json.loads((self.folder / "scheduler" / "scheduler_config.json").read_text())
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.scaling_factor = self.vae.config.scaling_factor
        self.null_text = None

    def to(self, device) -> "FrozenTeacher":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device)
        self.device = device
        empty = self.tokenizer("", max_length=self.tokenizer.model_max_length, padding="max_length",
                               truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            self.null_text = self.text_encoder(empty.to(device))[0]
        return self

    @torch.no_grad()
    def encode(self, batch: dict, random) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edited latents, scaled and sampled; image latents, unscaled mode; text embeddings) of a triplet batch."""
        edited = self.vae.encode(batch["edited"].to(self.device)).latent_dist
        shape = edited.mean.shape[1:]
        latents = (edited.mean + edited.std * random.randn(*shape).to(self.device)) * self.scaling_factor
        image_latents = self.vae.encode(batch["source"].to(self.device)).latent_dist.mode()
        text = self.text_encoder(batch["input_ids"].to(self.device))[0]
        return latents, image_latents, text

    @torch.no_grad()
    def text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.to(self.device))[0]

    @torch.no_grad()
    def guided(self, model_input: torch.Tensor, timesteps: torch.Tensor, image_latents: torch.Tensor,
               text: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """InstructPix2Pix's guided prediction (epsilon or v, as the teacher's) with per-sample scales [B, 2] =
        (s_I, s_T), one batched UNet call: eps(0,0) + s_I (eps(I,0) - eps(0,0)) + s_T (eps(I,T) - eps(I,0))."""
        return guided_prediction(self.unet, model_input, timesteps, image_latents, text, self.null_text, scales)


def guided_prediction(unet, model_input, timesteps, image_latents, text, null_text, scales) -> torch.Tensor:
    """The three-pass guidance of `unet` (any InstructPix2Pix-shaped UNet) with per-sample scales (s_I, s_T)."""
    batch = model_input.shape[0]
    null = null_text.expand(batch, -1, -1)
    images = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
    texts = torch.cat([text, null, null])
    inputs = torch.cat([torch.cat([model_input] * 3), images], dim=1)
    steps = timesteps.expand(batch) if timesteps.dim() == 0 else timesteps
    eps_text_image, eps_image, eps_none = unet(inputs, torch.cat([steps] * 3), texts).sample.chunk(3)
    s_image, s_text = scales[:, 0].view(-1, 1, 1, 1), scales[:, 1].view(-1, 1, 1, 1)
    return eps_none + s_image * (eps_image - eps_none) + s_text * (eps_text_image - eps_image)


def draw_scales(random, text_range: tuple[float, float], image_range: tuple[float, float]) -> torch.Tensor:
    """[B, 2] guidance scales (s_I, s_T), each uniform over its range, from the per-sample generators."""
    s_image = image_range[0] + (image_range[1] - image_range[0]) * random.rand()
    s_text = text_range[0] + (text_range[1] - text_range[0]) * random.rand()
    return torch.stack([s_image, s_text], dim=1)


def save_student(folder: Path, unet, embedding, trained_steps: int, spacing: str, prediction_type: str,
                 architecture: str) -> Path:
    """A `movie-student` folder (vedit_cli.backends.movie.student): unet/ (diffusers, safetensors) and
    guidance_embedding.safetensors with the schedule, parameterisation and architecture in its metadata.
    Written beside the target and renamed into place: a crash never leaves a half-written student."""
    from vedit_cli.backends.movie.student import EMBEDDING_FILE
    from vedit_cli.models import guidance_embedding

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    attached, unet.class_embedding = unet.class_embedding, None  # the embedding is saved on its own
    try:
        unet.save_pretrained(str(partial / "unet"), safe_serialization=True)
    finally:
        unet.class_embedding = attached
    guidance_embedding.save(embedding, partial / EMBEDDING_FILE, trained_steps=trained_steps,
                            timestep_spacing=spacing, prediction_type=prediction_type, architecture=architecture)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def load_student(folder: Path, device) -> tuple[torch.nn.Module, dict]:
    """(student UNet with its guidance embedding attached, the embedding file's metadata) of a student folder."""
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    from vedit_cli.backends.movie.student import EMBEDDING_FILE
    from vedit_cli.models import guidance_embedding

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", use_safetensors=True,
                                                local_files_only=True)
    embedding = guidance_embedding.load(folder / EMBEDDING_FILE, guidance_embedding.unet_time_embed_dim(unet))
    guidance_embedding.attach(unet, embedding)
    with safe_open(str(folder / EMBEDDING_FILE), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return unet.to(device), metadata


def euler_scheduler(scheduler_config: dict, spacing: str):
    """The deterministic counterpart of the teacher's scheduler (as `vedit edit` samples it) with `spacing`."""
    import diffusers

    from vedit_cli.backends.movie.loading import DETERMINISTIC_SCHEDULER

    name = scheduler_config.get("_class_name", "EulerDiscreteScheduler")
    scheduler_class = getattr(diffusers, DETERMINISTIC_SCHEDULER.get(name, name))
    return scheduler_class.from_config(scheduler_config, timestep_spacing=spacing)
