"""MoViE's slimmer student UNet (Mobile-Pix2Pix, arXiv 2412.06578 Sec. 3.3): the InstructPix2Pix UNet with its
attention removed at the highest resolutions, initialised from the teacher wherever names and shapes match.

Architectures (the number of highest resolutions whose transformer blocks are removed, down and up):
- stock: the teacher's UNet, unchanged.
- no-top-attention: no attention at the highest resolution (MoViE's cut: 0.698 -> 0.539 TFLOPs at 480x480).
- mobile: also none at the next resolution (vedit's further cut: 0.454 TFLOPs; with TAESD under 0.70 per frame).
The mid block keeps its attention, so every student still reads the instruction.
"""

from __future__ import annotations

from vedit_cli.errors import ConfigError

ARCHITECTURES = {"stock": 0, "no-top-attention": 1, "mobile": 2}
DEFAULT_ARCHITECTURE = "mobile"
PLAIN_BLOCK = {"CrossAttnDownBlock2D": "DownBlock2D", "CrossAttnUpBlock2D": "UpBlock2D"}


def slim_config(unet_config: dict, architecture: str) -> dict:
    """The teacher's UNet config with the `architecture`'s attention levels replaced by plain ResNet blocks."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown student architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    cut = ARCHITECTURES[architecture]
    down = list(unet_config["down_block_types"])
    up = list(unet_config["up_block_types"])
    for level in range(min(cut, len(down))):
        down[level] = PLAIN_BLOCK.get(down[level], down[level])
        up[len(up) - 1 - level] = PLAIN_BLOCK.get(up[len(up) - 1 - level], up[len(up) - 1 - level])
    config = {key: value for key, value in dict(unet_config).items() if not key.startswith("_")}
    return {**config, "down_block_types": tuple(down), "up_block_types": tuple(up)}


def slim_unet(teacher_unet, architecture: str):
    """A new UNet of `architecture`, with every teacher weight whose name and shape match copied in.

    Returns (unet, copied, total): how many of the student's tensors came from the teacher."""
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config(slim_config(dict(teacher_unet.config), architecture))
    teacher_state = teacher_unet.state_dict()
    student_state = student.state_dict()
    matched = {name: tensor for name, tensor in teacher_state.items()
               if name in student_state and student_state[name].shape == tensor.shape}
    student.load_state_dict(matched, strict=False)
    return student.to(teacher_unet.device), len(matched), len(student_state)
