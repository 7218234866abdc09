"""MoViE guidance embedding on a tiny UNet: zero start == teacher's conditional pass, weights matter, save/load."""

from __future__ import annotations

import pytest
import torch

from tests import tiny
from vedit_cli.errors import ConfigError, WeightsIntegrityError
from vedit_cli.models import guidance_embedding as ge


def unet_inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn((batch, 8, 8, 8), generator=generator)
    text = torch.randn((batch, 7, tiny.TEXT_HIDDEN), generator=generator)
    return sample, torch.tensor(500), text


def predict(unet, labels=None):
    sample, timestep, text = unet_inputs()
    with torch.no_grad():
        return unet(sample, timestep, encoder_hidden_states=text, class_labels=labels).sample


def test_zero_initialised_student_equals_teacher_conditional_prediction():
    teacher = predict(tiny.tiny_unet(8))
    student_unet = ge.attach(tiny.tiny_unet(8), ge.for_unet(tiny.tiny_unet(8)))
    labels = ge.guidance_labels(1.5, 7.5, 2)
    assert torch.equal(predict(student_unet, labels), teacher)


def test_nonzero_embedding_changes_output_and_depends_on_the_scales():
    unet = tiny.tiny_unet(8)
    embedding = ge.for_unet(unet)
    torch.nn.init.normal_(embedding.mlp.linear_2.weight, std=0.5)
    ge.attach(unet, embedding)
    teacher = predict(tiny.tiny_unet(8))
    low, high = predict(unet, ge.guidance_labels(1.5, 4.0, 2)), predict(unet, ge.guidance_labels(1.5, 12.0, 2))
    assert not torch.allclose(low, teacher, atol=1e-4)
    assert not torch.allclose(low, high, atol=1e-4)
    image_only = predict(unet, ge.guidance_labels(1.25, 4.0, 2))
    assert not torch.allclose(low, image_only, atol=1e-4)


def test_save_load_round_trip_keeps_weights_and_config(tmp_path):
    embedding = ge.GuidanceEmbedding(128)
    torch.nn.init.normal_(embedding.mlp.linear_2.weight)
    path = ge.save(embedding, tmp_path / "guidance_embedding.safetensors")
    assert ge.read_config(path) == embedding.config
    loaded = ge.load(path, time_embed_dim=128)
    scales = ge.guidance_labels(1.5, 7.5, 3)
    assert torch.equal(loaded(scales), embedding(scales))


def test_load_refuses_config_mismatch_and_foreign_files(tmp_path):
    from safetensors.torch import save_file

    path = ge.save(ge.GuidanceEmbedding(128), tmp_path / "g.safetensors")
    with pytest.raises(WeightsIntegrityError, match="width 128"):
        ge.load(path, time_embed_dim=1280)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsIntegrityError, match="no guidance-embedding config"):
        ge.load(foreign, time_embed_dim=128)


def test_attach_refuses_a_mismatched_width():
    with pytest.raises(ConfigError, match="does not match"):
        ge.attach(tiny.tiny_unet(8), ge.GuidanceEmbedding(1280))
