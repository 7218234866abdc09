"""EVE's alignment LoRA trained by Factorized Diffusion Distillation (Singer et al., arXiv 2403.09334, sec. 3.2-3.3):
`train_eve_lora(config)`, the `vedit train eve-lora` command.

Two frozen adapters stacked on one frozen backbone (SD1.5 + the ip2p ControlNet edit adapter + the AnimateDiff video
adapter, the eve backend's stack) are aligned by LoRA weights on the backbone, without supervised video-editing data.
Each iteration (one `loss()` call, one optimizer step over LoRA and discriminator heads):

1. The student (backbone + ControlNet + AnimateDiff + LoRA) edits a window of the input clip from pure noise in k DDIM
   steps, keeping the autograd graph through all of them (`StudentSampler`). K-bin sampling (sec. 3.3.1): the T
   training timesteps are cut into k equal bins; the first step runs at t = T-1 on pure noise (eve samples with
   trailing spacing, which starts there), each later step at a timestep drawn uniformly from its bin, highest bin
   first (`kbin_timesteps`). DDIM (eta 0) on the base's stored schedule (its scheduler_config read by
   DDIMScheduler.from_config: betas, prediction type, final alpha); the last step lands on the schedule's final alpha.
2. SDS (eq. 1): the student's x0' is noised at one t ~ U[sds_timestep_range] with one noise draw, shared by both
   teachers. The edit teacher psi = backbone + ControlNet, frame by frame (temporal layers bypassed, eve's
   `motion_bypassed`); the video teacher rho = backbone + AnimateDiff, no ControlNet. Both are the student's own
   modules with the LoRA switched off (`teacher_mode`): no second copy of any weight. Each gives
   L_SDS = 0.5 * mean((x0' - sg(x0' - c(t) (eps_teacher - eps)))^2), whose gradient is c(t) (eps_teacher - eps) / N.
   c(t) (`sds_weighting`): "sds" w(t) = 1 - alpha_bar_t (DreamFusion), "dmd" DMD's (Yin et al., arXiv 2311.18828)
   (x0' - x0_teacher) / mean|x0' - x0_teacher| per sample, "uniform" 1. Teachers use text guidance
   (edit_text_scale, video_text_scale; the unconditional branch is the empty caption and instruction, the input
   frames still hinting the ControlNet, as eve's sampler does).
3. Adversarial terms after `sds_only_steps` (the paper: 1,000 of 1,500): real samples are the teachers' own DDIM
   generations from noise (teacher_steps, trailing spacing): the edit teacher's per-frame edit of the same window
   (for D_e) and the video teacher's text-to-video sample of the caption (for D_v). Both are noised at
   t ~ U[0, discriminator_max_timestep) before their features are read (as ADD/LADD and movie-student do).
   Discriminators reuse `discriminator.TeacherFeatureDiscriminator` (frozen features, trainable heads, hinge loss):
   D_e's features: the frozen edit teacher's encoder (backbone down blocks + mid block, temporal layers bypassed, per
   frame) on the output frame with the caption, each feature map plus the ControlNet's residual for that skip, so
   the input frame and the instruction enter through the frozen edit adapter; one head per map. D_v's features: the
   frozen video teacher's encoder (backbone + temporal layers, the caption) per window; its heads add a per-pixel
   temporal layer (a 1-D convolution over frames, residual) before the logit, the paper's "single temporal attention
   layer applied per pixel" as a convolution. Logits are averaged over frames: one per sample.
   L_G = alpha (L_G-Edit + lambda L_SDS-Edit) + beta (L_G-Video + lambda L_SDS-Video),
   L_D = alpha L_D-Edit + beta L_D-Video; the generator's hinge term is -D(x0') (ADD's; the paper's
   -max(0, 1 + D) reads as its typesetting of the same hinge generator loss).
   One backward trains both, as movie-student's one-step stage (`student_stages.StudentWithHeads`): L_G reads the
   heads detached (functional_call), L_D reads the student's latents detached and the real features under no_grad,
   so L_G's gradient reaches only the LoRA and L_D's only the heads. Before the adversarial phase the heads join the
   graph with weight 0 (DDP needs every parameter used).

Choices (the paper is silent): LoRA rank 16, alpha 16 on the backbone's attention projections to_q/to_k/to_v/to_out.0
(spatial self- and cross-attention; never the AnimateDiff temporal attention, never the ControlNet), saved in
diffusers' LoRA format (peft keys, "unet." prefix) which eve's `attach_lora` loads onto its UNetMotionModel (and
which also fits a plain SD1.5 UNet: the spatial layer names are the same). The student generates with one conditional
pass (student_text_scale 1: backpropagating through CFG's second pass doubles activation memory). Caption dropout 0.
No frame-0 anchor in training: eve's inference anchors each window on the edit adapter's frame-0 edit, but training
windows are the student's own frames (`EveLoraConfig.anchor_first_frame`). Windows of `window_frames` consecutive
frames (the paper: 8), the same consecutive frames eve's windows see. One optimizer and learning rate for LoRA and
heads (the trainer's). EVE's backbone (Emu) was trained with zero-terminal SNR; SD1.5's schedule is used as stored.
The frozen weights are those given: the paper's teachers are Emu Edit / Emu Video adapters, here ip2p ControlNet and
AnimateDiff v1-5-2. Discriminator features (`discriminator_features`): "teacher" (the default) is the frozen
backbone's encoder above, at every scale: no download, it sees latents (no decode through the VAE). "dinov2" is the
paper's DINO (ADD's discriminator): frozen DINOv2 (`dinov2`, registry entry dinov2-base, `vedit download
dinov2-base`) on the frames decoded by the VAE (the student's with their graph), clean (not noised), with small
trainable token heads; D_e conditioned on the input frame's DINOv2 CLS token, D_v mixing each token over the window's
frames (dino_discriminator.py). Both discriminators share one DINOv2 pass per sample set.

Data: inputs only, never an edit: (input clip window, instruction, output caption). `config.data` is a clip, a folder
of clips or a CSV/JSONL manifest (column `input`, optionally `instruction` and `caption`, paths relative to it), or a
sample source (`__len__`, `load(i) -> {"frames": uint8 [T, H, W, 3], "instruction": str, "caption": str}`,
`describe(i)`). Without a language model to write instructions per clip, write ONE table (`config.instructions`,
`--instructions table.csv` with columns instruction,caption) and it is applied to every clip: e.g.

    instruction,caption
    make it winter,a snowy street at dusk
    turn it into a watercolor painting,a watercolor painting of a street

crossed with every clip of `--videos` (a caption left empty becomes the instruction, as `vedit edit` without
--caption). A sample or manifest with an edited-output field (`edited`, `edited_frames`, `edited_image`, `output`,
`target`) is refused with one line: FDD must never read ground-truth edits. Clip windows start every
`window_frames` frames (non-overlapping); the training window is `window_frames` consecutive frames.

Output: `<output_dir>/pytorch_lora_weights.safetensors` (written under `.partial`, then renamed): the registry entry
`eve-lora`, which `vedit edit --backend eve --weights-dir W` applies from W/eve-lora ("alignment LoRA x<scale>").

Real scale (the paper, sec. 4.0.4): 1,500 iterations, global batch 64, fixed lr 1e-5 without warm-up, the last 500
with discriminators, 8-frame clips at 512x512. Here: EveLoraConfig(resolution=512, window_frames=8, k_steps=3,
trainer=TrainerConfig(max_steps=1500, batch_size=1, learning_rate=1e-5, mixed_precision="bf16",
gradient_checkpointing=True)) under `accelerate launch` on 8 GPUs with --gradient-accumulation-steps 8 (= 64).
GPU memory, an ESTIMATE (counted on the meta device, not measured on a GPU): frozen weights in bf16 ~3.8 GB
(UNetMotionModel 1,316 M parameters = SD1.5 UNet + AnimateDiff v1-5-2, ControlNet 361 M, text encoder 123 M, VAE
84 M); trainable LoRA 3.2 M (rank 16) and heads 114 M (D_e 49 M, D_v 65 M) with float32 weights, gradients and AdamW
states ~1.9 GB. Activations, from the tensors autograd saves (torch saved_tensors_hooks around a meta-device bf16
forward of the real-size stack, 8 frames at 64x64 latents, each storage counted once, weights not counted, and the
attention-probability maps left out: flash / memory-efficient attention does not keep them; the math kernel would
add ~30 GiB a step): one student step (UNetMotionModel + ControlNet) ~14.8 GiB, so k = 3 ~44 GiB; with
--gradient-checkpointing ~6.6 GiB a step, ~20 GiB for k = 3; the discriminators' fake-feature passes (the backbone
never checkpointed there: `teacher_mode`) ~9-11 GiB. Teacher passes and real samples keep no graph. About 60-65 GB
a GPU at batch 1 without checkpointing (an 80 GB card) and ~35-40 GB with it (a 40 GB card is tight; 80 GB is
comfortable). If it does not fit: --window-frames 4 halves the activations, --k-steps 2 saves a third of them.
Time, also an estimate: torch's FlopCounterMode on the meta-device stack counts 1.11 TFLOP per 512x512 frame for
UNetMotionModel and 0.28 for the ControlNet, ~11 TFLOP per 8-frame pass of the full stack; an SDS iteration is ~16
pass-equivalents per sample (3 student steps forward, twice that backward, once more recomputed; 2 teachers x CFG),
an adversarial one ~60 (plus 2 teachers x 10 DDIM steps x CFG for the real samples and the discriminator passes):
1,000 x 64 x ~180 TFLOP + 500 x 64 x ~670 TFLOP = ~3.3e19 FLOP, ~73 A100-hours at an assumed 40% of 312 bf16
TFLOP/s (--teacher-steps is the adversarial phase's main cost).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vedit_cli.backends.eve.components import (
    CONTROLNET_NAME,
    LORA_FILE,
    MOTION_ADAPTER_NAME,
    ddim_scheduler,
    motion_bypassed,
    motion_unet,
)
from vedit_cli.errors import ConfigError, TrainingDataError, WeightsMissingError
from vedit_cli.models.parameterisation import predicted_noise, predicted_original
from vedit_cli.train.config import EveLoraConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.discriminator import TeacherFeatureDiscriminator, hinge_losses
from vedit_cli.train.recipes.lcm_lora import (
    _drop_frozen_keys,
    _frozen_keys_are_not_missing,
    save_unet_lora,
)
from vedit_cli.train.recipes.motion_adapter import clip_frames, contiguous_temporal_norms, save_png
from vedit_cli.train.recipes.sd_parts import (
    LOAD,
    FrozenSD,
    check_sd_folder,
    image_tensor,
    load_sd_unet,
    placed,
    run_recipe,
)
from vedit_cli.train.trainer import Progress

GROUND_TRUTH_KEYS = ("edited", "edited_frames", "edited_image", "output", "target")
MOTION_MODULES = "motion_modules"
HEADS = ("edit_discriminator.heads.", "video_discriminator.heads.")
DINOV2_NAME = "dinov2-base"


def train_eve_lora(config: EveLoraConfig, progress: Progress | None = None) -> Path:
    """Check options, weights and data before anything is written, then train (or resume) and write the LoRA."""
    import dataclasses

    config.check()
    check_weights(config)
    data = open_edit_windows(config)
    if isinstance(data, EditWindows):
        (progress or (lambda event: None))({"event": "data", **data.summary()})
    elif len(data):  # a source's samples are checked again as they are prepared
        refuse_ground_truth(data.load(0).keys(), "the training data's first sample")
    return run_recipe(dataclasses.replace(config, data=data), EveLoraRecipe, LORA_FILE, progress)


# -- weights ---------------------------------------------------------------------------------------------------------

def check_weights(config: EveLoraConfig) -> None:
    check_sd_folder(config.base)
    adapter_folder(config.controlnet, CONTROLNET_NAME, "--controlnet-dir", "edit adapter (ControlNet)")
    adapter_folder(config.motion_adapter, MOTION_ADAPTER_NAME, "--motion-adapter-dir", "video adapter (AnimateDiff)")
    if config.discriminator_features == "dinov2":
        adapter_folder(config.dinov2, DINOV2_NAME, "--dinov2-dir", "discriminator features (DINOv2)")


def adapter_folder(path: Path, entry: str, flag: str, what: str) -> Path:
    """The adapter folder, or one WeightsMissingError line naming what is missing and how to get it."""
    from vedit_cli.weights.registry import REGISTRY

    path = Path(path)
    missing = [name for name in REGISTRY[entry].all_required_files() if not (path / name).is_file()]
    if missing:
        raise WeightsMissingError(f"{what} {path} is not a complete folder (missing: {', '.join(missing)}); "
                                  f"e.g. `vedit download {entry}`, then {flag} WEIGHTS/{entry}")
    return path


def load_adapters(config: EveLoraConfig):
    """(ControlNetModel, MotionAdapter) from their folders, safetensors only."""
    from diffusers import ControlNetModel, MotionAdapter

    try:
        return (ControlNetModel.from_pretrained(str(config.controlnet), **LOAD),
                MotionAdapter.from_pretrained(str(config.motion_adapter), **LOAD))
    except OSError as error:
        raise WeightsMissingError(f"cannot load the adapters as safetensors ({error})") from error


# -- data ------------------------------------------------------------------------------------------------------------

def refuse_ground_truth(keys, where: str) -> None:
    """FDD never reads an edited output: a sample or table that offers one is an error, not a skip."""
    found = [key for key in keys if str(key).strip().lower() in GROUND_TRUTH_KEYS]
    if found:
        raise TrainingDataError(f"{where} holds ground-truth edits ({', '.join(map(str, found))}); eve-lora trains "
                                "without supervised edits (FDD) and never reads them: remove that field")


def manifest_rows(path: Path, where: str) -> list[dict]:
    from vedit_cli.manifest import read_manifest_rows

    rows = [row for _, row in read_manifest_rows(Path(path), TrainingDataError)]
    if not rows:
        raise TrainingDataError(f"{where} {path} has no rows")
    refuse_ground_truth(rows[0].keys(), f"{where} {path}")
    return rows


def instruction_table(path: Path) -> list[tuple[str, str]]:
    """(instruction, caption) rows of a CSV/JSONL table; an empty caption becomes the instruction."""
    rows = manifest_rows(path, "instruction table")
    if "instruction" not in rows[0]:
        raise TrainingDataError(f"instruction table {path} needs the columns instruction,caption")
    pairs = [(str(row["instruction"] or "").strip(), str(row.get("caption") or "").strip()) for row in rows]
    return [(instruction, caption or instruction) for instruction, caption in pairs if instruction]


def edit_rows(videos: Path, instructions: Path | None) -> list[tuple[Path, str, str]]:
    """(clip, instruction, caption) for every row: a manifest's own columns, or every clip x the instruction table."""
    from vedit_cli.train.data.clips import PATH_COLUMNS, open_clips

    videos = Path(videos)
    rows = manifest_rows(videos, "manifest") if videos.suffix.lower() in (".csv", ".jsonl", ".ndjson") else None
    if rows is not None and "instruction" in rows[0]:
        if instructions is not None:
            raise ConfigError(f"{videos} has an instruction column and --instructions was given: give them once")
        column = next((name for name in PATH_COLUMNS if name in rows[0]), None)
        if column is None:
            raise TrainingDataError(f"manifest {videos} needs an 'input' column naming each clip")
        triples = [(videos.parent / str(row[column]), str(row["instruction"] or "").strip(),
                    str(row.get("caption") or "").strip()) for row in rows]
        return [(clip, text, caption or text) for clip, text, caption in triples if text]
    if instructions is None:
        raise TrainingDataError(f"{videos} gives no instructions: pass --instructions TABLE.csv (columns "
                                "instruction,caption, applied to every clip) or a manifest with columns "
                                "input,instruction,caption")
    clips, table = open_clips(videos), instruction_table(instructions)
    if not clips:
        raise TrainingDataError(f"no clips found in {videos}: pass a clip, a folder of clips or a CSV/JSONL manifest "
                                "with an 'input' column")
    return [(clip, instruction, caption) for clip in clips for instruction, caption in table]


def open_edit_windows(config: EveLoraConfig):
    """config.data as a sample source: a path becomes EditWindows, a source is used as it is."""
    if isinstance(config.data, (str, Path)):
        return EditWindows(edit_rows(Path(config.data), config.instructions), config.window_frames)
    return config.data


class EditWindows:
    """Every window of `frames` consecutive frames (starting every `frames` frames) of every row's clip, with the
    row's instruction and caption: {"frames": uint8 [frames, H, W, 3], "instruction", "caption", "clip", "start"}."""

    def __init__(self, rows: list[tuple[Path, str, str]], frames: int):
        from vedit_cli.train.data.clips import ClipSegments

        if not rows:
            raise TrainingDataError("no (clip, instruction) pairs: check the clips and the instruction table")
        self.frames, self.rows, self.parts, segments = frames, [], [], {}
        for clip, instruction, caption in rows:
            if clip not in segments:
                segments[clip] = ClipSegments([clip], frames, 1, frames)
            if len(segments[clip]):
                self.rows.append((instruction, caption))
                self.parts.append(segments[clip])
        self.clips = len(segments)
        self.unreadable = sum(len(part.unreadable) for part in segments.values())
        self.too_short = sum(1 for part in segments.values() if not len(part) and not part.unreadable)
        self.offsets = [0, *np.cumsum([len(part) for part in self.parts]).tolist()]
        if not self.parts:
            raise TrainingDataError(f"none of the {self.clips} clip(s) has the {frames} frames a window needs "
                                    f"({self.unreadable} unreadable); lower --window-frames or add longer clips")

    def summary(self) -> dict:
        return {"clips": self.clips, "segments": len(self), "too_short": self.too_short,
                "unreadable": self.unreadable, "segment_frames": self.frames, "fps": None}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        row = bisect.bisect_right(self.offsets, index) - 1
        return row, index - self.offsets[row]

    def describe(self, index: int) -> str:
        row, local = self._locate(index)
        return f"{self.parts[row].describe(local)} ({self.rows[row][0]!r})"

    def load(self, index: int) -> dict:
        row, local = self._locate(index)
        instruction, caption = self.rows[row]
        return {**self.parts[row].load(local), "instruction": instruction, "caption": caption}


# -- K-bin timesteps and the DDIM schedule ----------------------------------------------------------------------------

def bin_edges(k: int, num_train_timesteps: int) -> list[int]:
    """k + 1 ascending edges cutting [0, T) into k equal bins (rounded)."""
    return [int(edge) for edge in np.linspace(0, num_train_timesteps, k + 1).round()]


def kbin_timesteps(random: SampleRandom, k: int, num_train_timesteps: int) -> torch.Tensor:
    """[B, k] descending timesteps, one per bin, highest bin first: the first step at T-1 (it runs on pure noise),
    step j >= 1 uniform in bin k-1-j (EVE sec. 3.3.1)."""
    edges = bin_edges(k, num_train_timesteps)
    first = torch.full((len(random.generators),), num_train_timesteps - 1, dtype=torch.long)
    columns = [first]
    for step in range(1, k):
        low, high = edges[k - 1 - step], edges[k - step]
        offset = (random.rand() * (high - low)).long().clamp(max=high - low - 1)
        columns.append(low + offset)
    return torch.stack(columns, dim=1)


def fixed_timesteps(k: int, num_train_timesteps: int, batch: int) -> torch.Tensor:
    """[B, k]: T-1, then each lower bin's centre (validation: no draw)."""
    edges = bin_edges(k, num_train_timesteps)
    values = [num_train_timesteps - 1] + [(edges[k - 1 - step] + edges[k - step]) // 2 for step in range(1, k)]
    return torch.tensor(values).expand(batch, k)


class DdimSchedule:
    """Differentiable DDIM (eta 0) with per-sample timesteps on the base's stored schedule."""

    def __init__(self, scheduler_config: dict):
        scheduler = ddim_scheduler(dict(scheduler_config))
        self.prediction_type = scheduler.config.prediction_type
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.final_alpha_cumprod = torch.as_tensor(scheduler.final_alpha_cumprod).float()
        self.trailing = ddim_scheduler(dict(scheduler_config), "trailing")  # the teachers' samplers

    def to(self, device) -> DdimSchedule:
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        self.final_alpha_cumprod = self.final_alpha_cumprod.to(device)
        return self

    def _terms(self):
        return self.alphas_cumprod.sqrt(), (1 - self.alphas_cumprod).sqrt()

    def noise(self, output, timesteps, sample) -> torch.Tensor:
        return predicted_noise(output, timesteps, sample, self.prediction_type, *self._terms())

    def original(self, output, timesteps, sample) -> torch.Tensor:
        return predicted_original(output, timesteps, sample, self.prediction_type, *self._terms())

    def _alpha(self, timesteps, ndim: int) -> torch.Tensor:
        return self.alphas_cumprod[timesteps].reshape(-1, *([1] * (ndim - 1)))

    def add_noise(self, x0, noise, timesteps) -> torch.Tensor:
        alpha = self._alpha(timesteps, x0.ndim)
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise

    def step(self, output, timesteps, sample, next_timesteps: torch.Tensor | None) -> torch.Tensor:
        """x_t -> x_next (next_timesteps None: the schedule's final alpha, DDIM's last step)."""
        x0, noise = self.original(output, timesteps, sample), self.noise(output, timesteps, sample)
        if next_timesteps is None:
            alpha = self.final_alpha_cumprod.reshape([1] * sample.ndim)
        else:
            alpha = self._alpha(next_timesteps, sample.ndim)
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise

    def teacher_timesteps(self, steps: int) -> torch.Tensor:
        self.trailing.set_timesteps(steps)
        return self.trailing.timesteps.clone()


def c_of_t(name: str, schedule: DdimSchedule, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """The SDS weighting on the noise residual: "sds" 1 - alpha_bar_t (DreamFusion), "uniform" 1."""
    if name == "sds":
        return 1 - schedule._alpha(timesteps, ndim)
    return torch.ones([1] * ndim, device=timesteps.device)


def sds_loss(x0: torch.Tensor, output: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor,
             timesteps: torch.Tensor, schedule: DdimSchedule, weighting: str) -> torch.Tensor:
    """[B] 0.5 * mean((x0 - sg(x0 - g))^2): its gradient is g / N with g = c(t) (eps_teacher - eps) (or DMD's)."""
    with torch.no_grad():
        if weighting == "dmd":
            difference = x0.detach().float() - schedule.original(output, timesteps, x_t)
            scale = difference.abs().flatten(1).mean(dim=1).clamp_min(1e-8)
            gradient = difference / scale.reshape(-1, *([1] * (x0.ndim - 1)))
        else:
            gradient = c_of_t(weighting, schedule, timesteps, x0.ndim) * (
                schedule.noise(output, timesteps, x_t) - noise)
        target = x0.detach().float() - gradient
    return 0.5 * ((x0.float() - target) ** 2).flatten(1).mean(dim=1)


# -- the stack's passes ----------------------------------------------------------------------------------------------

@contextmanager
def teacher_mode(unet: nn.Module) -> Iterator[None]:
    """The frozen backbone + adapters: every LoRA layer off, gradient checkpointing off (a checkpointed pass would be
    recomputed in backward with the LoRA back on). requires_grad is never touched (peft's disable_adapters would)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    checkpointed = [m for m in unet.modules() if getattr(m, "gradient_checkpointing", False)]
    states = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    for module in checkpointed:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer, state in zip(layers, states):
            layer._disable_adapters = state
        for module in checkpointed:
            module.gradient_checkpointing = True


def per_frame(tensor: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, ...] -> [B * T, ...], batch-major like latents flattened for the spatial layers."""
    return tensor.repeat_interleave(frames, dim=0)


def frames_first(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, T, h, w] -> [B * T, C, h, w]."""
    return latents.transpose(1, 2).flatten(0, 1)


def edit_stack_output(unet, controlnet, latents, timesteps, caption, instruction, hints, scale: float):
    """The backbone + ControlNet (+ whatever temporal layers are active) on videos [B, C, T, h, w]: the ControlNet
    reads every frame with the instruction and its input frame, the backbone the caption (eve's predict_noise)."""
    frames = latents.shape[2]
    dtype = controlnet.dtype
    down, mid = controlnet(frames_first(latents).to(dtype), per_frame(timesteps, frames),
                           encoder_hidden_states=per_frame(instruction, frames).to(dtype),
                           controlnet_cond=hints.flatten(0, 1).to(dtype), conditioning_scale=scale, return_dict=False)
    return unet(latents.to(dtype), timesteps, encoder_hidden_states=per_frame(caption, frames).to(dtype),
                down_block_additional_residuals=down, mid_block_additional_residual=mid).sample.float()


def video_stack_output(unet, latents, timesteps, caption):
    """The backbone + AnimateDiff (no ControlNet) on videos [B, C, T, h, w] with the caption."""
    dtype = unet.dtype
    return unet(latents.to(dtype), timesteps,
                encoder_hidden_states=per_frame(caption, latents.shape[2]).to(dtype)).sample.float()


def guided(run, scale: float, latents, timesteps, cond: tuple, uncond: tuple) -> torch.Tensor:
    """Classifier-free guidance over one doubled batch; scale 1: the conditional pass alone."""
    if scale == 1.0:
        return run(latents, timesteps, *cond)
    doubled = [torch.cat([u, c]) for u, c in zip(uncond, cond)]
    out = run(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), *doubled)
    unconditional, conditional = out.chunk(2)
    return unconditional + scale * (conditional - unconditional)


def encoder_features(unet, flat: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                     frames: int) -> tuple[list[torch.Tensor], list[int]]:
    """The UNetMotionModel encoder's map after every down block and after the mid block ([B*T, ...] inputs, text
    per frame, one timestep per video), and the index of each down block's output among the skip residuals."""
    dtype = unet.dtype
    embedding = per_frame(unet.time_embedding(unet.time_proj(timesteps).to(dtype)), frames)
    hidden = unet.conv_in(flat.to(dtype))
    text = text.to(dtype)
    features, ends, count = [], [], 1
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, residuals = block(hidden_states=hidden, temb=embedding, encoder_hidden_states=text,
                                      num_frames=frames)
        else:
            hidden, residuals = block(hidden_states=hidden, temb=embedding, num_frames=frames)
        count += len(residuals)
        features.append(hidden)
        ends.append(count - 1)
    if hasattr(unet.mid_block, MOTION_MODULES):
        hidden = unet.mid_block(hidden, embedding, encoder_hidden_states=text, num_frames=frames)
    else:
        hidden = unet.mid_block(hidden, embedding, encoder_hidden_states=text)
    return features + [hidden], ends


# -- discriminators --------------------------------------------------------------------------------------------------

class EditDiscriminator(TeacherFeatureDiscriminator):
    """D_e: the frozen edit teacher's encoder, per frame, on (output frame, caption) with the ControlNet's residuals
    of (input frame, instruction) added to each map; TeacherFeatureDiscriminator's heads, one per map."""

    def __init__(self, unet, controlnet, controlnet_scale: float):
        super().__init__(unet)
        object.__setattr__(self, "controlnet", controlnet)  # frozen, shared: not a submodule of the heads
        self.controlnet_scale = controlnet_scale

    def features(self, latents, hints, caption, instruction, timesteps) -> list[torch.Tensor]:
        """latents [N, C, h, w] (frames), hints [N, 3, H, W], texts [N, L, D], timesteps [N]."""
        unet, controlnet = self.teacher, self.controlnet
        with teacher_mode(unet), motion_bypassed(unet):
            dtype = controlnet.dtype
            down, mid = controlnet(latents.to(dtype), timesteps, encoder_hidden_states=instruction.to(dtype),
                                   controlnet_cond=hints.to(dtype), conditioning_scale=self.controlnet_scale,
                                   return_dict=False)
            features, ends = encoder_features(unet, latents, timesteps, caption, 1)
        return [feature + down[end] for feature, end in zip(features, ends)] + [features[-1] + mid]


class TemporalMixing(nn.Module):
    """A per-pixel temporal layer over [B*T, C, h, w] maps: x + Conv1d over the T frames of each pixel."""

    def __init__(self, channels: int, frames: int):
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.frames
        sequences = x.reshape(n // t, t, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, t)
        mixed = self.conv(sequences).reshape(n // t, h, w, c, t).permute(0, 4, 3, 1, 2).reshape(n, c, h, w)
        return x + mixed


def video_head(channels: int, frames: int) -> nn.Module:
    groups = 8 if channels % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
                         TemporalMixing(channels, frames), nn.Conv2d(channels, 1, 1))


class VideoDiscriminator(TeacherFeatureDiscriminator):
    """D_v: the frozen video teacher's encoder (backbone + temporal layers, caption) per window; heads with a
    per-pixel temporal layer."""

    def __init__(self, unet, frames: int):
        super().__init__(unet)
        channels = list(unet.config.block_out_channels)
        self.heads = nn.ModuleList([video_head(c, frames) for c in channels + [channels[-1]]])

    def features(self, latents, caption, timesteps) -> list[torch.Tensor]:
        """latents [B, C, T, h, w], caption [B, L, D], timesteps [B]."""
        frames = latents.shape[2]
        with teacher_mode(self.teacher):
            features, _ = encoder_features(self.teacher, frames_first(latents), timesteps,
                                           per_frame(caption, frames), frames)
        return features


# -- the trained module ----------------------------------------------------------------------------------------------

class FddStudent(nn.Module):
    """The student's UNetMotionModel (LoRA trainable, the rest frozen), the frozen ControlNet and the two
    discriminators' heads. forward() runs one FDD iteration and returns per-sample terms; its state dict holds only
    the trainable tensors (the folders hold the rest)."""

    def __init__(self, unet, controlnet, schedule: DdimSchedule, config: EveLoraConfig, dino=None):
        super().__init__()
        self.unet, self.controlnet, self.schedule, self.config = unet, controlnet, schedule, config
        self.dino = dino  # dino_discriminator.DinoFeatures (frozen DINOv2 + VAE, no submodule) or None
        if dino is None:
            self.edit_discriminator = EditDiscriminator(unet, controlnet, config.controlnet_scale)
            self.video_discriminator = VideoDiscriminator(unet, config.window_frames)
        else:
            from vedit_cli.train.recipes.dino_discriminator import dino_discriminators

            self.edit_discriminator, self.video_discriminator = dino_discriminators(dino, config.window_frames)
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        self._frozen_keys = {key for key in self.state_dict() if key not in trainable}
        self.register_state_dict_post_hook(_drop_frozen_keys)
        self.register_load_state_dict_post_hook(_frozen_keys_are_not_missing)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()
        self.controlnet.enable_gradient_checkpointing()
        if self.dino is not None:  # the student's frames are decoded with their graph
            self.dino.vae.enable_gradient_checkpointing()

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.edit_discriminator.heads.parameters(), *self.video_discriminator.heads.parameters()]

    # 1. the student's k steps, with their graph
    def generate(self, inputs: dict, timesteps: torch.Tensor) -> torch.Tensor:
        """x0' [B, C, T, h, w] from inputs["noise"] through the k DDIM steps of `timesteps` [B, k]."""
        latents = inputs["noise"]
        k = timesteps.shape[1]
        for step in range(k):
            t = timesteps[:, step]
            output = self.student_output(latents, t, inputs)
            latents = self.schedule.step(output, t, latents, timesteps[:, step + 1] if step + 1 < k else None)
        return latents

    def student_output(self, latents, timesteps, inputs: dict) -> torch.Tensor:
        def run(x, t, caption, instruction, hints):
            return edit_stack_output(self.unet, self.controlnet, x, t, caption, instruction, hints,
                                     self.config.controlnet_scale)

        return guided(run, self.config.student_text_scale, latents, timesteps, self.conditions(inputs),
                      self.unconditions(inputs))

    @staticmethod
    def conditions(inputs: dict) -> tuple:
        return inputs["caption"], inputs["instruction"], inputs["hints"]

    @staticmethod
    def unconditions(inputs: dict) -> tuple:
        return inputs["null"], inputs["null"], inputs["hints"]

    # 2. the teachers
    @torch.no_grad()
    def edit_teacher(self, latents, timesteps, inputs: dict) -> torch.Tensor:
        """psi: backbone + ControlNet per frame (temporal layers bypassed), LoRA off, text guidance."""
        def run(x, t, caption, instruction, hints):
            return edit_stack_output(self.unet, self.controlnet, x, t, caption, instruction, hints,
                                     self.config.controlnet_scale)

        with teacher_mode(self.unet), motion_bypassed(self.unet):
            return guided(run, self.config.edit_text_scale, latents, timesteps, self.conditions(inputs),
                          self.unconditions(inputs))

    @torch.no_grad()
    def video_teacher(self, latents, timesteps, inputs: dict) -> torch.Tensor:
        """rho: backbone + AnimateDiff, no ControlNet, LoRA off, text guidance."""
        def run(x, t, caption):
            return video_stack_output(self.unet, x, t, caption)

        with teacher_mode(self.unet):
            return guided(run, self.config.video_text_scale, latents, timesteps, (inputs["caption"],),
                          (inputs["null"],))

    @torch.no_grad()
    def teacher_sample(self, teacher, noise: torch.Tensor, inputs: dict) -> torch.Tensor:
        """A teacher's DDIM sample from `noise` (trailing spacing, teacher_steps): the discriminators' real data."""
        steps = self.schedule.teacher_timesteps(self.config.teacher_steps).to(noise.device)
        latents = noise
        for index, t in enumerate(steps):
            t_batch = t.expand(len(noise))
            following = steps[index + 1].expand(len(noise)) if index + 1 < len(steps) else None
            latents = self.schedule.step(teacher(latents, t_batch, inputs), t_batch, latents, following)
        return latents

    # 3. the losses
    def forward(self, inputs: dict, adversarial: bool) -> dict[str, torch.Tensor]:
        """Per-sample "generator" (L_G: its gradient reaches only the LoRA) and "discriminator" (L_D: only the
        heads) terms, plus detached parts for the log."""
        c = self.config
        x0 = self.generate(inputs, inputs["timesteps"])
        sds = self.sds_terms(x0, inputs)
        generator = c.sds_weight * (c.alpha * sds["sds_edit"] + c.beta * sds["sds_video"])
        terms = {name: value.detach() for name, value in sds.items()}
        if adversarial:
            adversarial_terms = self.adversarial_terms(x0, inputs)
            generator = generator + c.alpha * adversarial_terms["g_edit"] + c.beta * adversarial_terms["g_video"]
            discriminator = c.alpha * adversarial_terms["d_edit"] + c.beta * adversarial_terms["d_video"]
            terms.update({name: value.detach() for name, value in adversarial_terms.items()})
        else:  # unused heads would stall DDP's gradient reduction: in the graph with weight 0
            discriminator = 0.0 * sum(p.sum() for p in self.head_parameters()).expand(len(x0))
        return {"generator": generator, "discriminator": discriminator, **terms}

    def sds_terms(self, x0: torch.Tensor, inputs: dict) -> dict[str, torch.Tensor]:
        t, noise = inputs["sds_timesteps"], inputs["sds_noise"]
        x_t = self.schedule.add_noise(x0.detach(), noise, t)
        weighting = self.config.sds_weighting
        return {"sds_edit": sds_loss(x0, self.edit_teacher(x_t, t, inputs), x_t, noise, t, self.schedule, weighting),
                "sds_video": sds_loss(x0, self.video_teacher(x_t, t, inputs), x_t, noise, t, self.schedule,
                                      weighting)}

    def adversarial_terms(self, x0: torch.Tensor, inputs: dict) -> dict[str, torch.Tensor]:
        edited = self.teacher_sample(self.edit_teacher, inputs["edit_noise"], inputs)
        generated = self.teacher_sample(self.video_teacher, inputs["video_noise"], inputs)
        if self.dino is not None:
            return self.dino_adversarial_terms(x0, edited, generated, inputs)
        t, noise = inputs["disc_timesteps"], inputs["disc_noise"]
        fake, real_edit, real_video = (self.schedule.add_noise(x, noise, t) for x in (x0, edited, generated))
        d_edit, g_edit = self.edit_hinge(real_edit, fake, inputs)
        d_video, g_video = self.video_hinge(real_video, fake, inputs)
        return {"g_edit": g_edit, "g_video": g_video, "d_edit": d_edit, "d_video": d_video}

    def dino_adversarial_terms(self, x0, edited, generated, inputs: dict) -> dict[str, torch.Tensor]:
        """The DINOv2 discriminators: clean samples (no noising, as ADD), each decoded and read by DINOv2 once for
        both discriminators, the student's with its graph; D_e's condition is the input frames' CLS tokens."""
        dino, frames = self.dino, x0.shape[2]
        fake = dino.latent_tokens(frames_first(x0))
        with torch.no_grad():
            real_edit, real_video = (dino.latent_tokens(frames_first(x)) for x in (edited, generated))
            input_tokens = dino.tokens(inputs["hints"].flatten(0, 1))
        edit, video = self.edit_discriminator, self.video_discriminator
        d_edit, g_edit = self._hinge(edit, lambda tokens: edit.features(tokens, input_tokens), real_edit, fake, frames)
        d_video, g_video = self._hinge(video, video.features, real_video, fake, frames)
        return {"g_edit": g_edit, "g_video": g_video, "d_edit": d_edit, "d_video": d_video}

    def edit_hinge(self, real, fake, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        disc, frames = self.edit_discriminator, real.shape[2]

        def features(latents):
            return disc.features(frames_first(latents), inputs["hints"].flatten(0, 1),
                                 per_frame(inputs["caption"], frames), per_frame(inputs["instruction"], frames),
                                 per_frame(inputs["disc_timesteps"], frames))

        return self._hinge(disc, features, real, fake, frames)

    def video_hinge(self, real, fake, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        disc = self.video_discriminator

        def features(latents):
            return disc.features(latents, inputs["caption"], inputs["disc_timesteps"])

        return self._hinge(disc, features, real, fake, real.shape[2])

    @staticmethod
    def _hinge(disc, features, real, fake, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (L_D, L_G): real features without a graph, the fake's detached for L_D, the heads detached
        for L_G (the one-step stage's pattern)."""
        with torch.no_grad():
            real_features = features(real)
        fake_features = features(fake)
        d_loss, g_loss = hinge_losses(disc.logits(real_features), disc.logits([f.detach() for f in fake_features]),
                                      disc.logits(fake_features, frozen_heads=True))
        return d_loss.reshape(-1, frames).mean(dim=1), g_loss.reshape(-1, frames).mean(dim=1)


# -- the recipe ------------------------------------------------------------------------------------------------------

def lora_targets(unet, suffixes: tuple[str, ...]) -> list[str]:
    """Full names of the backbone's layers ending in one of `suffixes`, never inside the temporal layers."""
    return [name for name, module in unet.named_modules()
            if MOTION_MODULES not in name and isinstance(module, (nn.Linear, nn.Conv2d))
            and any(name == suffix or name.endswith("." + suffix) for suffix in suffixes)]


def add_lora(unet, config: EveLoraConfig) -> None:
    from peft import LoraConfig

    targets = lora_targets(unet, tuple(config.lora_target_modules))
    if not targets:
        raise ConfigError(f"--lora-target-modules {','.join(config.lora_target_modules)} match no layer of the "
                          "backbone")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)  # lora_A's random init: the same for every run of the same seed
        unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=targets,
                                    lora_dropout=0.0))


def check_trainable(model: FddStudent) -> None:
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    strays = [name for name in trainable
              if not (name.startswith(HEADS) or (".lora_" in name and MOTION_MODULES not in name))]
    assert not strays, f"trainable parameters outside the LoRA and the discriminator heads: {strays[:3]}"
    assert any(".lora_" in name for name in trainable), "the LoRA has no trainable parameter"


def build_student(config: EveLoraConfig, sd: FrozenSD) -> FddStudent:
    controlnet, adapter = load_adapters(config)
    unet = motion_unet(load_sd_unet(sd.base), adapter)
    limit = unet.config.motion_max_seq_length
    if config.window_frames > limit:
        raise ConfigError(f"--window-frames {config.window_frames} is longer than the motion adapter's position "
                          f"table ({limit})")
    unet.requires_grad_(False)
    controlnet.requires_grad_(False).eval()
    contiguous_temporal_norms(unet)  # few-frame windows: torch's CPU GroupNorm backward crash (motion_adapter)
    add_lora(unet, config)
    schedule = DdimSchedule(sd.scheduler_config)
    low, high = config.sds_timestep_range
    if high >= schedule.num_train_timesteps or config.k_steps > schedule.num_train_timesteps:
        raise ConfigError(f"--sds-timestep-range and --k-steps must stay below the schedule's "
                          f"{schedule.num_train_timesteps} timesteps, got {low} {high} and {config.k_steps}")
    dino = None
    if config.discriminator_features == "dinov2":
        from vedit_cli.train.recipes.dino_discriminator import dino_features

        dino = dino_features(config.dinov2, sd.vae)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed + 1)  # the heads' init
        model = FddStudent(unet, controlnet, schedule, config, dino)
    check_trainable(model)
    return model


class EveLoraRecipe:
    """The trainer's recipe: model = FddStudent (LoRA + heads trainable); text encoder and VAE frozen."""

    def __init__(self, config: EveLoraConfig):
        config.check()
        check_weights(config)
        self.config, self.source = config, open_edit_windows(config)
        self.sd = FrozenSD(config.base)
        self.model = build_student(config, self.sd)
        self.last_terms: dict[str, torch.Tensor] = {}

    # data
    def prepare_sample(self, raw: dict, seed: int) -> dict:
        refuse_ground_truth(raw.keys(), "a training sample")
        rng = np.random.default_rng(seed)
        flip = self.config.random_flip and rng.random() < 0.5
        frames = clip_frames(raw.get("frames"), self.config.window_frames, rng)
        instruction = str(raw.get("instruction") or "").strip()
        if not instruction:
            raise BadSample("no instruction")
        caption = str(raw.get("caption") or "").strip() or instruction
        tensors = torch.stack([image_tensor(frame, self.config.resolution, flip) for frame in frames])
        return {"frames": ((tensors + 1) * 127.5).round().to(torch.uint8),  # exact: image_tensor's k/127.5 - 1
                "caption_ids": self.sd.token_ids(caption), "instruction_ids": self.sd.token_ids(instruction)}

    def collate(self, samples: list[dict]) -> dict:
        return {key: torch.stack([s[key] for s in samples]) for key in ("frames", "caption_ids", "instruction_ids")}

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)
        self.device = accelerator.device
        model = self.model
        for module in (model.unet, model.controlnet):
            module.to(self.device)
            for parameter in module.parameters():
                if not parameter.requires_grad:  # frozen weights in the mixed-precision dtype, LoRA float32
                    parameter.data = parameter.data.to(self.sd.dtype)
        if model.dino is not None:
            placed(model.dino.model, self.device, self.sd.dtype)
        model.schedule.to(self.device)

    # loss
    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        """[B] L_G + L_D of one FDD iteration; adversarial terms from step sds_only_steps on."""
        terms = model(self.inputs(batch), adversarial=step >= self.config.sds_only_steps)
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return terms["generator"] + terms["discriminator"]

    def latent_shape(self, frames: int) -> tuple[int, int, int, int]:
        factor = 2 ** (len(self.sd.vae.config.block_out_channels) - 1)
        size = self.config.resolution // factor
        return self.model.unet.config.in_channels, frames, size, size

    def inputs(self, batch: dict, timesteps: torch.Tensor | None = None) -> dict:
        """Conditions and every random draw of the iteration, per sample from its seed (always in this order)."""
        c, sd, device = self.config, self.sd, self.device
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < c.caption_dropout
        frames = batch["frames"].to(device).float() / 127.5 - 1.0  # [B, T, 3, H, W]
        shape = self.latent_shape(frames.shape[1])
        low, high = c.sds_timestep_range
        draws = {"noise": random.randn(*shape), "timesteps": kbin_timesteps(random, c.k_steps, sd.num_train_timesteps),
                 "sds_timesteps": low + random.randint(high - low + 1), "sds_noise": random.randn(*shape),
                 "disc_timesteps": random.randint(c.discriminator_max_timestep), "disc_noise": random.randn(*shape),
                 "edit_noise": random.randn(*shape), "video_noise": random.randn(*shape)}
        if timesteps is not None:
            draws["timesteps"] = timesteps
        caption = sd.text(batch["caption_ids"], drop)
        return {**{name: value.to(device) for name, value in draws.items()},
                "hints": (frames + 1.0) / 2.0,  # the ip2p ControlNet takes its hint in [0, 1]
                "caption": caption, "instruction": sd.text(batch["instruction_ids"], drop),
                "null": sd.null_text.float().expand_as(caption)}

    # validation and output
    def validate(self, model, step: int, folder: Path) -> None:
        """The first sample's input window over the student's k-step edit (bin centres, no draw), one PNG strip."""
        sample = self.prepare_sample(self.source.load(0), 0)
        batch = {**self.collate([sample]), "sample_seed": torch.tensor([0])}
        timesteps = fixed_timesteps(self.config.k_steps, self.sd.num_train_timesteps, 1)
        inputs = self.inputs(batch, timesteps)
        latents = model.generate(inputs, inputs["timesteps"])[0].transpose(0, 1)  # [T, C, h, w]
        vae = self.sd.vae
        edited = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float().clamp(-1, 1)
        rows = [inputs["hints"][0], (edited + 1) / 2]
        strip = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)  # [3, 2H, T*W]
        save_png(strip.permute(1, 2, 0).cpu().numpy(), Path(folder) / "000.png")

    def save(self, model) -> Path:
        """pytorch_lora_weights.safetensors (diffusers' LoRA format) under `<output>.partial`, then moved."""
        return save_unet_lora(model.unet, Path(self.config.output_dir), self.config.lora_alpha / self.config.lora_rank)
