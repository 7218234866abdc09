"""The AnimateDiff motion-adapter recipe on a tiny SD1.5-shaped base: only motion modules learn, the output loads
the way eve loads it, and the trained temporal layers see frame order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests import tiny
from vedit_cli.errors import ConfigError
from vedit_cli.train.config import MotionAdapterConfig, TrainerConfig
from vedit_cli.train.recipes import motion_adapter as recipe_module
from vedit_cli.train.recipes.sd_parts import load_sd_unet

FRAMES, SIZE = 8, 32


class Sequences:
    """`count` random 8-frame 32x32 sequences (a drifting noise pattern) with captions."""

    def __init__(self, count: int = 3, frames: int = FRAMES):
        rng = np.random.default_rng(0)
        self.clips = []
        for _ in range(count):
            pattern = rng.integers(0, 256, (SIZE, SIZE * 2, 3), dtype=np.uint8)
            self.clips.append(np.stack([pattern[:, step:step + SIZE] for step in range(frames)]))

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> dict:
        return {"frames": self.clips[index], "caption": f"clip number {index}"}

    def describe(self, index: int) -> str:
        return f"sequence {index}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny.save_sd15(tmp_path_factory.mktemp("motion") / "sd15")


def make_config(base: Path, folder: Path, **changes) -> MotionAdapterConfig:
    trainer = TrainerConfig(work_dir=folder / "work", max_steps=2, batch_size=2, cpu=True, learning_rate=1e-3,
                            checkpoint_every=1)
    config = MotionAdapterConfig(base=base, data=Sequences(), output_dir=folder / "adapter", trainer=trainer,
                                 resolution=SIZE, frames=FRAMES, caption_dropout=0.0, random_flip=True)
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory, one_torch_thread):
    """One short training run; the recipe (its model trained in place) and the output folder."""
    made = []

    class Recorded(recipe_module.MotionAdapterRecipe):
        def __init__(self, config):
            super().__init__(config)
            made.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe_module, "MotionAdapterRecipe", Recorded)
        output = recipe_module.train_motion_adapter(make_config(base, tmp_path_factory.mktemp("run")))
    return made[0], output


def cpu_setup(recipe) -> None:
    recipe.setup(SimpleNamespace(mixed_precision="no", device=torch.device("cpu")))


def one_batch(recipe, seeds=(11, 12)) -> dict:
    batch = recipe.collate([recipe.prepare_sample(recipe.source.load(index), seed) for index, seed in enumerate(seeds)])
    return {**batch, "sample_seed": torch.tensor(seeds)}


def motion_state(model) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items() if ".motion_modules." in key}


def frozen_state(model) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items() if ".motion_modules." not in key}


def predict(unet, latents, text) -> torch.Tensor:
    with torch.no_grad():
        return unet(latents, torch.tensor([500]), text.repeat_interleave(latents.shape[2], dim=0)).sample


def probe(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, FRAMES, 16, 16, generator=generator)
    return latents, torch.randn(1, 77, tiny.TEXT_HIDDEN, generator=generator)


def eve_motion_unet(base: Path, adapter):
    from diffusers import UNet2DConditionModel

    from vedit_cli.backends.eve.components import motion_unet

    unet2d = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet", use_safetensors=True,
                                                  local_files_only=True)
    return motion_unet(unet2d, adapter).eval()


def test_gradients_reach_only_motion_modules_with_and_without_checkpointing(base, tmp_path, one_torch_thread):
    recipe = recipe_module.MotionAdapterRecipe(make_config(base, tmp_path))
    cpu_setup(recipe)
    model, batch = recipe.model.train(), one_batch(recipe)
    gradients = []
    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        if checkpointing:
            model.enable_gradient_checkpointing()
        losses = recipe.loss(model, batch, 0)
        assert losses.shape == (2,) and torch.isfinite(losses).all()
        losses.sum().backward()
        with_grad = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        assert with_grad and all(".motion_modules." in name for name in with_grad)
        assert any(grad.abs().sum() > 0 for grad in with_grad.values())
        gradients.append(with_grad)
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-4, atol=1e-7)


def test_training_changes_motion_modules_and_leaves_the_base_unchanged(base, trained):
    recipe, _ = trained
    fresh = recipe_module.motion_model(load_sd_unet(base), recipe_module.new_motion_adapter(recipe.adapter_config, 0))
    before, after = frozen_state(fresh), frozen_state(recipe.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    start = motion_state(fresh)
    moved = [key for key, value in motion_state(recipe.model).items() if not torch.equal(value, start[key])]
    assert any(key.endswith("proj_out.weight") for key in moved)


def test_output_loads_as_eve_loads_it_and_differs_from_a_zero_initialised_adapter(base, trained):
    from diffusers import MotionAdapter

    recipe, output = trained
    assert sorted(path.name for path in output.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert not output.with_name(output.name + ".partial").exists()
    adapter = MotionAdapter.from_pretrained(str(output), use_safetensors=True, local_files_only=True)
    base_unet = load_sd_unet(base)
    assert tuple(adapter.config.block_out_channels) == tuple(base_unet.config.block_out_channels)
    assert adapter.config.motion_norm_num_groups == base_unet.config.norm_num_groups
    loaded = eve_motion_unet(base, adapter)
    trained_motion = motion_state(recipe.model)
    assert motion_state(loaded).keys() == trained_motion.keys()
    assert all(torch.equal(value, trained_motion[key]) for key, value in motion_state(loaded).items())

    zero = eve_motion_unet(base, recipe_module.new_motion_adapter(recipe.adapter_config, 0))
    latents, text = probe()
    assert (predict(loaded, latents, text) - predict(zero, latents, text)).abs().max() > 1e-4
    # the zero-initialised adapter is the base image UNet applied frame by frame
    per_frame = base_unet(latents[0].permute(1, 0, 2, 3), torch.tensor([500]), text.expand(FRAMES, -1, -1)).sample
    torch.testing.assert_close(predict(zero, latents, text)[0].permute(1, 0, 2, 3), per_frame.detach(),
                               rtol=1e-4, atol=1e-5)


def test_trained_temporal_layers_see_frame_order(base, trained):
    recipe, output = trained
    from diffusers import MotionAdapter

    reverse = torch.arange(FRAMES - 1, -1, -1)
    latents, text = probe(1)

    def order_effect(unet) -> float:
        straight = predict(unet, latents, text)
        reversed_back = predict(unet, latents[:, :, reverse], text)[:, :, reverse]
        return float((straight - reversed_back).abs().max())

    trained_unet = eve_motion_unet(base, MotionAdapter.from_pretrained(str(output), use_safetensors=True))
    zero_unet = eve_motion_unet(base, recipe_module.new_motion_adapter(recipe.adapter_config, 0))
    assert order_effect(zero_unet) < 1e-5  # frame by frame: reversing the frames just reverses the output
    assert order_effect(trained_unet) > 1e-4


def test_validation_writes_one_strip_per_caption(trained, tmp_path, monkeypatch):
    recipe, _ = trained
    monkeypatch.setattr(recipe_module, "VALIDATION_STEPS", 2)  # the pipeline's path, not its quality
    model = recipe.model.eval()
    with torch.no_grad():
        recipe.validate(model, 2, tmp_path)
    from PIL import Image

    strips = sorted(tmp_path.glob("*.png"))
    assert len(strips) == 2 and Image.open(strips[0]).size == (SIZE * FRAMES, SIZE)
    assert (tmp_path / "000.txt").read_text() == "clip number 0\n"


def test_sequence_sampling_and_config_checks(base, tmp_path):
    config = make_config(base, tmp_path)
    rng = np.random.default_rng(3)
    assert len(recipe_module.clip_frames(np.zeros((12, 4, 4, 3), np.uint8), FRAMES, rng)) == FRAMES
    with pytest.raises(recipe_module.BadSample, match="fewer than"):
        recipe_module.clip_frames(np.zeros((5, 4, 4, 3), np.uint8), FRAMES, rng)
    with pytest.raises(ConfigError, match="motion-max-seq-length"):
        recipe_module.train_motion_adapter(dataclasses.replace(config, frames=40))
    unet_config = load_sd_unet(base).config
    with pytest.raises(ConfigError, match="layers per block"):
        recipe_module.adapter_config(unet_config, dataclasses.replace(config, motion_layers_per_block=1))
    with pytest.raises(ConfigError, match="divide"):
        recipe_module.adapter_config(unet_config, dataclasses.replace(config, motion_num_attention_heads=3))
    assert not (tmp_path / "work").exists() and not (tmp_path / "adapter").exists()
