"""movie backend, teacher mode, on tiny random components: agreement with diffusers, TAESD convention, seeds."""

from __future__ import annotations

import shutil

import pytest
import torch

from vedit_cli.config import ModelConfig
from vedit_cli.errors import WeightsMissingError
from vedit_cli.settings import resolve_run

STEPS = 2
TOLERANCE = 1e-4  # float32 on CPU; same arithmetic up to summation order of the guidance formula


def make_editor(weights_dir, **options):
    from vedit_cli.backends.movie.editor import MovieEditor

    options.setdefault("steps", STEPS)
    config = ModelConfig(weights_dir=weights_dir, device="cpu", dtype="float32", **options).validate()
    return MovieEditor.from_run(resolve_run(config))


def random_frames(count: int = 1, size: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((count, 3, size, size), generator=generator) * 2 - 1


def reference_pipeline(weights_dir, autoencoder=None):
    """diffusers' InstructPix2Pix pipeline on the same folder, with the movie backend's deterministic scheduler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        str(weights_dir / "instruct-pix2pix"), safety_checker=None, requires_safety_checker=False,
        use_safetensors=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    if autoencoder is not None:
        pipe.vae = autoencoder
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_reference(pipe, image, noise, guidance_scale=7.5, image_guidance_scale=1.5) -> torch.Tensor:
    output = pipe("make it snowy", image=image, num_inference_steps=STEPS, guidance_scale=guidance_scale,
                  image_guidance_scale=image_guidance_scale, latents=noise, output_type="pt")
    return output.images * 2 - 1  # postprocess maps [-1, 1] to [0, 1]; map back


def editor_noise(editor, frames):
    from vedit_cli.backends.movie.sampling import clip_noise, encode_image_latents

    c = editor.components
    latent_shape = encode_image_latents(c.autoencoder, frames, c.vae_scaling_factor).shape[1:]
    return clip_noise(editor.config.seed, tuple(latent_shape), "cpu", torch.float32)


@pytest.mark.parametrize("scales", [(7.5, 1.5), (1.0, 1.0)])
def test_teacher_full_vae_matches_diffusers_instruct_pix2pix(tiny_weights, scales):
    editor = make_editor(tiny_weights, vae="full", guidance_scale=scales[0], image_guidance_scale=scales[1])
    frames = random_frames()
    editor.prepare("make it snowy")
    ours = editor.edit(frames)
    reference = run_reference(reference_pipeline(tiny_weights), frames, editor_noise(editor, frames), *scales)
    assert ours.shape == frames.shape
    # The reference clamps to [0, 1] after denormalising; we clamp to [-1, 1]: the same clamp.
    assert torch.allclose(ours, reference, atol=TOLERANCE), (ours - reference).abs().max()


def test_taesd_latent_convention_pinned_against_diffusers_pipeline(tiny_weights):
    """AutoencoderTiny latents are scaled by the SD VAE factor: IP2P conditioning needs them divided by it.

    diffusers' pipeline with vae=AutoencoderTiny feeds the scaled latents as the image conditioning (5.5x too
    small for a real checkpoint); we divide. Given the converted latents directly (a 4-channel `image` skips the
    pipeline's encoder), the pipeline and the movie teacher with TAESD agree, decode included.
    """
    from diffusers import AutoencoderTiny

    from vedit_cli.backends.movie.sampling import encode_image_latents

    editor = make_editor(tiny_weights, vae="tiny")
    taesd = AutoencoderTiny.from_pretrained(str(tiny_weights / "taesd"), use_safetensors=True).eval()
    pipe = reference_pipeline(tiny_weights, autoencoder=taesd)
    frames = random_frames()
    scaling = editor.components.vae_scaling_factor
    assert scaling == pytest.approx(0.18215)
    with torch.no_grad():
        pipeline_latents = pipe.prepare_image_latents(frames, 1, 1, torch.float32, "cpu", False)
        ours = encode_image_latents(editor.components.autoencoder, frames, scaling)
    assert torch.allclose(ours * scaling, pipeline_latents, atol=1e-6)
    editor.prepare("make it snowy")
    edited = editor.edit(frames)
    reference = run_reference(pipe, ours, editor_noise(editor, frames))
    assert torch.allclose(edited, reference, atol=TOLERANCE), (edited - reference).abs().max()


def test_same_seed_same_frames_other_seed_differs(tiny_weights):
    frames = random_frames()
    editor = make_editor(tiny_weights, seed=0)
    editor.prepare("make it snowy")
    first = editor.edit(frames)
    editor.reset()
    again = editor.edit(frames)
    other = make_editor(tiny_weights, seed=1)
    other.prepare("make it snowy")
    assert torch.equal(first, again)
    assert not torch.allclose(first, other.edit(frames), atol=1e-3)


def test_batch_of_frames_equals_single_frames_with_one_shared_noise(tiny_weights):
    editor = make_editor(tiny_weights)
    frames = random_frames(3)
    editor.prepare("make it snowy")
    batched = editor.edit(frames)
    editor.reset()
    singles = torch.cat([editor.edit(frames[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-5)
    same = torch.cat([frames[:1]] * 2)
    editor.reset()
    twin = editor.edit(same)
    assert torch.allclose(twin[0], twin[1], atol=1e-6)  # same frame, same noise: same edit


@pytest.mark.parametrize("scales,passes", [((7.5, 1.5), ("text_image", "image", "uncond")),
                                           ((0.0, 1.5), ("image", "uncond")), ((7.5, 1.0), ("text_image", "image")),
                                           ((2.0, 2.0), ("text_image", "uncond")), ((1.0, 1.0), ("text_image",))])
def test_guidance_plan_skips_zero_weight_passes(scales, passes):
    from vedit_cli.backends.movie.sampling import teacher_plan

    plan = teacher_plan(*scales)
    assert plan.passes == passes
    s_T, s_I = scales
    full = dict(zip(("text_image", "image", "uncond"), (s_T, s_I - s_T, 1 - s_I)))
    assert plan.weights == tuple(full[name] for name in passes)


def test_guided_prediction_is_the_instruct_pix2pix_formula():
    from vedit_cli.backends.movie.sampling import combine, teacher_plan

    text, image, uncond = torch.randn(3, 2, 4, 8, 8)
    expected = uncond + 7.5 * (text - image) + 1.5 * (image - uncond)
    assert torch.allclose(combine(torch.cat([text, image, uncond]), teacher_plan(7.5, 1.5)), expected, atol=1e-5)


def test_all_passes_of_a_step_run_in_one_unet_call(tiny_weights):
    editor = make_editor(tiny_weights, guidance_scale=7.5, image_guidance_scale=1.0)
    batch_sizes = []
    editor.components.unet.register_forward_hook(lambda module, args, out: batch_sizes.append(args[0].shape[0]))
    editor.prepare("make it snowy")
    editor.edit(random_frames(2))
    assert batch_sizes == [2 * 2] * STEPS  # 2 frames x 2 passes (s_I = 1 drops the unconditional pass)
    assert "x 2 passes" in editor.description


def test_description_names_mode_vae_device(tiny_weights):
    editor = make_editor(tiny_weights)
    assert editor.description == "movie teacher: 2 steps x 3 passes, full VAE, cpu float32"
    assert "TAESD" in make_editor(tiny_weights, vae="tiny").description


@pytest.mark.parametrize("native_bf16, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_auto_dtype_on_cpu_follows_native_bfloat16_support(tiny_weights, monkeypatch, native_bf16, expected):
    """auto is bfloat16 only on a CPU that computes it natively (simulated here); emulated bf16 is ~100x slower."""
    from vedit_cli import hardware
    from vedit_cli.backends.movie.editor import MovieEditor

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native_bf16)
    run = resolve_run(ModelConfig(weights_dir=tiny_weights, device="cpu", steps=1))
    assert run.dtype == expected and ("no native" in run.hardware.dtype_reason) != native_bf16
    editor = MovieEditor.from_run(run)
    editor.prepare("make it snowy")
    out = editor.edit(random_frames())
    assert editor.components.unet.dtype == expected and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("remove", [None, "instruct-pix2pix/unet/diffusion_pytorch_model.safetensors",
                                    "instruct-pix2pix/tokenizer", "instruct-pix2pix/scheduler", "taesd"])
def test_missing_or_incomplete_weights_name_the_download_command(tiny_weights, tmp_path, remove):
    weights_dir = tmp_path / "weights"
    if remove is not None:
        shutil.copytree(tiny_weights, weights_dir)
        target = weights_dir / remove
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(WeightsMissingError) as error:
        make_editor(weights_dir, vae="tiny")
    name = "taesd" if remove == "taesd" else "instruct-pix2pix"
    assert f"vedit download {name} --weights-dir {weights_dir}" in str(error.value)


def test_empty_tokenizer_is_refused(tiny_weights, tmp_path):
    """FACTS.md trap: a tokenizer without its vocabulary must never reach an edit."""
    import json

    weights_dir = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights_dir)
    tokenizer_dir = weights_dir / "instruct-pix2pix" / "tokenizer"
    (tokenizer_dir / "tokenizer.json").unlink(missing_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    with pytest.raises(WeightsMissingError, match="usable tokenizer"):
        make_editor(weights_dir)
