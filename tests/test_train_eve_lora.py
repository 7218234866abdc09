"""`vedit train eve-lora` (FDD, EVE sec. 3.2-3.3) on the tiny eve stack (SD1.5-shaped backbone + ip2p ControlNet +
AnimateDiff), 4-frame 32x32 windows, k = 2: L_G reaches only the LoRA and L_D only the heads, the teachers are the
stack with the LoRA off, K-bin timesteps fall one per bin, the saved LoRA loads with eve's attach_lora, no
ground-truth edit is ever read, --resume continues exactly, and a trained LoRA edits through `vedit edit`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests import tiny
from tests.io_media import make_clip
from vedit_cli.errors import ConfigError, TrainingDataError
from vedit_cli.train.config import EveLoraConfig, TrainerConfig
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes import eve_lora as recipe_module

SIZE, WINDOW, K = 32, 4, 2
INSTRUCTION, CAPTION = "make it look like winter", "a snowy test pattern"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Clips:
    """An in-memory sample source: random 6-frame 32x32 clips, inputs only (or with `extra` keys)."""

    def __init__(self, count: int = 3, extra: dict | None = None):
        self.count, self.extra = count, extra or {}

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> dict:
        frames = np.random.default_rng(index).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
        return {"frames": frames, "instruction": INSTRUCTION, "caption": CAPTION, **self.extra}

    def describe(self, index: int) -> str:
        return f"clip {index}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return build_world(tmp_path_factory.mktemp("eve_lora_train"))


def build_world(root: Path) -> dict:
    """W with tiny sd15, controlnet-ip2p and animatediff-motion-adapter; one 8-frame 32x32 clip; one table."""
    weights = tiny.save_eve_weights(root / "W")
    clips = root / "clips"
    clips.mkdir()
    make_clip(clips / "pattern.mp4", seconds=1, size=f"{SIZE}x{SIZE}", rate="8", audio=False)  # 8 frames
    table = root / "instructions.csv"
    table.write_text(f"instruction,caption\n{INSTRUCTION},{CAPTION}\n")
    return {"root": root, "weights": weights, "clips": clips, "table": table}


def make_config(world: dict, folder: Path, **changes) -> EveLoraConfig:
    weights = world["weights"]
    trainer = TrainerConfig(max_steps=2, batch_size=1, cpu=True, learning_rate=1e-3, checkpoint_every=1)
    config = EveLoraConfig(base=weights / "sd15", controlnet=weights / "controlnet-ip2p",
                           motion_adapter=weights / "animatediff-motion-adapter", data=Clips(),
                           output_dir=folder / "eve-lora", trainer=trainer, resolution=SIZE, window_frames=WINDOW,
                           k_steps=K, lora_rank=4, lora_alpha=4, teacher_steps=2, sds_only_steps=1)
    return dataclasses.replace(config, **changes)


def make_recipe(world: dict, folder: Path, lora_scale: float = 0.0, **changes):
    """A recipe set up on the CPU; lora_scale > 0 gives every LoRA tensor seeded random values (a trained LoRA's
    B is non-zero; a fresh one's is zero), so that the LoRA changes the student."""
    recipe = recipe_module.EveLoraRecipe(make_config(world, folder, **changes))
    recipe.setup(SimpleNamespace(mixed_precision="no", device=torch.device("cpu")))
    if lora_scale:
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for name, parameter in recipe.model.unet.named_parameters():
                if ".lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * lora_scale)
    return recipe


def one_batch(recipe, seeds=(11,)) -> dict:
    samples = [recipe.prepare_sample(recipe.source.load(index), seed) for index, seed in enumerate(seeds)]
    return {**recipe.collate(samples), "sample_seed": torch.tensor(seeds)}


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_generator_step_reaches_only_the_lora_and_discriminator_step_only_the_heads(world, tmp_path):
    recipe = make_recipe(world, tmp_path, lora_scale=0.05)
    model = recipe.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if ".lora_" in name}
    heads = {name for name in trainable if name.startswith(recipe_module.HEADS)}
    assert lora and heads and trainable == lora | heads
    assert not any("motion_modules" in name or "controlnet" in name for name in lora)
    terms = model(recipe.inputs(one_batch(recipe)), adversarial=True)
    assert all(terms[name].shape == (1,) and torch.isfinite(terms[name]).all() for name in terms)

    terms["generator"].sum().backward(retain_graph=True)
    reached = gradients(model)
    assert set(reached) == lora  # every LoRA tensor, nothing else (heads read detached, backbone frozen)
    assert all(reached[name].abs().sum() > 0 for name in lora)
    model.zero_grad(set_to_none=True)

    terms["discriminator"].sum().backward()
    reached = gradients(model)
    assert set(reached) == heads  # the student's latents read detached
    assert sum(float(grad.abs().sum()) for grad in reached.values()) > 0


def test_sds_phase_has_no_adversarial_term_and_keeps_the_heads_in_the_graph(world, tmp_path):
    recipe = make_recipe(world, tmp_path, lora_scale=0.05)
    terms = recipe.model(recipe.inputs(one_batch(recipe)), adversarial=False)
    assert "g_edit" not in terms and float(terms["discriminator"].detach().abs().sum()) == 0
    (terms["generator"] + terms["discriminator"]).sum().backward()
    heads = {n: g for n, g in gradients(recipe.model).items() if n.startswith(recipe_module.HEADS)}
    assert heads and all(float(grad.abs().sum()) == 0 for grad in heads.values())  # reached, with weight 0


def test_teachers_are_the_stack_with_the_lora_off(world, tmp_path):
    plain, aligned = make_recipe(world, tmp_path), make_recipe(world, tmp_path, lora_scale=0.05)
    batch = one_batch(plain)
    inputs = plain.inputs(batch)
    t = torch.tensor([500])
    latents = inputs["noise"]
    with torch.no_grad():
        for teacher in ("edit_teacher", "video_teacher"):
            torch.testing.assert_close(getattr(aligned.model, teacher)(latents, t, inputs),
                                       getattr(plain.model, teacher)(latents, t, inputs), rtol=0, atol=0)
        student = aligned.model.student_output(latents, t, inputs)
        assert (student - plain.model.student_output(latents, t, inputs)).abs().max() > 1e-4
        # the edit teacher edits frame by frame: one frame alone gives the same output
        alone = {**inputs, "hints": inputs["hints"][:, :1]}
        torch.testing.assert_close(aligned.model.edit_teacher(latents[:, :, :1], t, alone),
                                   aligned.model.edit_teacher(latents, t, inputs)[:, :, :1], rtol=1e-4, atol=1e-5)


def test_kbin_sampling_draws_one_timestep_from_each_bin():
    total = 1000
    draws = recipe_module.kbin_timesteps(SampleRandom(range(400)), 3, total)
    assert draws.shape == (400, 3) and draws.dtype == torch.long
    assert (draws[:, 0] == total - 1).all()  # the first step runs on pure noise, at the last timestep
    for column, (low, high) in zip((1, 2), ((333, 667), (0, 333))):
        values = draws[:, column]
        assert values.min() >= low and values.max() < high  # one draw per bin, highest bin first
        assert values.min() < low + 20 and values.max() > high - 20  # spread over the whole bin
    assert recipe_module.bin_edges(3, total) == [0, 333, 667, 1000]
    assert recipe_module.kbin_timesteps(SampleRandom([1]), 1, total).tolist() == [[999]]
    again = recipe_module.kbin_timesteps(SampleRandom(range(400)), 3, total)
    assert torch.equal(draws, again)  # per-sample seeds: the same draws on resume
    assert recipe_module.fixed_timesteps(3, total, 2).tolist() == [[999, 500, 166]] * 2


def test_sds_gradient_is_the_weighted_teacher_residual(world):
    import json as json_module

    config = json_module.loads((world["weights"] / "sd15" / "scheduler" / "scheduler_config.json").read_text())
    schedule = recipe_module.DdimSchedule(config)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 8, 8, generator=generator, requires_grad=True)
    noise, output = torch.randn(2, 4, 3, 8, 8, generator=generator), torch.randn(2, 4, 3, 8, 8, generator=generator)
    t = torch.tensor([100, 800])
    x_t = schedule.add_noise(x0.detach(), noise, t)
    count = x0[0].numel()
    expected = {"sds": (1 - schedule.alphas_cumprod[t]).reshape(-1, 1, 1, 1, 1) * (output - noise),
                "uniform": output - noise}
    difference = x0.detach() - schedule.original(output, t, x_t)
    expected["dmd"] = difference / difference.abs().flatten(1).mean(dim=1).reshape(-1, 1, 1, 1, 1)
    for weighting, residual in expected.items():
        (gradient,) = torch.autograd.grad(recipe_module.sds_loss(x0, output, x_t, noise, t, schedule,
                                                                 weighting).sum(), x0)
        torch.testing.assert_close(gradient, residual / count, rtol=1e-5, atol=1e-8)


def test_student_sampler_backpropagates_through_every_step(world, tmp_path):
    recipe = make_recipe(world, tmp_path, lora_scale=0.05)
    model, inputs = recipe.model, recipe.inputs(one_batch(recipe))
    timesteps, noise = inputs["timesteps"], inputs["noise"]
    calls = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[1].tolist()))
    x0 = model.generate(inputs, timesteps)
    handle.remove()
    assert calls == [[999], [int(timesteps[0, 1])]]  # pure noise at T-1, then the second bin's draw
    # the same two steps with the graph cut between them: same values, but the LoRA's gradient differs by the
    # first step's share, which generate() keeps
    first = model.schedule.step(model.student_output(noise, timesteps[:, 0], inputs), timesteps[:, 0], noise,
                                timesteps[:, 1]).detach()
    cut = model.schedule.step(model.student_output(first, timesteps[:, 1], inputs), timesteps[:, 1], first, None)
    torch.testing.assert_close(cut, x0, rtol=1e-5, atol=1e-6)
    lora = [p for name, p in model.named_parameters() if ".lora_" in name]
    full_grads = torch.autograd.grad(x0.square().sum(), lora)
    cut_grads = torch.autograd.grad(cut.square().sum(), lora)
    assert max(float((a - b).abs().max()) for a, b in zip(full_grads, cut_grads)) > 1e-6


def test_gradient_checkpointing_keeps_the_generator_gradient(world, tmp_path):
    """Teacher and discriminator passes run with the LoRA off: checkpointing is off there (a recomputation would
    see the LoRA back on), so the LoRA's gradient is the same with and without it."""
    grads = []
    for checkpointing in (False, True):
        recipe = make_recipe(world, tmp_path, lora_scale=0.05)
        if checkpointing:
            recipe.model.enable_gradient_checkpointing()
        terms = recipe.model(recipe.inputs(one_batch(recipe)), adversarial=True)
        terms["generator"].sum().backward()
        grads.append({name: grad.clone() for name, grad in gradients(recipe.model).items()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-7)


def test_validation_writes_the_input_over_the_students_edit(world, tmp_path):
    from PIL import Image

    recipe = make_recipe(world, tmp_path)
    with torch.no_grad():
        recipe.validate(recipe.model, 1, tmp_path)
    assert Image.open(tmp_path / "000.png").size == (WINDOW * SIZE, 2 * SIZE)


def test_saved_lora_round_trips_through_eves_attach_lora(world, tmp_path):
    from diffusers import MotionAdapter, UNet2DConditionModel

    from vedit_cli.backends.eve.components import LORA_FILE, attach_lora, motion_unet

    recipe = make_recipe(world, tmp_path, lora_scale=0.05, lora_alpha=8)  # scale alpha/rank = 2 folded into B
    output = recipe.save(recipe.model)
    assert sorted(p.name for p in output.iterdir()) == [LORA_FILE]
    weights = world["weights"]
    loaded = motion_unet(UNet2DConditionModel.from_pretrained(str(weights / "sd15"), subfolder="unet"),
                         MotionAdapter.from_pretrained(str(weights / "animatediff-motion-adapter")))
    attach_lora(loaded, output / LORA_FILE, 1.0)
    inputs = recipe.inputs(one_batch(recipe))
    t = torch.tensor([400])
    with torch.no_grad():
        trained = recipe_module.video_stack_output(recipe.model.unet, inputs["noise"], t, inputs["caption"])
        again = recipe_module.video_stack_output(loaded, inputs["noise"], t, inputs["caption"])
        with recipe_module.teacher_mode(recipe.model.unet):
            base = recipe_module.video_stack_output(recipe.model.unet, inputs["noise"], t, inputs["caption"])
    torch.testing.assert_close(again, trained, rtol=1e-4, atol=1e-5)
    assert (trained - base).abs().max() > 1e-3  # the LoRA does change the output


def test_ground_truth_edits_are_refused(world, tmp_path):
    with pytest.raises(TrainingDataError, match="ground-truth edits"):
        recipe_module.train_eve_lora(make_config(world, tmp_path, data=Clips(extra={"edited": np.zeros(3)})))
    assert not (tmp_path / "eve-lora").exists() and not (tmp_path / "eve-lora.training").exists()
    recipe = make_recipe(world, tmp_path)
    with pytest.raises(TrainingDataError, match="never reads them"):
        recipe.prepare_sample({**recipe.source.load(0), "edited_frames": np.zeros(3)}, 0)
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"input,instruction,caption,edited\n{world['clips'] / 'pattern.mp4'},{INSTRUCTION},x,e.mp4\n")
    with pytest.raises(TrainingDataError, match="ground-truth edits"):
        recipe_module.train_eve_lora(make_config(world, tmp_path, data=manifest))


def test_one_instruction_table_is_crossed_with_every_clip(world, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text(f"instruction,caption\n{INSTRUCTION},{CAPTION}\nmake it red,\n")
    source = recipe_module.open_edit_windows(make_config(world, tmp_path, data=world["clips"], instructions=table))
    assert len(source) == 2 * 2  # 8 frames = 2 windows of 4, x 2 instructions
    assert source.summary()["clips"] == 1 and source.load(0)["frames"].shape == (WINDOW, SIZE, SIZE, 3)
    assert {(source.load(i)["instruction"], source.load(i)["caption"]) for i in range(4)} == {
        (INSTRUCTION, CAPTION), ("make it red", "make it red")}  # an empty caption becomes the instruction
    with pytest.raises(TrainingDataError, match="--instructions TABLE.csv"):
        recipe_module.open_edit_windows(make_config(world, tmp_path, data=world["clips"]))


def run_main(*args) -> tuple[int, str, str]:
    """`vedit ARGS` through the real entry point (cli.main), in this process; (exit code, stdout, stderr)."""
    import contextlib
    import io

    from vedit_cli import cli

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["vedit", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        sys.argv = argv
    return exited.value.code or 0, out.getvalue(), err.getvalue()


def cli_train(folder: Path, world: dict, *extra) -> dict:
    weights = world["weights"]
    code, out, err = run_main(
        "train", "eve-lora", "--base-dir", weights / "sd15", "--controlnet-dir", weights / "controlnet-ip2p",
        "--motion-adapter-dir", weights / "animatediff-motion-adapter", "--videos", world["clips"],
        "--instructions", world["table"], "--out", folder / "eve-lora", "--resolution", SIZE,
        "--window-frames", WINDOW, "--k-steps", K, "--lora-rank", 4, "--lora-alpha", 4, "--teacher-steps", 2,
        "--sds-only-steps", 1, "--learning-rate", 1e-3, "--checkpoint-every", 1, "--cpu", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory) -> dict:
    """Through the CLI: 2 steps then --resume to 3, and 3 steps in one go (steps 1 and 2 adversarial)."""
    resumed, straight = tmp_path_factory.mktemp("resumed"), tmp_path_factory.mktemp("straight")
    first = cli_train(resumed, world, "--max-steps", 2)
    second = cli_train(resumed, world, "--max-steps", 3, "--resume")
    whole = cli_train(straight, world, "--max-steps", 3)
    return {"summaries": (first, second, whole), "resumed": resumed / "eve-lora", "straight": straight / "eve-lora"}


def lora_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def test_resume_continues_to_the_same_lora_as_an_uninterrupted_run(runs):
    first, second, whole = runs["summaries"]
    assert (first["start_step"], first["steps"]) == (0, 2) and (second["start_step"], second["steps"]) == (2, 3)
    assert whole["steps"] == 3 and first["data"]["segments"] == 2
    resumed, straight = lora_tensors(runs["resumed"]), lora_tensors(runs["straight"])
    assert resumed.keys() == straight.keys() and all(key.startswith("unet.") for key in straight)
    assert any(float(value.abs().max()) > 0 for key, value in straight.items() if ".lora_B." in key)  # it trained
    # same draws, data order and optimizer state (LoRA and heads): bit-identical here (CPU, float32); the
    # tolerance leaves room for other CPUs' kernels
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-7)
    assert second["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_trained_lora_loads_and_edits_through_the_cli(world, runs, tmp_path):
    weights = tmp_path / "W"
    weights.mkdir()
    for name in ("sd15", "controlnet-ip2p", "animatediff-motion-adapter"):
        (weights / name).symlink_to(world["weights"] / name, target_is_directory=True)
    (weights / "eve-lora").symlink_to(runs["straight"], target_is_directory=True)
    clip = make_clip(tmp_path / "in.mp4", seconds=0.5, size="64x64", rate="8", audio=False)  # 4 frames
    code, out, err = run_main("edit", clip, INSTRUCTION, "--backend", "eve", "--weights-dir", weights, "--caption",
                              CAPTION, "--steps", 2, "--size", 64, "--dtype", "float32", "--device", "cpu",
                              "--no-download", "-o", tmp_path / "out.mp4", "--json", "--quiet")
    assert code == 0, err[-2000:]
    report = json.loads(out)["clips"][0]
    assert report["status"] == "ok" and report["frames"] == 4 and (tmp_path / "out.mp4").is_file()
    assert "alignment LoRA x1" in report["editor"]


def test_bad_input_is_one_line_and_a_non_zero_exit(world, tmp_path):
    weights = world["weights"]
    common = ("--base-dir", weights / "sd15", "--motion-adapter-dir", weights / "animatediff-motion-adapter",
              "--videos", world["clips"], "--instructions", world["table"], "--out", tmp_path / "out", "--cpu")
    cases = [
        (("--controlnet-dir", tmp_path / "nowhere"), "edit adapter (ControlNet) "),
        (("--controlnet-dir", weights / "controlnet-ip2p", "--k-steps", 0), "--k-steps must be at least 1"),
    ]
    for extra, message in cases:
        code, out, err = run_main("train", "eve-lora", *common, *extra)
        lines = err.strip().splitlines()
        assert code == 1 and out == "" and len(lines) == 1 and message in lines[0], err
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="give them once"):
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"input,instruction\n{world['clips'] / 'pattern.mp4'},{INSTRUCTION}\n")
        recipe_module.train_eve_lora(make_config(world, tmp_path, data=manifest, instructions=world["table"]))
