"""`vedit train svdiff-memory` on a tiny SD1.5-shaped base and a 24-frame 32x32 clip: only the memory learns, the
memory is carried across clips with gradients truncated at their boundaries, checkpointing runs every hook once,
--resume continues exactly, and the output loads and edits through `vedit edit --backend svdiff`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests import tiny
from tests.io_media import make_clip
from vedit_cli.errors import ConfigError, TrainingDataError, WeightsMissingError
from vedit_cli.models.memory_attention import WEIGHTS_FILE, load_memory_weights
from vedit_cli.train.config import SvdiffMemoryConfig, TrainerConfig
from vedit_cli.train.recipes import svdiff_memory as recipe_module
from vedit_cli.train.recipes.sd_parts import load_sd_unet

SIZE, SEGMENT, CLIP = 32, 8, 4
CAPTION = "a moving test pattern"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A weights dir W with tiny sd15, lcm-lora-sdv1-5 and taesd, and a folder holding one 24-frame 32x32 clip."""
    root = tmp_path_factory.mktemp("svdiff_train")
    weights = root / "W"
    tiny.save_sd15(weights / "sd15")
    tiny.save_lcm_lora(weights / "lcm-lora-sdv1-5")
    tiny.save_taesd(weights / "taesd")
    clips = root / "clips"
    clips.mkdir()
    make_clip(clips / "pattern.mp4", seconds=3, size=f"{SIZE}x{SIZE}", rate="8", audio=False)  # 24 frames
    return {"root": root, "weights": weights, "base": weights / "sd15", "clips": clips}


def make_config(world: dict, folder: Path, **changes) -> SvdiffMemoryConfig:
    trainer = TrainerConfig(max_steps=2, batch_size=1, cpu=True, learning_rate=1e-3, checkpoint_every=1)
    config = SvdiffMemoryConfig(base=world["base"], data=world["clips"], output_dir=folder / "svdiff-memory",
                                trainer=trainer, resolution=SIZE, segment_frames=SEGMENT, clip_frames=CLIP,
                                caption=CAPTION, caption_dropout=0.0)
    return dataclasses.replace(config, **changes)


def make_recipe(world: dict, folder: Path, output_scale: float = 0.0, **changes):
    """A recipe set up on the CPU; output_scale > 0 gives the memory random (seeded) output projections, as a
    trained memory has, so that it changes the UNet's output."""
    recipe = recipe_module.SvdiffMemoryRecipe(make_config(world, folder, **changes))
    recipe.setup(SimpleNamespace(mixed_precision="no", device=torch.device("cpu")))
    if output_scale:
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for block in recipe.memory.blocks:
                weight = block.attention.to_out[0].weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * output_scale / weight.shape[1] ** 0.5)
    return recipe


def one_batch(recipe, seeds=(11, 12)) -> dict:
    samples = [recipe.prepare_sample(recipe.source.load(index), seed) for index, seed in enumerate(seeds)]
    return {**recipe.collate(samples), "sample_seed": torch.tensor(seeds)}


def memory_gradients(recipe) -> dict:
    return {name: p.grad.clone() for name, p in recipe.memory.named_parameters() if p.grad is not None}


def test_data_is_segments_of_the_clip_with_its_caption(world, tmp_path):
    recipe = make_recipe(world, tmp_path)
    assert len(recipe.source) == (24 - SEGMENT) // CLIP + 1  # a segment starts at every clip boundary
    sample = recipe.source.load(1)
    assert sample["frames"].shape == (SEGMENT, SIZE, SIZE, 3) and sample["start"] == CLIP
    assert sample["caption"] == CAPTION
    prepared = recipe.prepare_sample(sample, 0)
    assert prepared["frames"].shape == (SEGMENT, 3, SIZE, SIZE) and prepared["frames"].dtype == torch.uint8
    # --fps halves the rate of this 8 fps clip: every 2nd frame, 12 usable -> segments at 0 and 4 (x2 frames)
    halved = recipe_module.CaptionedSegments(world["clips"], SEGMENT, CLIP, fps=4.0, caption=CAPTION)
    assert len(halved) == 2 and halved.load(1)["start"] == 2 * CLIP
    assert recipe_module.frame_stride(30.0, 8.0) == 4 and recipe_module.frame_stride(10.0, 24.0) == 1


def test_only_memory_parameters_train_and_every_one_gets_a_gradient_after_the_first_step(world, tmp_path):
    recipe = make_recipe(world, tmp_path)
    assert not any(p.requires_grad for p in recipe.unet.parameters())
    assert recipe.model is recipe.memory and all(p.requires_grad for p in recipe.model.parameters())
    batch = one_batch(recipe)
    names = {name for name, _ in recipe.memory.named_parameters()}
    optimizer = torch.optim.AdamW(recipe.memory.parameters(), lr=1e-3)
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        losses = recipe.loss(recipe.model, batch, step)
        assert losses.shape == (2,) and torch.isfinite(losses).all()
        losses.sum().backward()
        assert all(p.grad is None for p in recipe.unet.parameters())
        gradients = memory_gradients(recipe)
        assert gradients.keys() == names  # every memory parameter is in the graph, from the first step
        nonzero = {name for name, grad in gradients.items() if grad.abs().sum() > 0}
        if step == 0:  # zero output projections: only they see a gradient
            assert nonzero == {name for name in names if ".to_out.0." in name}
        else:  # the first step made them non-zero: the gradient reaches every memory parameter
            assert nonzero == names
        optimizer.step()


def test_memory_carried_across_clips_changes_the_next_clips_first_frame(world, tmp_path):
    recipe = make_recipe(world, tmp_path, output_scale=2.0)
    batch = one_batch(recipe)
    with torch.no_grad():
        carried = recipe.frame_losses(batch, carry=True)
        reset = recipe.frame_losses(batch, carry=False)  # the memory restarted from M^0 at the boundary
    assert carried.shape == (2, SEGMENT)
    torch.testing.assert_close(carried[:, :CLIP], reset[:, :CLIP], rtol=0, atol=0)  # same draws before it
    assert (carried[:, CLIP] - reset[:, CLIP]).abs().min() > 1e-6  # the first frame after the boundary differs
    untrained = make_recipe(world, tmp_path)  # zero output projections: the memory changes nothing
    with torch.no_grad():
        torch.testing.assert_close(untrained.frame_losses(batch, carry=True),
                                   untrained.frame_losses(batch, carry=False), rtol=0, atol=0)


def test_gradient_flows_through_the_memory_within_a_clip_and_is_cut_at_the_boundary(world, tmp_path):
    recipe = make_recipe(world, tmp_path, output_scale=2.0)
    batch = one_batch(recipe)
    seen = []  # before each frame's UNet call: (memories carried, do they carry a graph)
    handle = recipe.unet.register_forward_pre_hook(lambda module, args: seen.append(
        (len(recipe.memory.state), all(m.requires_grad for m in recipe.memory.state.values()))))
    losses = recipe.frame_losses(batch)
    handle.remove()
    blocks = len(recipe.memory.blocks)
    assert seen == [(0, True)] + [(blocks, True)] * (CLIP - 1) + [(blocks, False)] + [(blocks, True)] * (CLIP - 1)
    assert recipe.memory.state == {}  # no graph kept past the step

    # detaching at every frame (clip_frames=1) changes no value, only where the gradient goes
    per_frame = make_recipe(world, tmp_path, output_scale=2.0, clip_frames=1)
    cut = per_frame.frame_losses(batch)
    torch.testing.assert_close(cut, losses, rtol=1e-6, atol=1e-6)  # (kernels may differ with grad in the last bit)

    def gradient(recipe, losses, frame):
        recipe.memory.zero_grad(set_to_none=True)
        losses[:, frame].sum().backward(retain_graph=True)
        return memory_gradients(recipe)

    # frame 1 of a clip: its loss reaches frame 0's memory write only when the graph is kept inside the clip
    within, detached = gradient(recipe, losses, 1), gradient(per_frame, cut, 1)
    assert max(float((within[name] - detached[name]).abs().max()) for name in within) > 1e-6
    # the first frame of the next clip: cut at the boundary, exactly as with a cut at every frame
    after_boundary, detached = gradient(recipe, losses, CLIP), gradient(per_frame, cut, CLIP)
    for name, grad in after_boundary.items():
        torch.testing.assert_close(grad, detached[name], rtol=1e-4, atol=1e-7)  # 100x below the contrast above


def test_gradient_checkpointing_runs_every_memory_hook_once_and_keeps_the_gradients(world, tmp_path):
    """diffusers checkpoints resnets and the transformers' inner blocks, never a whole Transformer2DModel: the
    memory hooks run once per frame in forward and never in backward, with checkpointing on or off. (Calls are
    counted with pre-hooks: torch's non-reentrant checkpoint stops a recomputation early, before post-hooks run.)"""
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    runs = {}
    for checkpointing in (False, True):
        trainer = TrainerConfig(cpu=True, gradient_checkpointing=checkpointing)
        recipe = make_recipe(world, tmp_path, output_scale=2.0, trainer=trainer)
        counts = {"memory": 0, "transformer": 0, "resnet": 0}

        def counter(kind, counts=counts):
            return lambda *args: counts.__setitem__(kind, counts[kind] + 1)

        for block in recipe.memory.blocks:
            block.register_forward_pre_hook(counter("memory"))
        for module in recipe.unet.modules():
            if isinstance(module, (ResnetBlock2D, Transformer2DModel)):
                module.register_forward_pre_hook(counter("resnet" if isinstance(module, ResnetBlock2D)
                                                         else "transformer"))
        losses = recipe.loss(recipe.model, one_batch(recipe), 0)
        forward = dict(counts)
        losses.sum().backward()
        runs[checkpointing] = (forward, dict(counts), losses.detach(), memory_gradients(recipe))
    blocks = len(recipe.memory.blocks)
    (plain_forward, plain_after, plain_losses, plain_grads) = runs[False]
    (ckpt_forward, ckpt_after, ckpt_losses, ckpt_grads) = runs[True]
    for kind in ("memory", "transformer"):  # once per frame and block, in forward only
        assert plain_forward[kind] == ckpt_forward[kind] == plain_after[kind] == ckpt_after[kind] == SEGMENT * blocks
    assert plain_after["resnet"] == plain_forward["resnet"] < ckpt_after["resnet"]  # checkpointing did recompute
    torch.testing.assert_close(ckpt_losses, plain_losses, rtol=0, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-4, atol=1e-7)


def test_lcm_lora_is_fused_into_the_frozen_unet(world, tmp_path):
    fused = make_recipe(world, tmp_path, lcm_lora=world["weights"] / "lcm-lora-sdv1-5")
    base = load_sd_unet(world["base"]).state_dict()
    changed = [key for key, value in fused.unet.state_dict().items() if not torch.equal(value, base[key])]
    assert any("to_q" in key for key in changed)
    assert not any(p.requires_grad for p in fused.unet.parameters())
    with pytest.raises(WeightsMissingError, match="LCM-LoRA"):
        recipe_module.train_svdiff_memory(make_config(world, tmp_path, lcm_lora=tmp_path / "none"))


def run_main(*args) -> tuple[int, str, str]:
    """`vedit ARGS` through the real entry point (cli.main: its one-line errors and exit codes), in this process
    (no interpreter start-up); returns (exit code, stdout, stderr)."""
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
    code, out, err = run_main(
        "train", "svdiff-memory", "--base-dir", world["base"], "--videos", world["clips"], "--caption", CAPTION,
        "--out", folder / "svdiff-memory", "--segment-frames", SEGMENT, "--clip-frames", CLIP, "--resolution", SIZE,
        "--batch-size", 1, "--learning-rate", 1e-3, "--checkpoint-every", 1, "--cpu", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory) -> dict:
    """Through the CLI: 2 steps then --resume to 3, and 3 steps in one go (same seed and data)."""
    resumed, straight = tmp_path_factory.mktemp("resumed"), tmp_path_factory.mktemp("straight")
    first = cli_train(resumed, world, "--max-steps", 2)
    second = cli_train(resumed, world, "--max-steps", 3, "--resume")
    whole = cli_train(straight, world, "--max-steps", 3)
    return {"summaries": (first, second, whole), "resumed": resumed / "svdiff-memory",
            "straight": straight / "svdiff-memory"}


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(runs):
    first, second, whole = runs["summaries"]
    assert (first["start_step"], first["steps"]) == (0, 2)
    assert (second["start_step"], second["steps"]) == (2, 3) and whole["steps"] == 3
    assert first["data"] == {"clips": 1, "segments": 5, "too_short": 0, "unreadable": 0}
    resumed = load_memory_weights(runs["resumed"] / WEIGHTS_FILE).blocks.state_dict()
    straight = load_memory_weights(runs["straight"] / WEIGHTS_FILE).blocks.state_dict()
    # same draws and data order, resumed optimizer state: bit-identical here (CPU, float32); a little slack for
    # other CPUs' kernels
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-6, atol=1e-8)
    assert second["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_trained_folder_loads_and_edits_through_the_cli(world, runs, tmp_path):
    trained = runs["straight"]
    assert sorted(path.name for path in trained.iterdir()) == [WEIGHTS_FILE]
    assert not trained.with_name(trained.name + ".partial").exists()
    memory = load_memory_weights(trained / WEIGHTS_FILE)
    assert any(block.attention.to_out[0].weight.abs().max() > 0 for block in memory.blocks)  # it trained
    weights = tmp_path / "W"
    weights.mkdir()
    for name in ("sd15", "lcm-lora-sdv1-5", "taesd"):
        (weights / name).symlink_to(world["weights"] / name, target_is_directory=True)
    (weights / "svdiff-memory").symlink_to(trained, target_is_directory=True)
    clip = make_clip(tmp_path / "in.mp4", seconds=0.5, size="64x64", rate="8", audio=False)  # 4 frames
    code, out, err = run_main("edit", clip, "make it red", "--backend", "svdiff", "--weights-dir", weights, "--size",
                              64, "--dtype", "float32", "--device", "cpu", "--no-download", "--steps", 1,
                              "-o", tmp_path / "out.mp4", "--json", "--quiet")
    assert code == 0, err[-2000:]
    report = json.loads(out)["clips"][0]
    assert report["status"] == "ok" and report["frames"] == 4 and (tmp_path / "out.mp4").is_file()
    assert "recurrent 8x8 memory" in report["editor"]


def test_bad_base_dir_is_one_line_and_a_non_zero_exit(world, tmp_path):
    code, out, err = run_main("train", "svdiff-memory", "--base-dir", tmp_path / "nowhere", "--videos",
                              world["clips"], "--caption", CAPTION, "--out", tmp_path / "out", "--cpu")
    assert code == 1 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vedit: error: base model {tmp_path / 'nowhere'} is not a local")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.training").exists()


def test_bad_data_and_options_are_one_line_before_anything_is_written(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ({"data": empty}, TrainingDataError, "no clips found"),
        ({"segment_frames": 64, "clip_frames": 8}, TrainingDataError,
         r"none of the 1 clip\(s\) .* has the 64 frames a segment needs \(longest: 24"),
        ({"caption": None}, TrainingDataError,
         "has no caption: pass --caption TEXT .* manifest with columns input,caption"),
        ({"segment_frames": 10}, ConfigError, "multiple of --clip-frames"),
        ({"fps": 0.0}, ConfigError, "--fps"),
    ]
    for changes, error, message in cases:
        with pytest.raises(error, match=message):
            recipe_module.train_svdiff_memory(make_config(world, tmp_path, **changes))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty"]


def test_manifest_captions_win_over_the_default_caption(world, tmp_path):
    manifest = tmp_path / "clips.csv"
    clip = world["clips"] / "pattern.mp4"
    manifest.write_text(f"input,caption\n{clip},a striped card\n{clip},\n")
    source = recipe_module.CaptionedSegments(manifest, SEGMENT, CLIP, caption="fallback")
    assert len(source) == 10
    assert source.load(0)["caption"] == "a striped card" and source.load(5)["caption"] == "fallback"


def test_validation_reports_the_loss_with_and_without_the_memory(world, tmp_path):
    recipe = make_recipe(world, tmp_path, output_scale=2.0)
    with torch.no_grad():
        recipe.validate(recipe.model, 5, tmp_path)
    report = json.loads((tmp_path / recipe_module.VALIDATION_FILE).read_text())
    assert report["step"] == 5 and report["segments"] == 2 and len(report["per_frame_with_memory"]) == SEGMENT
    assert report["loss_with_memory"] != report["loss_without_memory"]  # the memory changes every frame's output
