"""`vedit train eve-lora --discriminator-features dinov2`: the FDD discriminators on a tiny random DINOv2 (frozen)
with trainable token heads, on the tiny eve stack (4-frame 32x32 windows, k = 2): L_G reaches only the LoRA and L_D
only the heads, DINOv2 is never trained nor saved, D_e sees the input frame, the CLI trains and refuses a missing
DINOv2 folder with one line."""

from __future__ import annotations

import pytest
import torch

from tests.test_train_eve_lora import (
    SIZE,
    build_world,
    cli_train,
    gradients,
    make_recipe,
    one_batch,
    run_main,
)
from vedit_cli.errors import ConfigError
from vedit_cli.train.recipes import dino_discriminator as dino_module
from vedit_cli.train.recipes import eve_lora as recipe_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_dinov2(folder):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=SIZE)
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The eve-lora tests' world (tiny eve weights, one 8-frame clip, one instruction table) + W/dinov2-base."""
    world = build_world(tmp_path_factory.mktemp("eve_lora_dinov2"))
    return {**world, "dinov2": save_tiny_dinov2(world["weights"] / "dinov2-base")}


def dino_recipe(world, folder, **changes):
    return make_recipe(world, folder, discriminator_features="dinov2", dinov2=world["dinov2"], **changes)


def test_generator_step_reaches_only_the_lora_and_discriminator_step_only_the_heads(world, tmp_path):
    recipe = dino_recipe(world, tmp_path, lora_scale=0.05)
    model, dinov2 = recipe.model, recipe.model.dino.model
    assert isinstance(model.edit_discriminator, dino_module.DinoEditDiscriminator)
    assert recipe.model.dino.layers == [1, 2, 3, 4] and dino_module.feature_layers(12) == [3, 6, 9, 12]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if ".lora_" in name}
    heads = {name for name in trainable if name.startswith(recipe_module.HEADS)}
    assert lora and heads and trainable == lora | heads
    assert not any(p.requires_grad for p in dinov2.parameters()) and not dinov2.training
    assert set(model.state_dict()) == trainable  # neither DINOv2 nor the VAE is a submodule: never saved
    terms = model(recipe.inputs(one_batch(recipe)), adversarial=True)
    assert all(terms[name].shape == (1,) and torch.isfinite(terms[name]).all() for name in terms)

    terms["generator"].sum().backward(retain_graph=True)
    reached = gradients(model)
    assert set(reached) == lora  # through DINOv2 and the VAE decoder, into the student's frames
    assert all(reached[name].abs().sum() > 0 for name in lora)
    model.zero_grad(set_to_none=True)

    terms["discriminator"].sum().backward()
    reached = gradients(model)
    assert set(reached) == heads
    assert sum(float(grad.abs().sum()) for grad in reached.values()) > 0
    assert all(p.grad is None for p in dinov2.parameters())
    assert all(p.grad is None for p in recipe.sd.vae.parameters())


def test_edit_discriminator_sees_the_input_frame(world, tmp_path):
    recipe = dino_recipe(world, tmp_path)
    dino, edit = recipe.model.dino, recipe.model.edit_discriminator
    generator = torch.Generator().manual_seed(3)
    output, first, second = (torch.rand(2, 3, SIZE, SIZE, generator=generator) for _ in range(3))
    with torch.no_grad():
        tokens = dino.tokens(output)
        logits = [edit.logits(edit.features(tokens, dino.tokens(frame))) for frame in (first, first, second)]
    assert logits[0].shape == (2,)
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)
    assert (logits[2] - logits[0]).abs().min() > 1e-6  # the same output frames, another input: another verdict


def test_cli_trains_with_dinov2_features_and_saves_no_dinov2_weight(world, tmp_path):
    from safetensors.torch import load_file

    summary = cli_train(tmp_path, world, "--max-steps", 2, "--discriminator-features", "dinov2",
                        "--dinov2-dir", world["dinov2"])
    assert summary["steps"] == 2 and (tmp_path / "eve-lora" / "pytorch_lora_weights.safetensors").is_file()
    checkpoint = sorted((tmp_path / "eve-lora.training" / "checkpoints").glob("*/model.safetensors"))[-1]
    keys = load_file(str(checkpoint)).keys()
    assert keys and all(key.startswith(recipe_module.HEADS) or ".lora_" in key for key in keys)
    assert any(key.startswith(recipe_module.HEADS) for key in keys)


def test_missing_or_incomplete_dinov2_folder_is_one_line(world, tmp_path):
    weights = world["weights"]
    incomplete = tmp_path / "dinov2-base"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    common = ("train", "eve-lora", "--base-dir", weights / "sd15", "--controlnet-dir", weights / "controlnet-ip2p",
              "--motion-adapter-dir", weights / "animatediff-motion-adapter", "--videos", world["clips"],
              "--instructions", world["table"], "--out", tmp_path / "out", "--cpu",
              "--discriminator-features", "dinov2")
    cases = [((), "--discriminator-features dinov2 needs --dinov2-dir"),
             (("--dinov2-dir", incomplete), "missing: model.safetensors); e.g. `vedit download dinov2-base`")]
    for extra, message in cases:
        code, out, err = run_main(*common, *extra)
        lines = err.strip().splitlines()
        assert code == 1 and out == "" and len(lines) == 1 and message in lines[0], err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dinov2-base"]
    with pytest.raises(ConfigError, match="--discriminator-features must be one of teacher, dinov2"):
        recipe_module.EveLoraConfig(base=weights / "sd15", data=world["clips"], output_dir=tmp_path / "o",
                                    controlnet=weights / "controlnet-ip2p", motion_adapter=weights,
                                    discriminator_features="dino").check()
