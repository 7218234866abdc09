"""Samplers that fit their step count, checked where they start: the UNet's first call (timestep, latent scale).

- movie student at its DEFAULT step count (no --steps): the last training timestep (999), latents at its sigma;
- svdiff: its strength's timestep; inversion (default) is deterministic, conditional-only, memory bypassed;
- eve: the last training timestep, latents of unit variance; the frame-0 anchor and the windows on one schedule.
"""

from __future__ import annotations

import pytest
import torch

from tests import tiny
from tests.test_movie_student import weights_with_student
from vedit_cli.config import ModelConfig
from vedit_cli.editor import create_editor
from vedit_cli.settings import resolve_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16


def record_unet_calls(unet) -> list[tuple[torch.Tensor, int]]:
    """(sample, timestep) of every forward call of `unet`, in order, read before the call runs."""
    calls: list[tuple[torch.Tensor, int]] = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append((sample.detach().clone(), int(torch.as_tensor(timestep).reshape(-1)[0])))

    unet.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def scaled_linear_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD1.5's training schedule computed here, independently of the schedulers under test."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def frames(count: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- movie student ------------------------------------------------------------------------------------------------

def test_linspace_one_step_starts_at_timestep_zero_and_trailing_at_the_last():
    """The defect: InstructPix2Pix's "linspace" gives one Euler step at t=0 (sigma 0.029); trailing starts at 999."""
    from diffusers import EulerDiscreteScheduler

    from vedit_cli.backends.movie.loading import IP2P_SCHEDULER, with_spacing

    linspace = EulerDiscreteScheduler(**IP2P_SCHEDULER)
    linspace.set_timesteps(1)
    assert linspace.timesteps.tolist() == [0] and float(linspace.sigmas[0]) < 0.03
    trailing = with_spacing(EulerDiscreteScheduler(**IP2P_SCHEDULER), "trailing")
    trailing.set_timesteps(1)
    assert trailing.timesteps.tolist() == [999] and float(trailing.sigmas[0]) > 14


def test_student_at_its_default_step_count_starts_from_pure_noise_at_the_last_timestep(tiny_weights, tmp_path):
    from tests.test_movie import editor_noise

    run = resolve_run(ModelConfig(weights_dir=weights_with_student(tiny_weights, tmp_path), device="cpu",
                                  dtype="float32"))  # no steps: the student's own
    assert (run.mode, run.steps, run.spacing, run.trained_steps, run.off_recipe) == ("student", 1, "trailing", 1, False)
    editor = create_editor(run)
    calls = record_unet_calls(editor.components.unet)
    editor.prepare("make it snowy")
    source = frames()
    edited = editor.edit(source)
    assert len(calls) == 1 and torch.isfinite(edited).all()
    model_input, timestep = calls[0]
    assert timestep == 999  # the schedule's last training timestep
    alphas_cumprod = scaled_linear_alphas_cumprod()
    sigma = float(((1 - alphas_cumprod[999]) / alphas_cumprod[999]) ** 0.5)  # 14.6: pure noise
    latents = model_input[:, :4] * (sigma**2 + 1) ** 0.5  # undo scale_model_input
    assert torch.allclose(latents, editor_noise(editor, source) * sigma, rtol=1e-4, atol=1e-4)
    assert 0.7 < float(latents.std()) / sigma < 1.3


def test_trained_schedule_travels_in_the_student_weights_and_other_steps_are_off_recipe(tiny_weights, tmp_path):
    from vedit_cli.models import guidance_embedding as ge

    weights_dir = weights_with_student(tiny_weights, tmp_path)
    path = weights_dir / "movie-student" / "guidance_embedding.safetensors"
    ge.save(ge.load(path, ge.read_config(path)["time_embed_dim"]), path, trained_steps=4, timestep_spacing="trailing")
    on_recipe = resolve_run(ModelConfig(weights_dir=weights_dir, device="cpu", dtype="float32"))
    assert (on_recipe.steps, on_recipe.spacing, on_recipe.trained_steps, on_recipe.off_recipe) == (4, "trailing", 4, False)
    off = resolve_run(ModelConfig(weights_dir=weights_dir, device="cpu", dtype="float32", steps=2))
    assert off.off_recipe and "off-recipe: trained for 4" in off.summary()
    editor = create_editor(off)
    assert editor.description.startswith("movie student: 2 steps (off-recipe: trained for 4) x 1 pass")
    calls = record_unet_calls(editor.components.unet)
    editor.prepare("make it snowy")
    editor.edit(frames())
    assert [timestep for _, timestep in calls] == [999, 499]  # trailing: from the last timestep, also off-recipe


def test_student_runs_through_the_real_cli_at_its_default(tiny_weights, tmp_path):
    from pathlib import Path

    from tests.cli_helpers import run_vedit

    example = Path(__file__).resolve().parents[1] / "examples" / "example.mp4"
    result = run_vedit("edit", example, "make it snowy", "--backend", "movie",
                       "--weights-dir", weights_with_student(tiny_weights, tmp_path), "--size", "64", "--dtype",
                       "float32", "--preset", "ultrafast", "-o", tmp_path / "out.mp4", "--json",
                       env={"OMP_NUM_THREADS": "1"})
    assert result.code == 0, result.stderr[-2000:]
    report = result.json()
    settings = report["settings"]
    assert (settings["mode"], settings["steps"], settings["spacing"], settings["trained_steps"]) == (
        "student", 1, "trailing", 1)
    (clip,) = report["clips"]
    assert clip["status"] == "ok" and clip["frames"] == 90


# -- svdiff -------------------------------------------------------------------------------------------------------

def svdiff_editor(weights_dir, **changes):
    editor = create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=weights_dir, device="cpu",
                                                   dtype="float32", **changes)))
    editor.prepare("make it red")
    return editor


def test_svdiff_forward_noising_starts_at_its_strength_timestep_at_that_noise_level(svdiff_weights):
    from diffusers.utils.torch_utils import randn_tensor

    editor = svdiff_editor(svdiff_weights["plain"], svdiff_init="noise", strength=0.5, seed=3)
    calls = record_unet_calls(editor.parts.unet)
    source = frames()
    editor.edit(source)
    assert [timestep for _, timestep in calls] == [499, 339, 179]  # LCM's 3 steps from strength 0.5
    alphas_cumprod = scaled_linear_alphas_cumprod()
    clean = editor.parts.taesd.encode(source).latents * editor.parts.taesd.config.scaling_factor
    noise = randn_tensor(clean.shape, generator=torch.Generator().manual_seed(3))
    a = alphas_cumprod[499].float()
    latents = calls[0][0][:1]
    assert torch.allclose(latents, a.sqrt() * clean + (1 - a).sqrt() * noise, atol=1e-5)
    assert 0.6 < float((latents - a.sqrt() * clean).std() / (1 - a).sqrt()) < 1.4


def test_svdiff_inversion_runs_conditional_passes_up_to_the_start_timestep_then_samples_from_it(svdiff_weights):
    editor = svdiff_editor(svdiff_weights["plain"], strength=0.5)  # default: inversion, guidance 1.5 (CFG)
    assert editor.init == "inversion" and "DDIM inversion (3 conditional passes)" in editor.description
    calls = record_unet_calls(editor.parts.unet)
    editor.edit(frames())
    timesteps = [timestep for _, timestep in calls]
    batches = [sample.shape[0] for sample, _ in calls]
    assert timesteps == [0, 179, 339, 499, 339, 179]  # inversion 0 -> 499, then LCM from 499
    assert batches == [1, 1, 1, 2, 2, 2]  # inversion: conditional pass only; sampling: [uncond, cond]


def test_svdiff_inversion_is_deterministic_and_noising_depends_on_the_seed(svdiff_weights):
    def first_sampling_input(**changes):
        editor = svdiff_editor(svdiff_weights["plain"], **changes)
        calls = record_unet_calls(editor.parts.unet)
        editor.edit(frames())
        return next(sample for sample, timestep in calls if sample.shape[0] == 2)[:1]

    assert torch.equal(first_sampling_input(seed=0), first_sampling_input(seed=9))
    assert not torch.allclose(first_sampling_input(seed=0, svdiff_init="noise"),
                              first_sampling_input(seed=9, svdiff_init="noise"))


def test_svdiff_inversion_neither_reads_nor_writes_the_memory(svdiff_weights):
    editor = svdiff_editor(svdiff_weights["memory"])
    memory = editor.parts.memory
    reads = []
    original_read = memory._read
    memory._read = lambda index, batch: reads.append(batch) or original_read(index, batch)
    editor.edit(frames())
    assert reads and set(reads) == {2}  # only the sampling passes ([uncond, cond]) touch the memory
    before = editor.memory_state()
    reads.clear()
    editor._initial_latents(torch.randn(1, 4, SIZE // 2, SIZE // 2), torch.tensor([499, 339, 179]), None)
    after = editor.memory_state()
    assert not reads and after.keys() == before.keys()
    assert all(torch.equal(after[key], value) for key, value in before.items())


def test_ddim_inversion_lands_exactly_at_the_start_timesteps_noise_level_for_an_exact_noise_predictor():
    """With eps_theta equal to the true noise, DDIM inversion from x at t=0 gives sqrt(a_T) x0 + sqrt(1 - a_T) eps."""
    from vedit_cli.backends.svdiff.sampling import ddim_invert, inversion_timesteps, unet_passes

    alphas_cumprod = scaled_linear_alphas_cumprod().float()
    clean, eps = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    grid = inversion_timesteps(torch.tensor([499, 339, 179]))
    assert grid == [0, 179, 339, 499]
    start = alphas_cumprod[0].sqrt() * clean + (1 - alphas_cumprod[0]).sqrt() * eps
    calls = []
    inverted = ddim_invert(lambda x, t: calls.append(int(t)) or eps, start, grid, alphas_cumprod)
    expected = alphas_cumprod[499].sqrt() * clean + (1 - alphas_cumprod[499]).sqrt() * eps
    assert calls == [0, 179, 339] and torch.allclose(inverted, expected, atol=1e-5)
    assert unet_passes(3, guidance=True, init="inversion") == 9 and unet_passes(3, True, "noise") == 6


def test_inversion_reads_a_v_prediction_base_as_its_noise_and_passes_epsilon_through():
    """A v-predicting base (the tiny world's, SD2.x's) inverts as an epsilon one does: v -> eps by the schedule."""
    from types import SimpleNamespace

    from vedit_cli.backends.svdiff.sampling import as_noise, ddim_invert, inversion_timesteps
    from vedit_cli.errors import ConfigError

    alphas_cumprod = scaled_linear_alphas_cumprod().float()
    clean, eps = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    v_base = SimpleNamespace(config=SimpleNamespace(prediction_type="v_prediction"), alphas_cumprod=alphas_cumprod)

    def true_v(x, t):  # the exact velocity of x = sqrt(a) clean + sqrt(1 - a) eps at t
        a = alphas_cumprod[int(t)]
        return as_noise(a.sqrt() * eps - (1 - a).sqrt() * clean, x, t, v_base)

    grid = inversion_timesteps(torch.tensor([499, 339, 179]))
    start = alphas_cumprod[0].sqrt() * clean + (1 - alphas_cumprod[0]).sqrt() * eps
    expected = alphas_cumprod[499].sqrt() * clean + (1 - alphas_cumprod[499]).sqrt() * eps
    assert torch.allclose(ddim_invert(true_v, start, grid, alphas_cumprod), expected, atol=1e-4)
    epsilon_base = SimpleNamespace(config=SimpleNamespace(prediction_type="epsilon"), alphas_cumprod=alphas_cumprod)
    assert as_noise(eps, clean, torch.tensor(5), epsilon_base) is eps
    with pytest.raises(ConfigError, match="sample"):
        as_noise(eps, clean, torch.tensor(5), SimpleNamespace(config=SimpleNamespace(prediction_type="sample")))


# -- eve ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eve_weights(tmp_path_factory):
    return tiny.save_eve_weights(tmp_path_factory.mktemp("eve"))


@pytest.fixture(scope="module")
def eve_editor(eve_weights):
    run = resolve_run(ModelConfig(backend="eve", weights_dir=eve_weights, device="cpu", dtype="float32", steps=3,
                                  window=4, overlap=2, chunk_windows=3, guidance_scale=7.5))
    return create_editor(run)


def test_eve_schedule_is_the_checkpoints_stored_config_with_trailing_spacing(eve_editor, eve_weights):
    import json

    scheduler = eve_editor.stack.scheduler
    stored = json.loads((eve_weights / "sd15" / "scheduler" / "scheduler_config.json").read_text())
    for key in ("beta_start", "beta_end", "beta_schedule", "steps_offset", "clip_sample", "set_alpha_to_one"):
        assert scheduler.config[key] == stored[key], key
    assert type(scheduler).__name__ == "DDIMScheduler" and scheduler.config.timestep_spacing == "trailing"
    assert torch.allclose(scheduler.alphas_cumprod.double(), scaled_linear_alphas_cumprod(), atol=1e-6)


def test_eve_starts_at_the_last_timestep_and_the_anchor_shares_the_windows_schedule(eve_editor):
    """Frame 0's anchor latent replaces a frame in every window at every step: it must be at the windows' noise level."""
    editor = eve_editor
    calls = record_unet_calls(editor.stack.unet)
    editor.prepare("make it winter")
    source = frames(8)
    editor.edit(source)
    steps = len(editor.stack.scheduler.timesteps)
    anchor_calls, window_calls = calls[:steps], calls[steps:]
    anchor_timesteps = [timestep for _, timestep in anchor_calls]
    assert anchor_timesteps[0] == 999 and anchor_timesteps == editor.stack.scheduler.timesteps.tolist()
    assert all(sample.shape[2] == 1 for sample, _ in anchor_calls)  # frame 0 alone
    windows_per_step = len(window_calls) // steps
    assert windows_per_step == 3  # 8 frames, windows of 4 overlapping by 2
    for step, timestep in enumerate(anchor_timesteps):
        for sample, window_timestep in window_calls[step * windows_per_step:(step + 1) * windows_per_step]:
            assert window_timestep == timestep
            # The window's frame 0 (the clip's frame 0, or the prepended anchor) holds the anchor's x_t at this step.
            assert torch.allclose(sample[1, :, 0], anchor_calls[step][0][1, :, 0], atol=1e-6)
    first = window_calls[0][0][1]  # [C, T, h, w] of the first window at step 0: pure noise, unit variance
    assert 0.7 < float(first.std()) < 1.3
