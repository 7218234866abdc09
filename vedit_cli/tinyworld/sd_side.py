"""The tiny world's Stable Diffusion side: the text-to-image base (`sd15`), its LCM-LoRA (`lcm-lora-sdv1-5`), the
instruction ControlNet (`controlnet-ip2p`) and the AnimateDiff motion adapter (`animatediff-motion-adapter`), each
trained by its vedit recipe (vedit_cli.train.recipes) on the world's frames and sequences, with the shared VAE, TAESD
and text encoder, saved under the registry's names so `vedit edit --backend svdiff|eve --weights-dir WORLD` loads them.

The base is the teacher's UNet with 4 input channels (started from the teacher: text_to_image_unet), trained on
every training frame unedited ("a photo") and under every edit (its output caption); the ControlNet reads the
teacher's triplets; the motion adapter reads runs of consecutive frames (unedited and edited alike: a per-frame edit
keeps the motion). The base's scheduler is SD1.5's (PNDM over scaled_linear betas 0.00085..0.012, as the hub's),
and every backend reads it from the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vedit_cli.tinyworld.edits import EDITS, apply_uint8

IDENTITY_CAPTION = "a photo"
# The base learns v (SD2.x's parameterisation), as the teacher does (README "Tiny world"): at this size an epsilon
# base's clean-image estimate is a blur of the frame's colours already at t = 250 (600 steps from the teacher's
# UNet: every svdiff edit came out as a blue smear), and it starts from a v-predicting UNet. Every recipe and
# backend reads prediction_type from the stored scheduler config.
BASE_PREDICTION_TYPE = "v_prediction"
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)


@dataclass(frozen=True)
class SdSideSize:
    base_steps: int = 600
    base_batch: int = 32
    base_lr: float = 1e-3
    lcm_steps: int = 300
    lcm_batch: int = 16
    lcm_lr: float = 1e-3
    lora_rank: int = 16
    controlnet_steps: int = 300
    controlnet_batch: int = 32
    controlnet_lr: float = 1e-3
    motion_steps: int = 150
    motion_batch: int = 4  # sequences of `frames`
    motion_lr: float = 1e-3
    frames: int = 8
    memory_steps: int = 150
    memory_batch: int = 4  # segments of memory_segment frames (each frame is its own UNet call: keep segments short)
    memory_lr: float = 1e-3
    memory_segment: int = 8  # two clips of memory_clip: the memory is carried across a clip boundary
    memory_clip: int = 4


class FrameCaptions:
    """Every (training frame, unedited or edited) pair with its caption: the base's and the LCM-LoRA's data."""

    def __init__(self, frames_nhwc: np.ndarray):
        self.frames = frames_nhwc

    def __len__(self) -> int:
        return len(self.frames) * (len(EDITS) + 1)

    def load(self, index: int) -> dict:
        frame, choice = self.frames[index // (len(EDITS) + 1)], index % (len(EDITS) + 1)
        if choice == len(EDITS):
            return {"image": frame, "caption": IDENTITY_CAPTION}
        edit = EDITS[choice]
        return {"image": apply_uint8(edit, frame[None])[0], "caption": edit.caption}

    def describe(self, index: int) -> str:
        choice = index % (len(EDITS) + 1)
        return f"frame {index // (len(EDITS) + 1)}, {'unedited' if choice == len(EDITS) else EDITS[choice].name}"


class SequenceCaptions:
    """Every (training sequence, unedited or edited) pair with its caption: the motion adapter's data."""

    def __init__(self, sequences: np.ndarray):
        self.sequences = sequences  # uint8 [S, T, H, W, 3]

    def __len__(self) -> int:
        return len(self.sequences) * (len(EDITS) + 1)

    def load(self, index: int) -> dict:
        frames, choice = self.sequences[index // (len(EDITS) + 1)], index % (len(EDITS) + 1)
        if choice == len(EDITS):
            return {"frames": frames, "caption": IDENTITY_CAPTION}
        return {"frames": apply_uint8(EDITS[choice], frames), "caption": EDITS[choice].caption}

    def describe(self, index: int) -> str:
        return f"sequence {index // (len(EDITS) + 1)}, variant {index % (len(EDITS) + 1)}"


def save_sd_pipeline(folder: Path, unet, parts: Path) -> Path:
    """A diffusers Stable Diffusion folder: `unet` + the world's shared parts; SD1.5's scheduler config (PNDM, as the
    hub's folder) with the world's parameterisation (BASE_PREDICTION_TYPE)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from vedit_cli.tinyworld.components import save_world_pipeline

    scheduler = PNDMScheduler(**SD15_SCHEDULER, prediction_type=BASE_PREDICTION_TYPE)
    return save_world_pipeline(folder, StableDiffusionPipeline, unet, scheduler, parts)


def text_to_image_unet(teacher: Path):
    """The teacher's UNet with its 4 image-conditioning input channels dropped: the base's starting point.

    The teacher already denoises the world's frames under a text condition (it trains with the source image
    dropped 5% of the time), so the base starts from it and learns the captions; in the real world the order is the
    other way round (InstructPix2Pix is fine-tuned from SD1.5), which only saves this world's CPU minutes."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(teacher), subfolder="unet", use_safetensors=True)
    old = unet.conv_in
    new = torch.nn.Conv2d(4, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, :4])
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=4)
    return unet


def _trainer(size_steps: int, batch: int, lr: float, work_dir: Path, steps: int | None = None):
    from vedit_cli.train.config import TrainerConfig

    total = steps or size_steps
    return TrainerConfig(work_dir=work_dir, max_steps=total, batch_size=batch, learning_rate=lr, lr_scheduler="cosine",
                         lr_warmup_steps=max(1, total // 20), checkpoint_every=100, keep_checkpoints=1, resume=True,
                         cpu=True, seed=0)


def base_config(random_base: Path, frames_nhwc, output: Path, size: SdSideSize, resolution: int, work_dir: Path,
                steps: int | None = None):
    from vedit_cli.train.config import TextToImageConfig

    return TextToImageConfig(base=Path(random_base), data=FrameCaptions(frames_nhwc), output_dir=Path(output),
                             trainer=_trainer(size.base_steps, size.base_batch, size.base_lr, work_dir, steps),
                             resolution=resolution, overwrite=True)


def lcm_config(base: Path, frames_nhwc, output: Path, size: SdSideSize, resolution: int, work_dir: Path,
               steps: int | None = None):
    from vedit_cli.train.config import LcmLoraConfig

    return LcmLoraConfig(base=Path(base), data=FrameCaptions(frames_nhwc), output_dir=Path(output),
                         trainer=_trainer(size.lcm_steps, size.lcm_batch, size.lcm_lr, work_dir, steps),
                         resolution=resolution, lora_rank=size.lora_rank, lora_alpha=size.lora_rank, overwrite=True)


def controlnet_config(base: Path, frames_nhwc, output: Path, size: SdSideSize, resolution: int, work_dir: Path,
                      steps: int | None = None):
    from vedit_cli.tinyworld.teacher import FrameEditTriplets
    from vedit_cli.train.config import ControlNetConfig

    return ControlNetConfig(base=Path(base), data=FrameEditTriplets(frames_nhwc), output_dir=Path(output),
                            trainer=_trainer(size.controlnet_steps, size.controlnet_batch, size.controlnet_lr,
                                             work_dir, steps), resolution=resolution, overwrite=True)


def motion_config(base: Path, sequences, output: Path, size: SdSideSize, resolution: int, work_dir: Path,
                  steps: int | None = None):
    from vedit_cli.train.config import MotionAdapterConfig

    return MotionAdapterConfig(base=Path(base), data=SequenceCaptions(sequences), output_dir=Path(output),
                               trainer=_trainer(size.motion_steps, size.motion_batch, size.motion_lr, work_dir, steps),
                               resolution=resolution, frames=size.frames, overwrite=True)


def memory_config(base: Path, sequences, output: Path, size: SdSideSize, resolution: int, work_dir: Path,
                  steps: int | None = None):
    """SVDiff's memory on the base with the world's LCM-LoRA (beside the base) fused: what svdiff runs it with."""
    from vedit_cli.train.config import SvdiffMemoryConfig

    return SvdiffMemoryConfig(base=Path(base), data=SequenceCaptions(sequences), output_dir=Path(output),
                              trainer=_trainer(size.memory_steps, size.memory_batch, size.memory_lr, work_dir, steps),
                              resolution=resolution, lcm_lora=Path(base).parent / "lcm-lora-sdv1-5",
                              segment_frames=size.memory_segment, clip_frames=size.memory_clip, overwrite=True)


# component name -> (config builder, train function in vedit_cli.train.recipes, data: "frames" | sequence length field)
TRAINERS = {"sd15": (base_config, "text_to_image.train_text_to_image", "frames"),
            "lcm-lora-sdv1-5": (lcm_config, "lcm_lora.train_lcm_lora", "frames"),
            "controlnet-ip2p": (controlnet_config, "controlnet.train_controlnet", "frames"),
            "animatediff-motion-adapter": (motion_config, "motion_adapter.train_motion_adapter", "frames_per_sequence"),
            "svdiff-memory": (memory_config, "svdiff_memory.train_svdiff_memory", "memory_segment")}


def sequence_length(size: SdSideSize, data: str) -> int | None:
    """Frames per training sequence of a component's data (None: single frames)."""
    return {"frames": None, "frames_per_sequence": size.frames, "memory_segment": size.memory_segment}[data]


def run_trainer(component: str, config, progress=None) -> Path:
    import importlib

    module, function = TRAINERS[component][1].rsplit(".", 1)
    return getattr(importlib.import_module(f"vedit_cli.train.recipes.{module}"), function)(config, progress)
