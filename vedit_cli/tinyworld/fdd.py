"""EVE's alignment LoRA in the tiny world (issue 16): Factorized Diffusion Distillation by `vedit train eve-lora`'s
recipe on the world's eve stack (sd15 + controlnet-ip2p + animatediff-motion-adapter), with the paper's two ablations
(Table 2: SDS only, adversarial only) from the same initialisation, iterations and seeds, and each teacher's
denoising loss on the student's held-out samples before and after training.

Data: runs of 8 consecutive frames of the training clips, each with every edit's instruction and output caption:
inputs only (the recipe refuses a ground-truth edit; none is offered). The full run is saved as <world>/eve-lora (what
`vedit edit --backend eve --weights-dir WORLD` applies); the ablations under <world>/_fdd/<variant>/eve-lora and
scored through views (<world>/_views/eve-<variant>) that link the stack beside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from vedit_cli.tinyworld.edits import EDITS

STACK = ("sd15", "controlnet-ip2p", "animatediff-motion-adapter", "taesd")
VARIANTS = ("fdd", "sds-only", "adversarial-only")
LOSS_TIMESTEPS = (250, 500, 750)  # the fixed t of the teachers' losses


@dataclass(frozen=True)
class FddSize:
    steps: int = 280
    # the paper: 1,000 of 1,500 (two thirds); here 240 of 280, chosen by the teachers' losses on the validation clip's
    # windows (README): 80 adversarial iterations after 160 raised both, 40 after 240 lowered both
    sds_only_steps: int = 240
    batch: int = 2  # windows per iteration
    lr: float = 5e-4
    lora_rank: int = 16
    window: int = 8  # the paper's training window
    k_steps: int = 3
    teacher_steps: int = 4  # the teachers' DDIM steps for the discriminators' real samples


class InstructedWindows:
    """Every (window of consecutive frames, edit) pair as FDD's data: the input frames, the edit's instruction and
    output caption. Never the edited frames."""

    def __init__(self, sequences: np.ndarray):
        self.sequences = sequences  # uint8 [S, T, H, W, 3]

    def __len__(self) -> int:
        return len(self.sequences) * len(EDITS)

    def load(self, index: int) -> dict:
        edit = EDITS[index % len(EDITS)]
        return {"frames": self.sequences[index // len(EDITS)], "instruction": edit.instruction,
                "caption": edit.caption}

    def describe(self, index: int) -> str:
        return f"window {index // len(EDITS)}, {EDITS[index % len(EDITS)].name}"


def variant_changes(variant: str, size: FddSize) -> dict:
    """EveLoraConfig fields an ablation changes: SDS only never starts the adversarial phase; adversarial only drops
    the SDS terms (lambda 0) and has the discriminators from the first iteration."""
    return {"fdd": {}, "sds-only": {"sds_only_steps": size.steps},
            "adversarial-only": {"sds_weight": 0.0, "sds_only_steps": 0}}[variant]


def lora_folder(world: Path, variant: str) -> Path:
    return Path(world) / "eve-lora" if variant == "fdd" else Path(world) / "_fdd" / variant / "eve-lora"


def fdd_config(world: Path, sequences: np.ndarray, variant: str, size: FddSize, resolution: int, work_dir: Path,
               steps: int | None = None):
    """The recipe's config for one variant: the same seed, data order, LoRA and heads initialisation for all."""
    from vedit_cli.train.config import EveLoraConfig, TrainerConfig

    world = Path(world)
    trainer = TrainerConfig(work_dir=Path(work_dir), max_steps=steps or size.steps, batch_size=size.batch,
                            learning_rate=size.lr, lr_scheduler="constant", lr_warmup_steps=0, checkpoint_every=40,
                            keep_checkpoints=1, resume=True, cpu=True, seed=0)
    config = EveLoraConfig(base=world / "sd15", controlnet=world / "controlnet-ip2p",
                           motion_adapter=world / "animatediff-motion-adapter", data=InstructedWindows(sequences),
                           output_dir=lora_folder(world, variant), trainer=trainer, resolution=resolution,
                           window_frames=size.window, k_steps=size.k_steps, lora_rank=size.lora_rank,
                           lora_alpha=size.lora_rank, sds_only_steps=size.sds_only_steps,
                           teacher_steps=size.teacher_steps, random_flip=False, overwrite=True)
    return dataclasses.replace(config, **variant_changes(variant, size))


def variant_view(world: Path, variant: str) -> Path:
    """The weights folder eve is scored from: the world itself for the full run; for an ablation
    <world>/_views/eve-<variant>, links to the stack and to the ablation's LoRA (made once)."""
    world = Path(world)
    if variant == "fdd":
        return world
    view = world / "_views" / f"eve-{variant}"
    view.mkdir(parents=True, exist_ok=True)
    targets = {name: world / name for name in STACK if (world / name).is_dir()}
    targets["eve-lora"] = lora_folder(world, variant)
    for name, target in targets.items():
        if not (view / name).exists():
            (view / name).symlink_to(target.resolve(), target_is_directory=True)
    return view


def load_lora(unet, lora_file: Path, scale: float) -> None:
    """A saved eve-lora file (diffusers' format: "unet."-prefixed peft keys, lora_B x alpha/rank) into the recipe's
    own LoRA layers (adapter "default")."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    tensors = load_file(str(lora_file))
    state = {key.removeprefix("unet."): (value / scale if ".lora_B." in key else value)
             for key, value in tensors.items()}
    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{lora_file}: {len(unexpected)} tensors match no LoRA layer (e.g. {unexpected[0]})")


def teacher_losses(config, windows, lora_file: Path | None, timesteps=LOSS_TIMESTEPS) -> dict:
    """Each teacher's denoising loss (mean squared epsilon error, its conditional prediction) on the student's
    k-step samples of `windows` (bin-centre timesteps, no draw), noised at each fixed t with one fixed noise per
    window: {"edit": float, "video": float}. lora_file None: the student before training (LoRA B = 0: plug-and-play
    sampled in k steps)."""
    import torch

    from vedit_cli.train.recipes.eve_lora import EveLoraRecipe, fixed_timesteps

    config = dataclasses.replace(config, data=windows, edit_text_scale=1.0, video_text_scale=1.0)
    recipe = EveLoraRecipe(config)
    recipe.setup(SimpleNamespace(mixed_precision="no", device=torch.device("cpu")))
    model = recipe.model.eval()
    if lora_file is not None:
        load_lora(model.unet, lora_file, config.lora_alpha / config.lora_rank)
    totals = {"edit": [], "video": []}
    with torch.no_grad():
        for index in range(len(windows)):
            sample = recipe.prepare_sample(windows.load(index), index)
            batch = {**recipe.collate([sample]), "sample_seed": torch.tensor([index])}
            inputs = recipe.inputs(batch, fixed_timesteps(config.k_steps, recipe.sd.num_train_timesteps, 1))
            x0 = model.generate(inputs, inputs["timesteps"])
            noise = inputs["sds_noise"]
            for value in timesteps:
                t = torch.tensor([value])
                x_t = model.schedule.add_noise(x0, noise, t)
                for name, teacher in (("edit", model.edit_teacher), ("video", model.video_teacher)):
                    predicted = model.schedule.noise(teacher(x_t, t, inputs), t, x_t)
                    totals[name].append(float(((predicted - noise) ** 2).mean()))
    return {name: float(np.mean(values)) for name, values in totals.items()}
