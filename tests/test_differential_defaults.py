"""Differential tests of the DEFAULT paths against diffusers, on tiny random components (float32, CPU).

Each reference is built from diffusers' own modules, loaders and schedulers, independently of vedit's loaders:
a diffusers pipeline where one fits, else diffusers' scheduler and model calls composed by hand in the test. Each
test's docstring says what differs by design.
"""

from __future__ import annotations

import pytest
import torch

from tests import tiny
from vedit_cli.config import ModelConfig
from vedit_cli.editor import create_editor
from vedit_cli.settings import resolve_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16


def frames(count: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def clip_embeddings(folder, texts: list[str]) -> torch.Tensor:
    """[len(texts), 77, D] from the checkpoint's own tokenizer and text encoder, as SD1.5 pipelines encode."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder").eval()
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


# -- movie student, 1 step (its default) --------------------------------------------------------------------------

def test_movie_student_at_its_default_matches_diffusers_instruct_pix2pix_pipeline(tiny_weights, tmp_path):
    """The student (trained, non-zero guidance embedding) at its default: 1 step, trailing, TAESD.

    Reference: StableDiffusionInstructPix2PixPipeline with the checkpoint's Euler scheduler at trailing spacing,
    guidance off (one conditional pass, as the student runs). By design: the pipeline has no guidance-scale input,
    so a hook hands the UNet the student's (s_I, s_T) class labels; it is given the image latents already converted
    from TAESD's scaled convention (see tests/test_movie.py), since it would feed TAESD latents unconverted.
    """
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    from tests.test_movie import editor_noise
    from tests.test_movie_student import weights_with_student
    from vedit_cli.backends.movie.sampling import encode_image_latents
    from vedit_cli.models.guidance_embedding import guidance_labels

    run = resolve_run(ModelConfig(weights_dir=weights_with_student(tiny_weights, tmp_path, embedding_std=0.5),
                                  device="cpu", dtype="float32", guidance_scale=7.5, image_guidance_scale=1.5))
    assert (run.mode, run.steps) == ("student", 1)
    editor = create_editor(run)
    source = frames(1)
    editor.prepare("make it snowy")
    ours = editor.edit(source)

    folder = tiny_weights / "instruct-pix2pix"
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(folder), safety_checker=None,
                                                                  requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.vae = AutoencoderTiny.from_pretrained(str(tiny_weights / "taesd")).eval()
    pipe.unet = editor.components.unet  # the student: teacher UNet + guidance embedding in its class-embedding slot
    labels = guidance_labels(1.5, 7.5, 1)
    hook = pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: (args, {**kwargs, "class_labels": labels}),
                                               with_kwargs=True)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image_latents = encode_image_latents(editor.components.autoencoder, source, editor.components.vae_scaling_factor)
    try:
        reference = pipe("make it snowy", image=image_latents, num_inference_steps=1, guidance_scale=1.0,
                         image_guidance_scale=1.0, latents=editor_noise(editor, source), output_type="pt").images
    finally:
        hook.remove()
    torch.testing.assert_close((ours + 1) / 2, reference, rtol=0, atol=1e-5)
    assert ours.std() > 1e-3


# -- svdiff at its defaults: guidance 1.5 with CFG, DDIM inversion, 3 LCM steps ---------------------------------

def test_svdiff_at_its_defaults_matches_a_hand_composed_diffusers_reference(svdiff_weights):
    svdiff_weights = svdiff_weights["plain"]
    """svdiff's defaults (guidance 1.5 with CFG, inversion, strength 0.5, 3 steps) without trained memory.

    Reference: diffusers' own LoRA loading (StableDiffusionPipeline.load_lora_weights + fuse_lora), TAESD, and
    LCMScheduler.step, composed by hand: diffusers' LatentConsistencyModelImg2ImgPipeline does no classifier-free
    guidance for an LCM-LoRA UNet (it expects a guidance embedding) and noises instead of inverting. The DDIM
    inversion is written from its equation (arXiv 2010.02502, eq. 12 backwards): diffusers' DDIMInverseScheduler
    steps on its own uniform grid, not up to an LCM start timestep. No memory: diffusers has none (untrained
    memory is the identity, tests/test_svdiff.py).
    """
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline

    editor = create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=svdiff_weights, device="cpu",
                                                   dtype="float32", seed=2)))
    assert (editor.guidance_scale, editor.steps, editor.strength, editor.init) == (1.5, 3, 0.5, "inversion")
    source = frames(1)
    editor.prepare("make it red")
    ours = editor.edit(source)

    pipe = StableDiffusionPipeline.from_pretrained(str(svdiff_weights / "sd15"), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(svdiff_weights / "lcm-lora-sdv1-5"), weight_name="pytorch_lora_weights.safetensors")
    pipe.fuse_lora()
    unet = pipe.unet.eval()
    taesd = AutoencoderTiny.from_pretrained(str(svdiff_weights / "taesd")).eval()
    scheduler = LCMScheduler.from_pretrained(str(svdiff_weights / "sd15"), subfolder="scheduler")
    uncond, cond = clip_embeddings(svdiff_weights / "sd15", ["", "make it red"]).chunk(2)
    with torch.no_grad():
        latents = taesd.encode(source).latents * taesd.config.scaling_factor
        scheduler.set_timesteps(3, strength=0.5)
        alphas = scheduler.alphas_cumprod
        grid = [0, *scheduler.timesteps.flip(0).tolist()]
        for current, following in zip(grid[:-1], grid[1:]):
            eps = unet(latents, current, cond).sample
            original = (latents - (1 - alphas[current]).sqrt() * eps) / alphas[current].sqrt()
            latents = alphas[following].sqrt() * original + (1 - alphas[following]).sqrt() * eps
        generator = torch.Generator().manual_seed(2)
        for timestep in scheduler.timesteps:
            eps_uncond, eps_cond = unet(torch.cat([latents] * 2), timestep, torch.cat([uncond, cond])).sample.chunk(2)
            eps = eps_uncond + 1.5 * (eps_cond - eps_uncond)
            latents, denoised = scheduler.step(eps, timestep, latents, generator=generator, return_dict=False)
        reference = taesd.decode(denoised / taesd.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-5)
    assert ours.std() > 1e-3


# -- eve at its defaults: frame-0 anchor, overlapping windows, caption != instruction -----------------------------

def test_eve_with_anchor_windows_and_caption_matches_a_hand_composed_diffusers_reference(tmp_path):
    """eve's default path: frame 0 edited first and injected into every window, 3 windows of 4 overlapping by 2,
    the backbone reading a caption and the ControlNet the instruction, CFG 7.5, trailing DDIM.

    Reference composed from diffusers modules loaded on their own: the anchor pass runs the plain SD1.5
    UNet2DConditionModel (the backbone without temporal layers, which is what eve's bypass must equal), the windows
    UNetMotionModel.from_unet2d + MotionAdapter, ControlNetModel residuals, DDIMScheduler from the stored config at
    trailing spacing. By design diffusers has no anchor frame and no per-step latent blending of windows
    (AnimateDiffVideoToVideoControlNetPipeline feeds one prompt to both, tests/test_eve_diffusers.py covers that
    path); the window plan and cross-fade weights are vedit's pure planner (tests/test_windows.py), and each
    frame's noise comes from eve's per-frame seeds.
    """
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, MotionAdapter, UNet2DConditionModel, \
        UNetMotionModel

    from vedit_cli.backends.eve.sampling import frame_noise
    from vedit_cli.pipeline.windows import blend_weights, plan_windows

    weights = tiny.save_eve_weights(tmp_path)
    count, window, overlap, steps, scale, control = 8, 4, 2, 3, 7.5, 0.8
    caption, instruction = "a snowy street", "make it winter"
    run = resolve_run(ModelConfig(backend="eve", weights_dir=weights, device="cpu", dtype="float32", steps=steps,
                                  window=window, overlap=overlap, chunk_windows=3, caption=caption, seed=4,
                                  controlnet_scale=control))
    assert run.model.guidance_scale == 7.5 and run.spacing == "trailing"
    editor = create_editor(run)
    source = frames(count)
    editor.prepare(instruction)
    ours = editor.edit(source)

    sd15 = weights / "sd15"
    unet2d = UNet2DConditionModel.from_pretrained(str(sd15), subfolder="unet").eval()
    motion = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_pretrained(str(sd15), subfolder="unet"),
                                         MotionAdapter.from_pretrained(str(weights / "animatediff-motion-adapter"))).eval()
    controlnet = ControlNetModel.from_pretrained(str(weights / "controlnet-ip2p")).eval()
    vae = AutoencoderKL.from_pretrained(str(sd15), subfolder="vae").eval()
    scheduler = DDIMScheduler.from_pretrained(str(sd15), subfolder="scheduler", timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    empty, caption_embeds, instruction_embeds = clip_embeddings(sd15, ["", caption, instruction]).split(1)
    captions, instructions = torch.cat([empty, caption_embeds]), torch.cat([empty, instruction_embeds])
    hints = (source + 1) / 2

    def ddim_step(latents_cthw, hints_tchw, timestep, backbone_only=False):
        channels, num, height, width = latents_cthw.shape
        rows = torch.cat([latents_cthw.transpose(0, 1)] * 2)  # [uncond frames, cond frames]
        down, mid = controlnet(rows, timestep, encoder_hidden_states=instructions.repeat_interleave(num, 0),
                               controlnet_cond=hints_tchw.repeat(2, 1, 1, 1), conditioning_scale=control,
                               return_dict=False)
        text = captions.repeat_interleave(num, 0)
        if backbone_only:
            eps = unet2d(rows, timestep, encoder_hidden_states=text, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample.view(2, num, channels, height, width).transpose(1, 2)
        else:
            eps = motion(latents_cthw[None].expand(2, -1, -1, -1, -1), timestep, encoder_hidden_states=text,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        guided = eps[0] + scale * (eps[1] - eps[0])
        return scheduler.step(guided, timestep, latents_cthw).prev_sample

    with torch.no_grad():
        noise = frame_noise(4, 0, count, (4, SIZE // 2, SIZE // 2))
        anchor = [noise[:, :1]]
        for timestep in scheduler.timesteps:
            anchor.append(ddim_step(anchor[-1], hints[:1], timestep, backbone_only=True))
        windows = plan_windows(count, window, overlap)
        assert len(windows) == 3
        weights_per_window = blend_weights(windows, count)
        latents = noise.clone()
        for index, timestep in enumerate(scheduler.timesteps):
            latents[:, :1] = anchor[index]
            blended = torch.zeros_like(latents)
            for frames_of, weight in zip(windows, weights_per_window):
                part, part_hints = latents[:, frames_of.start:frames_of.stop], hints[frames_of.start:frames_of.stop]
                prepend = 0 not in frames_of
                if prepend:
                    part, part_hints = torch.cat([anchor[index], part], dim=1), torch.cat([hints[:1], part_hints])
                stepped = ddim_step(part, part_hints, timestep)[:, 1 if prepend else 0:]
                blended[:, frames_of.start:frames_of.stop] += stepped * weight[None, :, None, None]
            latents = blended
        latents[:, :1] = anchor[-1]
        reference = vae.decode(latents.transpose(0, 1) / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=5e-5)
    assert ours.std() > 1e-3
