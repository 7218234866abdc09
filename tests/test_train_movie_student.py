"""`vedit train movie-student` on tiny local components: each stage trains only what it should, the stage-1 loss is
zero when the student already is the guided teacher, the scales are not interchangeable, the training's guidance
formula is the one `vedit edit` samples with, and a trained student edits through the CLI at its default steps."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests import tiny
from tests.train_helpers import REPO_ROOT, train_env, vedit_command


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return tiny.save_instruct_pix2pix(tmp_path_factory.mktemp("teacher") / "instruct-pix2pix")


def _config(teacher_dir, triplets, work: Path, **fields):
    from vedit_cli.train.config import MovieStudentConfig, TrainerConfig

    trainer = TrainerConfig(work_dir=work, batch_size=2, learning_rate=1e-3, cpu=True, checkpoint_every=100)
    defaults = dict(mobile_steps=1, guidance_steps=1, onestep_steps=1, trajectories=4, resolution=32,
                    random_flip=False)
    return MovieStudentConfig(teacher=teacher_dir, data=triplets, output_dir=work.parent / "movie-student",
                              trainer=trainer, **{**defaults, **fields})


def _recipe_step(stage: str, config, prepare=None):
    """(recipe, weights before, weights after) of one optimisation step of `stage`."""
    from vedit_cli.train.recipes.movie_student import _recipe
    from vedit_cli.train.recipes.student_parts import FrozenTeacher
    from vedit_cli.train.recipes.student_stages import load_decoder_term
    from vedit_cli.train.data.triplets import open_triplets
    from vedit_cli.train.trainer import train

    torch.set_num_threads(1)
    teacher = FrozenTeacher(config.teacher)
    decoder = load_decoder_term(config, teacher) if stage == "onestep" else None  # as train_movie_student does
    recipe = _recipe(stage, config, teacher, open_triplets(config.data, config.columns), config.work_dir(), decoder)
    if prepare is not None:
        prepare(recipe)
    before = {name: p.detach().clone() for name, p in recipe.model.named_parameters()}
    teacher_before = {name: p.detach().clone() for name, p in teacher.unet.named_parameters()}
    trainer = dataclasses.replace(config.trainer, work_dir=config.work_dir() / stage, max_steps=1)
    losses = []
    train(recipe, trainer, lambda event: losses.append(event["loss"]) if event["event"] == "step" else None)
    after = dict(recipe.model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    teacher_changed = any(not torch.equal(p, dict(teacher.unet.named_parameters())[n]) for n, p in teacher_before.items())
    return recipe, changed, teacher_changed, losses


def _train_stages_one_and_two(config) -> None:
    """One step each of the mobile and guidance stages: the one-step stage starts from their student."""
    for stage in ("mobile", "guidance"):
        _recipe_step(stage, config)


def test_each_stage_changes_only_what_it_trains(teacher_dir, triplets, tmp_path):
    config = _config(teacher_dir, triplets, tmp_path / "work")
    _, changed, teacher_changed, _ = _recipe_step("mobile", config)
    assert changed and not teacher_changed
    assert not any(name.startswith("class_embedding") for name in changed)  # the mobile student has no embedding yet
    # guidance starts from the mobile stage's student: the UNet and the guidance embedding train
    _, changed, teacher_changed, _ = _recipe_step("guidance", config)
    assert not teacher_changed
    assert any(name.startswith("class_embedding.") for name in changed)
    assert any(not name.startswith("class_embedding.") for name in changed)
    # onestep: the student and the discriminator's heads train, the teacher (the discriminator's features) does not
    recipe, changed, teacher_changed, _ = _recipe_step("onestep", config)
    assert not teacher_changed
    assert any(name.startswith("student.") for name in changed)
    assert any(name.startswith("discriminator.heads.") for name in changed)
    assert not any(name.startswith("discriminator.teacher") for name in dict(recipe.model.named_parameters()))
    # the no-adversarial ablation leaves the heads alone
    plain = dataclasses.replace(config, adversarial_weight=0.0)
    _, changed, _, _ = _recipe_step("onestep", plain)
    assert changed and not any(name.startswith("discriminator.") for name in changed)


def test_gradient_checkpointing_reaches_the_one_step_stage_and_keeps_its_step(teacher_dir, triplets, tmp_path):
    import shutil

    config = _config(teacher_dir, triplets, tmp_path / "work")
    _train_stages_one_and_two(config)
    plain, _, _, plain_losses = _recipe_step("onestep", config)
    shutil.rmtree(config.work_dir() / "onestep" / "checkpoints")  # the same step again (the trajectories are kept)
    checkpointed = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, gradient_checkpointing=True))
    recipe, _, _, losses = _recipe_step("onestep", checkpointed)
    for unet in (recipe.model.student, recipe.model.discriminator.teacher):
        assert any(getattr(module, "gradient_checkpointing", False) for module in unet.modules())
    assert not any(getattr(module, "gradient_checkpointing", False) for module in plain.model.student.modules())
    assert losses == pytest.approx(plain_losses, rel=1e-6)
    after, plain_after = dict(recipe.model.named_parameters()), dict(plain.model.named_parameters())
    for name, parameter in after.items():
        assert torch.allclose(parameter, plain_after[name], atol=1e-6), name


def test_the_guidance_loss_is_zero_when_the_student_is_the_guided_teacher(teacher_dir, triplets, tmp_path):
    """A stock student is a copy of the teacher with a zero guidance embedding: its one pass is eps(I, T), which is
    exactly the guided teacher at s_T = s_I = 1. At s_T = 7.5 it is not."""
    at_one = _config(teacher_dir, triplets, tmp_path / "one", architecture="stock", text_scale_range=(1.0, 1.0),
                     image_scale_range=(1.0, 1.0))
    _, _, _, losses = _recipe_step("guidance", at_one)
    assert losses[0] < 1e-10
    guided = _config(teacher_dir, triplets, tmp_path / "guided", architecture="stock", text_scale_range=(7.5, 7.5),
                     image_scale_range=(1.5, 1.5))
    _, _, _, losses = _recipe_step("guidance", guided)
    assert losses[0] > 1e-4


def test_the_training_guidance_is_the_formula_vedit_edit_samples_with(teacher_dir):
    from vedit_cli.backends.movie.sampling import teacher_plan, combine
    from vedit_cli.train.recipes.student_parts import guided_prediction

    teacher = tiny.tiny_unet(8, seed=3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    image = torch.randn(1, 4, 8, 8, generator=generator)
    text, null = torch.randn(1, 77, tiny.TEXT_HIDDEN, generator=generator), torch.randn(1, 77, tiny.TEXT_HIDDEN,
                                                                                        generator=generator)
    t = torch.tensor([500])
    s_text, s_image = 6.0, 1.7
    with torch.no_grad():
        trained = guided_prediction(teacher, x, t, image, text, null, torch.tensor([[s_image, s_text]]))
        rows = teacher(torch.cat([torch.cat([x] * 3), torch.cat([image, image, torch.zeros_like(image)])], dim=1),
                       t.repeat(3), torch.cat([text, null, null])).sample
    sampled = combine(rows, teacher_plan(s_text, s_image))
    torch.testing.assert_close(trained, sampled, rtol=1e-5, atol=1e-5)


def test_swapping_the_two_scales_changes_the_students_output(teacher_dir):
    from vedit_cli.models import guidance_embedding

    unet = tiny.tiny_unet(8, seed=1)
    embedding = guidance_embedding.for_unet(unet)
    torch.nn.init.normal_(embedding.mlp.linear_2.weight, std=0.5)  # a trained (non-zero) embedding
    guidance_embedding.attach(unet, embedding)
    x = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, tiny.TEXT_HIDDEN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image_first = unet(x, 999, text, class_labels=torch.tensor([[1.5, 7.5]])).sample
        swapped = unet(x, 999, text, class_labels=torch.tensor([[7.5, 1.5]])).sample
    assert (image_first - swapped).abs().max() > 1e-3


def test_a_trained_student_edits_through_the_cli_at_its_default_step_count(teacher_dir, triplets, tmp_path):
    from tests.io_media import make_clip

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "instruct-pix2pix").symlink_to(teacher_dir, target_is_directory=True)
    tiny.save_taesd(weights / "taesd")
    trained = subprocess.run(vedit_command(
        "train", "movie-student", "--teacher-dir", teacher_dir, "--data", triplets, "--out", weights / "movie-student",
        "--mobile-steps", "1", "--guidance-steps", "1", "--onestep-steps", "1", "--trajectories", "2",
        "--batch-size", "2", "--resolution", "32", "--cpu", "--json"),
        capture_output=True, text=True, env=train_env(), cwd=REPO_ROOT, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout)
    assert set(summary["stages"]) == {"mobile", "guidance", "onestep"}
    from safetensors import safe_open

    with safe_open(str(weights / "movie-student" / "guidance_embedding.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert (metadata["trained_steps"], metadata["timestep_spacing"], metadata["prediction_type"],
            metadata["architecture"]) == ("1", "trailing", "sample", "mobile")
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, size="64x48")
    edited = subprocess.run(vedit_command("edit", clip, "invert the colours", "--backend", "movie", "--weights-dir",
                                          weights, "--dtype", "float32", "--size", "64", "--preset", "ultrafast",
                                          "-o", tmp_path / "out.mp4", "--json"),
                            capture_output=True, text=True, env=train_env(), cwd=REPO_ROOT, timeout=180)
    assert edited.returncode == 0, edited.stderr[-3000:]
    result = json.loads(edited.stdout)
    assert result["summary"]["ok"] == 1
    assert result["settings"]["mode"] == "student" and result["settings"]["steps"] == 1


def test_the_one_step_student_returns_its_prediction_as_the_clean_latent():
    """prediction type "sample" with one trailing Euler step: the step's output IS the UNet's output."""
    from diffusers import EulerDiscreteScheduler

    from vedit_cli.backends.movie.loading import IP2P_SCHEDULER, with_prediction_type, with_spacing

    scheduler = with_prediction_type(with_spacing(EulerDiscreteScheduler(**IP2P_SCHEDULER), "trailing"), "sample")
    scheduler.set_timesteps(1)
    assert int(scheduler.timesteps[0]) == 999
    latents = torch.randn(1, 4, 8, 8) * scheduler.init_noise_sigma
    predicted = torch.randn(1, 4, 8, 8)
    out = scheduler.step(predicted, scheduler.timesteps[0], latents).prev_sample
    torch.testing.assert_close(out, predicted)


def test_a_v_one_step_student_is_sampled_as_the_recipe_reads_it():
    """prediction type v with one trailing Euler step (how `vedit edit` samples a v teacher's one-step student):
    the step returns sqrt(a) x_t - sqrt(1 - a) v at t=999, x_t being the scaled model input, as stage 3 trained it."""
    from diffusers import EulerDiscreteScheduler

    from vedit_cli.backends.movie.loading import IP2P_SCHEDULER, with_prediction_type, with_spacing

    scheduler = with_prediction_type(with_spacing(EulerDiscreteScheduler(**IP2P_SCHEDULER), "trailing"),
                                     "v_prediction")
    scheduler.set_timesteps(1)
    timestep = scheduler.timesteps[0]
    latents = torch.randn(1, 4, 8, 8, dtype=torch.float64) * scheduler.init_noise_sigma
    model_input = scheduler.scale_model_input(latents, timestep)
    v = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    out = scheduler.step(v, timestep, latents).prev_sample
    alpha_bar = scheduler.alphas_cumprod[int(timestep)].double()
    torch.testing.assert_close(out, alpha_bar.sqrt() * model_input - (1 - alpha_bar).sqrt() * v)


def test_bad_options_are_one_line_before_anything_loads(tmp_path):
    from vedit_cli.errors import ConfigError
    from vedit_cli.train.config import MovieStudentConfig

    with pytest.raises(ConfigError, match="--architecture"):
        MovieStudentConfig(teacher=tmp_path, data=tmp_path, output_dir=tmp_path / "o", architecture="tiny").check()
    with pytest.raises(ConfigError, match="--text-scale-range"):
        MovieStudentConfig(teacher=tmp_path, data=tmp_path, output_dir=tmp_path / "o",
                           text_scale_range=(5.0, 1.0)).check()


def test_a_missing_teacher_is_one_line_naming_the_teacher(triplets, tmp_path):
    from vedit_cli.errors import WeightsMissingError
    from vedit_cli.train.config import MovieStudentConfig, TrainerConfig
    from vedit_cli.train.recipes.movie_student import train_movie_student

    with pytest.raises(WeightsMissingError, match="teacher .*--teacher-dir"):
        train_movie_student(MovieStudentConfig(teacher=tmp_path / "absent", data=triplets, output_dir=tmp_path / "o",
                                               trainer=TrainerConfig(work_dir=tmp_path / "w", cpu=True)))
    assert not (tmp_path / "o").exists()


def test_the_first_stages_inherit_a_v_prediction_teachers_parameterisation(teacher_dir, triplets, tmp_path):
    """A teacher whose scheduler says v_prediction (the tiny world's): stages 1-2 regress v, so their students must
    be saved, and sampled, as v."""
    import shutil

    from safetensors import safe_open

    from vedit_cli.backends.movie.student import EMBEDDING_FILE

    v_teacher = tmp_path / "v-teacher"
    shutil.copytree(teacher_dir, v_teacher)
    config_path = v_teacher / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "prediction_type": "v_prediction"}))
    config = _config(v_teacher, triplets, tmp_path / "work")
    for stage in ("mobile", "guidance"):
        recipe, changed, _, _ = _recipe_step(stage, config)
        assert changed
        with safe_open(str(recipe.save(recipe.model) / EMBEDDING_FILE), framework="pt") as handle:
            assert handle.metadata()["prediction_type"] == "v_prediction", stage


def test_the_decoder_term_trains_the_student_through_a_frozen_taesd(teacher_dir, triplets, tmp_path):
    """--decoder-weight: the one-step stage adds |TAESD(x0_student) - VAE(x0_teacher)|^2; the student learns from
    it, TAESD (and the teacher's VAE) stay as they are, and the loss grows by the term."""
    taesd_dir = tiny.save_taesd(tmp_path / "taesd")
    config = _config(teacher_dir, triplets, tmp_path / "work", decoder=taesd_dir, decoder_weight=1.0)
    _train_stages_one_and_two(config)
    taesd_before = {name: p.detach().clone() for name, p in tiny.tiny_taesd().named_parameters()}
    recipe, changed, teacher_changed, losses = _recipe_step("onestep", config)
    decoder = recipe.model.decoder
    assert decoder is not None and not teacher_changed
    assert any(name.startswith("student.") for name in changed)
    assert all(torch.equal(taesd_before[name], p) for name, p in decoder.taesd.named_parameters())
    assert not any("decoder" in name for name in recipe.model.state_dict())  # never saved with the checkpoints
    assert recipe.last_terms["decoder"].min() > 0
    plain = dataclasses.replace(config, decoder_weight=0.0, trainer=dataclasses.replace(config.trainer,
                                                                                          work_dir=tmp_path / "plain"))
    _train_stages_one_and_two(plain)
    recipe_plain, _, _, plain_losses = _recipe_step("onestep", plain)
    assert recipe_plain.model.decoder is None and "decoder" not in recipe_plain.last_terms
    assert losses[0] > plain_losses[0]
    # both started from the same stage-2 student: the decoder term moved this one elsewhere
    plain_student = dict(recipe_plain.model.student.named_parameters())
    assert any(not torch.equal(p, plain_student[name]) for name, p in recipe.model.student.named_parameters())


def test_the_decoder_term_is_zero_when_the_decoders_agree_on_the_same_latent():
    from types import SimpleNamespace

    from vedit_cli.train.recipes.student_stages import PixelDecoderTerm

    class Decoder(torch.nn.Module):  # latents * `scale` through one shared conv, in [-1, 1]
        def __init__(self, conv, scale):
            super().__init__()
            self.conv, self.scale, self.config = conv, scale, SimpleNamespace(scaling_factor=1.0)

        def decode(self, latents):
            return SimpleNamespace(sample=torch.tanh(self.conv(latents * self.scale)))

    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    # the teacher's VAE reads latents / scaling_factor (0.5): scaled back by 0.5 it is TAESD's decoder exactly
    term = PixelDecoderTerm(Decoder(conv, 1.0), Decoder(conv, 0.5), 0.5)
    latents = torch.randn(2, 4, 8, 8)
    assert term(latents, latents).abs().max() < 1e-10
    assert term(latents, latents + 0.5).min() > 0
    x0 = latents.clone().requires_grad_(True)
    term(x0, latents + 0.5).sum().backward()
    assert x0.grad.abs().sum() > 0 and conv.weight.grad is None  # gradients reach the latent, not the decoder


def test_a_decoder_weight_without_a_decoder_or_a_bad_taesd_is_one_line_before_any_stage(teacher_dir, triplets,
                                                                                          tmp_path):
    from vedit_cli.errors import ConfigError, WeightsMissingError
    from vedit_cli.train.recipes.movie_student import train_movie_student

    for fields in ({"decoder_weight": 1.0}, {"decoder": tmp_path}):
        with pytest.raises(ConfigError, match="--decoder \\(a TAESD folder\\) and --decoder-weight"):
            _config(teacher_dir, triplets, tmp_path / "work", **fields).check()
    vae_folder = teacher_dir / "vae"  # an AutoencoderKL folder: a plausible mistake
    for folder, message in ((tmp_path / "absent", "not a TAESD folder"), (vae_folder, "not a TAESD folder")):
        config = _config(teacher_dir, triplets, tmp_path / "work", decoder=folder, decoder_weight=1.0)
        with pytest.raises(WeightsMissingError, match=message):
            train_movie_student(config)
        assert not (tmp_path / "work" / "mobile").exists()  # refused before the first stage trained


def test_a_v_teachers_one_step_student_keeps_v_and_starts_from_the_stage_two_estimate(teacher_dir, triplets,
                                                                                      tmp_path):
    """onestep_prediction "auto" with a v teacher: the one-step student's output is v, read as x0 = sqrt(a) x_t -
    sqrt(1 - a) v, so before its first step its x0 is the stage-2 student's own one-step estimate (the guided
    teacher's parameterisation, at every trajectory timestep); saved, and so sampled, as v. An epsilon teacher
    keeps "sample" (the test above); "sample" can be asked for with a v teacher too."""
    import shutil
    from types import SimpleNamespace

    from safetensors import safe_open

    from vedit_cli.backends.movie.student import EMBEDDING_FILE
    from vedit_cli.train.recipes.student_stages import onestep_prediction_type

    assert onestep_prediction_type("auto", "epsilon") == "sample"
    assert onestep_prediction_type("auto", "v_prediction") == "v_prediction"
    assert onestep_prediction_type("sample", "v_prediction") == "sample"
    v_teacher = tmp_path / "v-teacher"
    shutil.copytree(teacher_dir, v_teacher)
    config_path = v_teacher / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "prediction_type": "v_prediction"}))
    config = _config(v_teacher, triplets, tmp_path / "work")
    _train_stages_one_and_two(config)
    seen = {}

    def before_training(recipe):
        model = recipe.model
        one_process = SimpleNamespace(process_index=0, num_processes=1, wait_for_everyone=lambda: None)
        recipe.source.build(recipe.teacher.to("cpu"), one_process)
        sample = recipe.source.load(0)
        text = recipe.teacher.text(sample["input_ids"][None])
        for index in (0, 5):  # pure noise at t=999, and a later state of the trajectory
            x_t, t = sample["model_inputs"][index][None], sample["timesteps"][index][None]
            with torch.no_grad():
                x0 = model.clean_latent(x_t, t, sample["image_latents"][None], text, sample["scales"][None])
                v = model.student(torch.cat([x_t, sample["image_latents"][None]], dim=1), t, text,
                                  class_labels=sample["scales"][None]).sample
            alpha_bar = model.noise_scheduler.alphas_cumprod[int(t.round())]
            seen[index] = (x0, alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v)

    recipe, changed, _, _ = _recipe_step("onestep", config, prepare=before_training)
    assert recipe.model.prediction_type == "v_prediction" and changed
    for x0, expected in seen.values():
        torch.testing.assert_close(x0, expected)
    with safe_open(str(recipe.save(recipe.model) / EMBEDDING_FILE), framework="pt") as handle:
        assert handle.metadata()["prediction_type"] == "v_prediction"
    as_sample = dataclasses.replace(config, onestep_prediction="sample",
                                    trainer=dataclasses.replace(config.trainer, work_dir=tmp_path / "sample"))
    _train_stages_one_and_two(as_sample)
    recipe, _, _, _ = _recipe_step("onestep", as_sample)
    assert recipe.model.prediction_type == "sample"
