"""The tiny world's Stable Diffusion side (vedit_cli.tinyworld.sd_side): its data sources, the text-to-image and
ControlNet recipes, and a quick build of every component (from a tiny random SD folder, a couple of steps each) that
loads through the svdiff and eve backends' real loaders and edits through `vedit edit`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.cli_helpers import REPO_ROOT
from vedit_cli.tinyworld import sd_side
from vedit_cli.tinyworld.edits import EDITS

QUICK = sd_side.SdSideSize(base_steps=2, base_batch=2, lcm_steps=2, lcm_batch=2, lora_rank=4, controlnet_steps=3,
                           controlnet_batch=2, motion_steps=2, motion_batch=1, frames=4, memory_steps=2,
                           memory_batch=1, memory_segment=4, memory_clip=2)
RESOLUTION = 32


def _frames(count: int = 4, size: int = RESOLUTION, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _unet_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_sources_pair_every_frame_with_every_edit_and_the_unedited_caption():
    frames = _frames(3)
    captions = sd_side.FrameCaptions(frames)
    assert len(captions) == 3 * (len(EDITS) + 1)
    assert {captions.load(i)["caption"] for i in range(len(EDITS) + 1)} == {e.caption for e in EDITS} | {"a photo"}
    unedited = captions.load(len(EDITS))
    assert np.array_equal(unedited["image"], frames[0])
    sequences = sd_side.SequenceCaptions(np.stack([_frames(5, seed=s) for s in range(2)]))
    sample = sequences.load(len(EDITS) + 2)  # sequence 1, edit 1
    assert sample["frames"].shape == (5, RESOLUTION, RESOLUTION, 3) and sample["caption"] == EDITS[1].caption


def _config(builder, base: Path, data, tmp_path: Path, name: str):
    config = builder(base, data, tmp_path / name, QUICK, RESOLUTION, tmp_path / f"{name}.training")
    return replace(config, trainer=replace(config.trainer, checkpoint_every=1, learning_rate=1e-2))


def test_text_to_image_trains_the_unet_only_and_writes_a_stable_diffusion_folder(sd15_base, tmp_path):
    out = sd_side.run_trainer("sd15", _config(sd_side.base_config, sd15_base, _frames(), tmp_path, "sd15"))
    for name in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "vae/config.json"):
        assert (out / name).is_file(), name
    before, after = _unet_state(sd15_base), _unet_state(out)
    assert max((before[k] - after[k]).abs().max().item() for k in before) > 0  # the UNet trained
    vae_file = "vae/diffusion_pytorch_model.safetensors"  # the frozen parts are the base's files
    assert (out / vae_file).read_bytes() == (sd15_base / vae_file).read_bytes()


def test_controlnet_attaches_to_the_base_and_its_hint_changes_the_output(sd15_base, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    out = sd_side.run_trainer("controlnet-ip2p", _config(sd_side.controlnet_config, sd15_base, _frames(),
                                                         tmp_path, "controlnet-ip2p"))
    controlnet = ControlNetModel.from_pretrained(str(out), use_safetensors=True).eval()
    unet = UNet2DConditionModel.from_pretrained(str(sd15_base), subfolder="unet", use_safetensors=True).eval()
    latents, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, unet.config.cross_attention_dim)
    hints = torch.rand(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        plain = unet(latents, 500, text).sample
        outputs = []
        for hint in hints:
            down, mid = controlnet(latents, 500, text, controlnet_cond=hint[None], return_dict=False)
            assert [r.shape[1] for r in down] == [unet.conv_in.out_channels] + _down_widths(unet)
            outputs.append(unet(latents, 500, text, down_block_additional_residuals=down,
                                mid_block_additional_residual=mid).sample)
    assert (outputs[0] - plain).abs().max() > 0 and (outputs[0] - outputs[1]).abs().max() > 0


def _down_widths(unet) -> list[int]:
    """The channels of every residual a ControlNet hands the UNet's down path after conv_in."""
    widths = []
    for block in unet.down_blocks:
        widths += [resnet.out_channels for resnet in block.resnets]
        widths += [block.downsamplers[0].out_channels] if block.downsamplers else []
    return widths


def test_controlnet_hint_embedding_follows_the_vae_factor(sd15_base):
    from diffusers import AutoencoderKL

    from vedit_cli.errors import ConfigError
    from vedit_cli.train.recipes.controlnet import hint_channels

    vae = SimpleNamespace(**AutoencoderKL.load_config(str(sd15_base), subfolder="vae"))
    assert hint_channels(vae, None) == (16, 32)  # the tiny VAE downsamples by 2
    with pytest.raises(ConfigError, match="downsample"):
        hint_channels(vae, (16, 32, 96, 256))


def _clip(path: Path, frames: int = 6, size: int = 64) -> Path:
    from fractions import Fraction

    from vedit_cli.config import EncodeConfig
    from vedit_cli.io.encode import VideoWriter

    writer = VideoWriter(path, size, size, Fraction(8), EncodeConfig(crf=0, preset="veryfast"))
    for frame in np.random.default_rng(1).integers(0, 256, (frames, size, size, 3), dtype=np.uint8):
        writer.write(frame)
    writer.close()
    return path


def _edit(world: Path, clip: Path, output: Path, backend: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vedit_cli", "edit", str(clip), "make it sepia", "-o", str(output), "--backend",
               backend, "--weights-dir", str(world), "--size", "64", "--dtype", "float32", "--device", "cpu",
               "--no-download", "--json", "--quiet", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_a_quick_stable_diffusion_side_loads_and_edits_through_svdiff_and_eve(sd15_base, tmp_path):
    """Every component trained a couple of steps from the tiny base, saved under the registry's names, loaded by the
    backends' real loaders (`vedit edit`), as `scripts/tiny_world.py build --quick` does at the world's size."""
    from tests import tiny

    world, frames = tmp_path / "world", _frames(4)
    for component, (configure, _, data_kind) in sd_side.TRAINERS.items():
        base = sd15_base if component == "sd15" else world / "sd15"
        length = sd_side.sequence_length(QUICK, data_kind)
        data = frames if length is None else np.stack([_frames(length, seed=s) for s in range(2)])
        sd_side.run_trainer(component, _config(configure, base, data, world, component))  # world/<component>
    tiny.save_taesd(world / "taesd")
    clip = _clip(tmp_path / "clip.mp4")
    runs = (("svdiff", ("--steps", "2")), ("svdiff", ("--steps", "2", "--lora-scale", "0")),
            ("eve", ("--steps", "2", "--caption", "a sepia photo")))
    for backend, extra in runs:
        result = _edit(world, clip, tmp_path / f"{backend}{len(extra)}.mp4", backend, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / f"{backend}{len(extra)}.mp4").is_file()
    _quick_memory_loss_and_stream(world, frames, clip)
    _quick_fdd_variants_score_and_edit_through_eve(world, clip, tmp_path)


def _quick_memory_loss_and_stream(world: Path, frames: np.ndarray, clip: Path) -> None:
    """Issue 15's measures on the quick world: the per-frame loss with the trained memory carried and bypassed
    (`scripts/tiny_world.py memory-loss`'s report), and `stream` (svdiff + memory frame by frame, cost and RSS)."""
    import json

    from vedit_cli.tinyworld import memory_loss

    recipe = memory_loss.trained_recipe(world, len(frames), QUICK.memory_clip, RESOLUTION, world.parent / "loss")
    report = memory_loss.report(recipe, {"noise": frames}, seeds=1)
    assert report["streams"] == len(EDITS) + 1 and len(report["rows"]) == len(EDITS) + 1
    losses = [value for row in report["rows"] for value in (row["with_memory"], row["without_memory"])]
    assert all(np.isfinite(losses)) and all(value > 0 for value in losses)
    assert any(row["with_memory"] != row["without_memory"] for row in report["rows"])  # the memory acts
    (world / "tinyworld.json").write_text(json.dumps({"size": 64}))  # vedit edits at 64 pixels or more
    script = REPO_ROOT / "scripts" / "tiny_world.py"
    streamed = subprocess.run([sys.executable, str(script), "stream", str(world), "--clip", str(clip), "--frames", "6"],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    rows = [line for line in streamed.stdout.splitlines() if line.startswith("| 6 |")]
    assert len(rows) == 1 and "peak RSS" in streamed.stderr, streamed.stdout


def _quick_fdd_variants_score_and_edit_through_eve(world: Path, clip: Path, tmp_path: Path) -> None:
    """Issue 16 in the quick world: the full FDD run and an ablation train from the same start, the score plans a
    row for each (the ablation through a view of the stack beside its LoRA), that view edits through `vedit edit`,
    and the teachers' losses on the student's samples are measured with the LoRA off and on."""
    from vedit_cli.tinyworld import fdd
    from vedit_cli.tinyworld.score import eve_rows
    from vedit_cli.train.recipes.eve_lora import train_eve_lora

    size = fdd.FddSize(steps=2, sds_only_steps=1, batch=1, lr=1e-2, lora_rank=4, window=4, k_steps=2,
                       teacher_steps=2)
    sequences = np.stack([_frames(4, seed=s) for s in range(2)])
    windows = fdd.InstructedWindows(sequences)
    assert np.array_equal(windows.load(len(EDITS) + 3)["frames"], sequences[1])  # inputs only, never an edit
    configs = {variant: fdd.fdd_config(world, sequences, variant, size, RESOLUTION, tmp_path / f"{variant}.work")
               for variant in ("fdd", "sds-only")}
    assert configs["sds-only"].sds_only_steps == size.steps and configs["fdd"].sds_only_steps == 1
    for config in configs.values():
        train_eve_lora(config)
    labels = {row.label: row for row in eve_rows(world)}
    k = fdd.FddSize().k_steps  # the rows sample as the world's FDD trains
    assert {"eve plug-and-play (ControlNet + motion adapter)", f"eve plug-and-play ({k} steps, CFG 1)",
            f"eve + FDD LoRA ({k} steps, CFG 1)", f"eve + LoRA, SDS only ({k} steps, CFG 1)"} == set(labels)
    assert labels[f"eve + FDD LoRA ({k} steps, CFG 1)"].weights_dir == world
    view = fdd.variant_view(world, "sds-only")
    assert (view / "eve-lora").resolve() == fdd.lora_folder(world, "sds-only").resolve()
    result = _edit(view, clip, tmp_path / "fdd-view.mp4", "eve", "--steps", "2", "--guidance-scale", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    few = fdd.InstructedWindows(sequences[:1])
    before = fdd.teacher_losses(configs["fdd"], few, None)
    after = fdd.teacher_losses(configs["fdd"], few, fdd.lora_folder(world, "fdd") / "pytorch_lora_weights.safetensors")
    assert all(np.isfinite(list(before.values()))) and before != after  # the loaded LoRA changed the samples
