"""LCM-LoRA distillation (vedit_cli.train.recipes.lcm_lora) on a tiny random SD base: only the LoRA trains, the file
loads through the svdiff backend's fuse_lcm_lora and changes the UNet exactly as the trained student, the solver and
boundary scalings are the hand formulas, and a resumed run (EMA included) equals a straight one."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

RESUME_TOLERANCE = 1e-6  # one process on the CPU, the same arithmetic in the same order: bit-identical in practice
# Summation order only: Adam turns the few lora_B gradients that are ~0 (25 of 38k here) into +-lr steps whose sign
# the order decides, 3e-3 apart after 3 steps; an EMA moved at every micro-batch instead is 0.9 (online LoRA 0.04) apart
ACCUMULATION_TOLERANCE = 1e-2
CAPTIONS = ("a red square", "a blue circle", "a green field", "a grey sky", "a dark room", "a bright day")


class Captions:
    """Six random 32x32 images with captions (the recipe's data protocol)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in CAPTIONS]

    def __len__(self) -> int:
        return len(CAPTIONS)

    def load(self, index: int) -> dict:
        return {"image": self.images[index], "caption": CAPTIONS[index]}

    def describe(self, index: int) -> str:
        return f"image {index}"


def _config(base: Path, output: Path, **trainer_fields):
    from vedit_cli.train.config import LcmLoraConfig, TrainerConfig

    trainer = {"work_dir": output.with_name(output.name + ".training"), "max_steps": 3, "batch_size": 2, "cpu": True,
               "learning_rate": 1e-3, "checkpoint_every": 1} | trainer_fields
    return LcmLoraConfig(base=base, data=Captions(), output_dir=output, resolution=32, random_flip=False,
                         lora_rank=4, lora_alpha=8, trainer=TrainerConfig(**trainer))


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def straight(sd15_base, tmp_path_factory, one_torch_thread):
    """A 3-step run (validation at step 3), with its recipe kept for inspection."""
    from vedit_cli.train.recipes import lcm_lora

    recipes = []

    class Kept(lcm_lora.LcmLoraRecipe):
        def __init__(self, config):
            super().__init__(config)
            recipes.append(self)

    output = tmp_path_factory.mktemp("lcm") / "lcm-lora"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lcm_lora, "LcmLoraRecipe", Kept)
        lcm_lora.train_lcm_lora(_config(sd15_base, output, validate_every=3))
    return output, recipes[0]


def test_only_the_lora_trains(straight, sd15_base):
    from tests.train_helpers import unet_weights

    output, recipe = straight
    student = recipe.model
    trainable = [name for name, parameter in student.named_parameters() if parameter.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    base = unet_weights(sd15_base)
    for name, parameter in student.unet.named_parameters():
        if not parameter.requires_grad:  # peft keeps the original layer as `<layer>.base_layer`
            assert torch.equal(parameter.detach(), base[name.replace(".base_layer", "")]), name
    saved = _load(output / "pytorch_lora_weights.safetensors")
    assert saved.keys() == {f"unet.{name.replace('.default', '')}" for name in student.lora_names}
    assert any(float(value.abs().max()) > 0 for key, value in saved.items() if ".lora_B." in key)
    work_dir = output.with_name("lcm-lora.training")
    checkpoint = _load(work_dir / "checkpoints" / "checkpoint-0000003" / "model.safetensors")
    assert set(checkpoint) == {f"unet.{name}" for name in student.lora_names} | {
        f"ema_lora.{name.replace('.', '__')}" for name in student.lora_names}  # no frozen base in checkpoints
    online = dict(student.unet.named_parameters())
    moved = max(float((ema - online[name].detach()).abs().max()) for name, ema in student.ema_tensors().items())
    assert moved > 0  # the target's LoRA is an average, not the online one
    inputs = (torch.randn(1, 4, 16, 16), torch.tensor([300]), torch.randn(1, 77, 32))
    with torch.no_grad():
        assert not torch.allclose(student.target_output(*inputs), student(*inputs))  # the target runs the EMA LoRA
    assert len(list((work_dir / "validation" / "step-0000003").glob("*.png"))) == 4


def test_the_file_loads_through_fuse_lcm_lora_and_matches_the_student(straight, sd15_base):
    from vedit_cli.backends.svdiff.loading import fuse_lcm_lora
    from vedit_cli.train.recipes.sd_parts import load_sd_unet

    output, recipe = straight
    sample, timestep = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    unet = load_sd_unet(sd15_base).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft warns when the file misses some of its LoRA layers
        plain = unet(sample, timestep, text).sample
        fuse_lcm_lora(unet, output / "pytorch_lora_weights.safetensors")
        fused = unet(sample, timestep, text).sample
        student = recipe.model.eval()(sample, timestep, text)
    change = float((fused - plain).abs().max())
    assert change > 1e-4
    assert float((fused - student).abs().max()) < 1e-3 * change  # lora_alpha / rank (2 here) is in the file


def test_solver_step_and_boundary_scalings_match_the_formulas():
    from vedit_cli.models.parameterisation import predicted_noise, predicted_original
    from vedit_cli.train.recipes.lcm_lora import DDIMSolver, boundary_scalings

    alphas_cumprod = torch.linspace(0.99, 0.01, 20)
    solver = DDIMSolver(alphas_cumprod, ddim_timesteps=4)  # k = 5: grid 4, 9, 14, 19
    assert solver.timesteps.tolist() == [4, 9, 14, 19]
    start, end = solver.start_and_end(torch.tensor([0, 2]))
    assert start.tolist() == [4, 14] and end.tolist() == [0, 9]
    x0, noise = torch.full((2, 1, 1, 1), 0.7), torch.full((2, 1, 1, 1), -0.3)
    stepped = solver.step(x0, noise, torch.tensor([0, 2]))
    for row, previous in enumerate((alphas_cumprod[0], alphas_cumprod[9])):  # n = 0 steps to alpha_bar[0]
        assert torch.isclose(stepped[row, 0, 0, 0], previous.sqrt() * 0.7 + (1 - previous).sqrt() * -0.3)
    c_skip, c_out = boundary_scalings(torch.tensor([0, 9]), timestep_scaling=10.0)
    assert torch.allclose(c_skip, torch.tensor([1.0, 0.25 / (90.0**2 + 0.25)]))
    assert torch.allclose(c_out, torch.tensor([0.0, 90.0 / (90.0**2 + 0.25) ** 0.5]))
    alphas, sigmas = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    t, eps, clean = torch.tensor([9]), torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    noisy = alphas[9] * clean + sigmas[9] * eps
    for kind, output in (("epsilon", eps), ("v_prediction", alphas[9] * eps - sigmas[9] * clean), ("sample", clean)):
        assert torch.allclose(predicted_original(output, t, noisy, kind, alphas, sigmas), clean, atol=1e-5), kind
        assert torch.allclose(predicted_noise(output, t, noisy, kind, alphas, sigmas), eps, atol=1e-4), kind


def test_a_resumed_run_equals_a_straight_one_ema_included(straight, sd15_base, tmp_path):
    from vedit_cli.train.recipes.lcm_lora import train_lcm_lora

    output, _ = straight
    resumed = tmp_path / "lcm-lora"
    train_lcm_lora(_config(sd15_base, resumed, max_steps=2))
    train_lcm_lora(_config(sd15_base, resumed, max_steps=3, resume=True))
    for relative in ("pytorch_lora_weights.safetensors",
                     "../lcm-lora.training/checkpoints/checkpoint-0000003/model.safetensors"):  # LoRA + its EMA
        reference, weights = _load(output / relative), _load(resumed / relative)
        assert reference.keys() == weights.keys()
        assert max(float((weights[key] - reference[key]).abs().max()) for key in weights) < RESUME_TOLERANCE


def test_gradient_accumulation_matches_the_bigger_batch_ema_included(straight, sd15_base, tmp_path):
    """The EMA moves once per optimizer step, not once per micro-batch."""
    from vedit_cli.train.recipes.lcm_lora import train_lcm_lora

    output, _ = straight
    accumulated = tmp_path / "lcm-lora"
    train_lcm_lora(_config(sd15_base, accumulated, batch_size=1, gradient_accumulation_steps=2))
    checkpoint = "../lcm-lora.training/checkpoints/checkpoint-0000003/model.safetensors"
    reference, weights = _load(output / checkpoint), _load(accumulated / checkpoint)
    for up in (".lora_B.", "__lora_B__"):  # the online LoRA's and its EMA's: zero at the start, so their size is
        keys = [key for key in reference if up in key]  # how far they moved
        apart = torch.cat([(weights[key] - reference[key]).flatten() for key in keys]).norm()
        assert float(apart / torch.cat([reference[key].flatten() for key in keys]).norm()) < ACCUMULATION_TOLERANCE


def test_bad_options_are_one_line(sd15_base, tmp_path):
    import dataclasses

    from vedit_cli.errors import ConfigError
    from vedit_cli.train.recipes.lcm_lora import train_lcm_lora

    config = _config(sd15_base, tmp_path / "out")
    for change, message in (({"loss_type": "l1"}, "--loss-type"), ({"guidance_range": (5.0, 3.0)}, "--guidance"),
                            ({"ddim_timesteps": 2000}, "--ddim-timesteps"), ({"ema_decay": 1.0}, "--ema-decay")):
        with pytest.raises(ConfigError, match=message):
            train_lcm_lora(dataclasses.replace(config, **change))
    assert not (tmp_path / "out.training").exists()
