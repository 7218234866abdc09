"""SVDiff memory attention (eq. 6-7) on a tiny UNet: identity when untrained, recurrence, weights round trip."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import TEXT_HIDDEN, save_svdiff_memory, tiny_unet
from vedit_cli.errors import WeightsIntegrityError
from vedit_cli.models.memory_attention import (
    WEIGHTS_FILE, MemoryAttention, MemoryConfig, UNetMemory, load_memory_weights, relative_grid, save_memory_weights,
)


def _unet_inputs(batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 16, 16, generator=generator)
    text = torch.randn(batch, 77, TEXT_HIDDEN, generator=generator)
    return latents, torch.tensor(500), text


def _randomise_output(memory: UNetMemory) -> UNetMemory:
    torch.manual_seed(3)
    for block in memory.blocks:
        torch.nn.init.normal_(block.attention.to_out[0].weight, std=0.1)
    return memory


@torch.no_grad()
def test_zero_initialised_memory_leaves_unet_output_unchanged():
    unet = tiny_unet(4)
    latents, timestep, text = _unet_inputs()
    plain = unet(latents, timestep, text).sample
    memory = UNetMemory(MemoryConfig.for_unet(unet)).eval().attach(unet)
    with_memory = unet(latents, timestep, text).sample
    assert torch.equal(plain, with_memory)
    assert len(memory.state) == len(memory.blocks) == 6  # one memory written per transformer block


@torch.no_grad()
def test_trained_memory_changes_output_and_detach_restores_it():
    unet = tiny_unet(4)
    latents, timestep, text = _unet_inputs()
    plain = unet(latents, timestep, text).sample
    memory = _randomise_output(UNetMemory(MemoryConfig.for_unet(unet))).eval().attach(unet)
    assert not torch.allclose(unet(latents, timestep, text).sample, plain, atol=1e-4)
    memory.detach()
    assert torch.equal(unet(latents, timestep, text).sample, plain)


def test_initial_memory_is_embedding_plus_ffn_of_position_relative_to_centre():
    grid = relative_grid(8, 8)
    assert grid.shape == (64, 2)
    assert grid[0].tolist() == [-4.0, -4.0] and grid[9].tolist() == [-3.0, -3.0] and grid[-1].tolist() == [3.0, 3.0]
    module = MemoryAttention(channels=16, heads=2, head_dim=8)
    expected = module.initial_embedding + module.position_ffn(grid)
    assert torch.allclose(module.initial_memory(3)[2], expected)
    assert module.initial_memory(1).shape == (1, 64, 16)


@torch.no_grad()
def test_memory_attention_returns_features_and_next_memory_of_the_same_shapes():
    module = MemoryAttention(channels=16, heads=2, head_dim=8)
    torch.nn.init.normal_(module.attention.to_out[0].weight, std=0.1)
    features = torch.randn(2, 16, 12, 10)
    memory = module.initial_memory(2)
    new_features, next_memory = module(features, memory)
    assert new_features.shape == features.shape and next_memory.shape == memory.shape
    assert not torch.allclose(next_memory, memory)
    _, other_memory = module(torch.randn_like(features), memory)
    assert not torch.allclose(other_memory, next_memory)  # the memory absorbs the frame's features


@torch.no_grad()
def test_memories_are_kept_per_denoising_step_and_carried_to_the_next_call():
    unet = tiny_unet(4)
    memory = _randomise_output(UNetMemory(MemoryConfig.for_unet(unet))).eval().attach(unet)
    latents, timestep, text = _unet_inputs()
    with memory.at_step(0):
        first = unet(latents, timestep, text).sample
    with memory.at_step(1):
        unet(latents, timestep, text)
    assert {step for step, _ in memory.state} == {0, 1}
    with memory.at_step(0):
        second = unet(latents, timestep, text).sample  # same input, carried memory: a different output
    assert not torch.allclose(first, second, atol=1e-5)
    memory.clear()
    with memory.at_step(0):
        assert torch.equal(unet(latents, timestep, text).sample, first)


@torch.no_grad()
def test_memory_state_round_trip_resumes_identically():
    unet = tiny_unet(4)
    memory = _randomise_output(UNetMemory(MemoryConfig.for_unet(unet))).eval().attach(unet)
    latents, timestep, text = _unet_inputs()
    unet(latents, timestep, text)
    saved = memory.memory_state()
    expected = unet(latents, timestep, text).sample
    memory.load_memory_state(saved)
    assert torch.equal(unet(latents, timestep, text).sample, expected)


def test_weights_round_trip_with_config_in_metadata(tmp_path):
    folder = save_svdiff_memory(tmp_path / "svdiff-memory")
    loaded = load_memory_weights(folder / WEIGHTS_FILE)
    assert loaded.config == MemoryConfig.for_unet(tiny_unet(4))
    resaved = save_memory_weights(loaded, tmp_path / "again.safetensors")
    again = load_memory_weights(resaved)
    for a, b in zip(loaded.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.blocks[0].attention.to_out[0].weight.abs().sum() > 0


def test_weights_for_another_unet_are_refused(tmp_path):
    memory = load_memory_weights(save_svdiff_memory(tmp_path / "m") / WEIGHTS_FILE)
    from diffusers import UNet2DConditionModel

    other = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, norm_num_groups=8, attention_head_dim=4,
    )
    with pytest.raises(WeightsIntegrityError, match="transformer blocks"):
        memory.attach(other)


def test_file_without_config_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsIntegrityError, match="metadata"):
        load_memory_weights(tmp_path / "bad.safetensors")
