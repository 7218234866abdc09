"""movie backend, student mode (MoViE): one pass per step, guidance scales as UNet inputs, weights folder."""

from __future__ import annotations

import pytest
import torch

from tests.test_movie import make_editor, random_frames
from vedit_cli.errors import WeightsIntegrityError, WeightsMissingError
from vedit_cli.models import guidance_embedding as ge


def weights_with_student(tiny_weights, tmp_path, embedding_std: float = 0.0, delta: bool = False):
    """A weights dir sharing the tiny teacher and TAESD (symlinks) plus a movie-student folder."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    root = tmp_path / "weights"
    (root / "movie-student").mkdir(parents=True)
    for name in ("instruct-pix2pix", "taesd"):
        (root / name).symlink_to(tiny_weights / name, target_is_directory=True)
    unet = UNet2DConditionModel.from_pretrained(str(tiny_weights / "instruct-pix2pix"), subfolder="unet")
    embedding = ge.GuidanceEmbedding(ge.unet_time_embed_dim(unet))
    if embedding_std:
        torch.nn.init.normal_(embedding.mlp.linear_2.weight, std=embedding_std)
    ge.save(embedding, root / "movie-student" / "guidance_embedding.safetensors")
    if delta:
        name = "conv_out.bias"
        save_file({name: torch.full_like(unet.state_dict()[name], 0.5)}, str(root / "movie-student" /
                                                                         "unet_delta.safetensors"))
    return root


def test_auto_mode_uses_the_student_when_its_weights_are_present(tiny_weights, tmp_path):
    editor = make_editor(weights_with_student(tiny_weights, tmp_path), steps=None)
    assert editor.mode == "student" and editor.steps == 1
    assert editor.description == "movie student: 1 step x 1 pass, TAESD, cpu float32"
    assert make_editor(tiny_weights).mode == "teacher"


def test_explicit_student_without_weights_is_refused(tiny_weights):
    with pytest.raises(WeightsMissingError, match="movie-student"):
        make_editor(tiny_weights, movie_mode="student")


def test_untrained_student_equals_teacher_conditional_pass(tiny_weights, tmp_path):
    """Zero-initialised embedding: the student's one pass is the teacher's (c_I, c_T) pass (s_T = s_I = 1), on the
    same schedule (the student samples with trailing spacing, the teacher with its checkpoint's)."""
    from vedit_cli.backends.movie.loading import with_spacing

    frames = random_frames()
    student = make_editor(weights_with_student(tiny_weights, tmp_path), guidance_scale=7.5, vae="tiny")
    teacher = make_editor(tiny_weights, guidance_scale=1.0, image_guidance_scale=1.0, vae="tiny")
    assert teacher.plan.passes == ("text_image",)
    teacher.components.scheduler = with_spacing(teacher.components.scheduler, student.run.spacing)
    for editor in (student, teacher):
        editor.prepare("make it snowy")
    assert torch.allclose(student.edit(frames), teacher.edit(frames), atol=1e-6)


def test_trained_student_follows_its_guidance_inputs_in_one_pass_per_step(tiny_weights, tmp_path):
    weights_dir = weights_with_student(tiny_weights, tmp_path, embedding_std=0.5)
    frames = random_frames()
    outputs = []
    for scale in (4.0, 12.0):
        editor = make_editor(weights_dir, guidance_scale=scale)
        batch_sizes = []
        editor.components.unet.register_forward_hook(lambda m, args, out: batch_sizes.append(args[0].shape[0]))
        editor.prepare("make it snowy")
        outputs.append(editor.edit(frames))
        assert batch_sizes == [1] * editor.steps
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_unet_delta_is_added_to_the_teacher_weights(tiny_weights, tmp_path):
    plain = make_editor(weights_with_student(tiny_weights, tmp_path / "a"))
    shifted = make_editor(weights_with_student(tiny_weights, tmp_path / "b", delta=True))
    difference = shifted.components.unet.conv_out.bias - plain.components.unet.conv_out.bias
    assert torch.allclose(difference, torch.full_like(difference, 0.5))


def test_unet_delta_with_unknown_weights_is_refused(tiny_weights, tmp_path):
    from safetensors.torch import save_file

    weights_dir = weights_with_student(tiny_weights, tmp_path)
    save_file({"not.a.weight": torch.zeros(1)}, str(weights_dir / "movie-student" / "unet_delta.safetensors"))
    with pytest.raises(WeightsIntegrityError, match="not.a.weight"):
        make_editor(weights_dir)
