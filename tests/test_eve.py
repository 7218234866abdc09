"""The eve backend on tiny random components: long clips, blending, anchor, determinism, LoRA, missing weights."""

from __future__ import annotations

import pytest
import torch

from vedit_cli.config import ModelConfig
from vedit_cli.settings import resolve_run
from vedit_cli.errors import WeightsMissingError

SIZE = 16  # pixels; the tiny VAE halves it: 8x8 latents
PROMPT = "make it look like winter"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def eve_weights(tmp_path_factory):
    from tests import tiny

    return tiny.save_eve_weights(tmp_path_factory.mktemp("eve_weights"))


@pytest.fixture(scope="module")
def eve_lora_weights(tmp_path_factory, eve_weights):
    """The same entries (linked) plus a tiny alignment LoRA."""
    from tests import tiny

    root = tmp_path_factory.mktemp("eve_lora_weights")
    for name in ("sd15", "controlnet-ip2p", "animatediff-motion-adapter"):
        (root / name).symlink_to(eve_weights / name, target_is_directory=True)
    tiny.save_unet_lora(root / "eve-lora")
    return root


def _config(weights_dir, **changes) -> ModelConfig:
    options = dict(backend="eve", weights_dir=weights_dir, device="cpu", dtype="float32", steps=2, seed=3)
    return ModelConfig(**{**options, **changes}).validate()


def _editor(weights_dir, **changes):
    from vedit_cli.backends.eve.editor import EveEditor

    return EveEditor.from_run(resolve_run(_config(weights_dir, **changes)))


def _clip(num_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_frames, 3, SIZE, SIZE, generator=generator) * 2 - 1


def _edit(editor, frames_tchw: torch.Tensor) -> torch.Tensor:
    editor.reset()
    editor.prepare(PROMPT)
    return editor.edit(frames_tchw)


def test_missing_weights_name_the_download_command(tmp_path):
    from vedit_cli.backends.eve.editor import EveEditor

    with pytest.raises(WeightsMissingError, match="vedit download sd15"):
        EveEditor.from_run(resolve_run(_config(tmp_path)))


def test_missing_adapter_is_reported_too(tmp_path, eve_weights):
    (tmp_path / "sd15").symlink_to(eve_weights / "sd15", target_is_directory=True)
    with pytest.raises(WeightsMissingError, match="controlnet-ip2p"):
        _editor(tmp_path)


def test_forty_frames_blended_every_step_and_deterministic(eve_weights):
    """40 frames, window 16, overlap 4: one chunk of three windows [0,16) [12,28) [24,40).

    Changing only input frames 28-39 (seen by the third window alone) must reach frame 20 (seen by the second
    window alone): the change enters the shared frames 24-27 when step 1 blends the windows, and the second window
    reads them in step 2. Windows denoised independently and blended only at the end could not carry it there.
    """
    editor = _editor(eve_weights, guidance_scale=1.0, steps=2)
    frames = _clip(40)
    first, again = _edit(editor, frames), _edit(editor, frames)
    assert first.shape == frames.shape and torch.isfinite(first).all()
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    changed_input = frames.clone()
    changed_input[28:] = -changed_input[28:]
    changed = _edit(editor, changed_input)
    assert (changed[28:] - first[28:]).abs().max() > 1e-4
    # Without per-step blending the second window computes bit-identical values: the difference is exactly 0.
    crossed = (changed[16:24] - first[16:24]).abs().max()
    assert crossed > 0, f"no information crossed windows ({crossed}): latents were not blended"
    torch.testing.assert_close(changed[:12], first[:12], rtol=0, atol=0)  # two steps carry it no further
    torch.testing.assert_close(changed[0], first[0], rtol=0, atol=0)  # the anchor sees frame 0 only


def test_a_different_seed_gives_a_different_edit(eve_weights):
    frames = _clip(6)
    one = _edit(_editor(eve_weights, steps=1, seed=1), frames)
    two = _edit(_editor(eve_weights, steps=1, seed=2), frames)
    assert (one - two).abs().max() > 1e-3


def test_step_blends_overlapping_windows_with_the_planner_weights(eve_weights):
    """One blended step equals the planner-weighted sum of each window's own DDIM step, frame by frame."""
    from vedit_cli.backends.eve import sampling as eve_sampling
    from vedit_cli.pipeline.windows import blend_weights, plan_windows

    editor = _editor(eve_weights)
    editor.prepare(PROMPT)
    latents = eve_sampling.frame_noise(0, 0, 28, (4, SIZE // 2, SIZE // 2))
    hints = (_clip(28) + 1) / 2
    windows = plan_windows(28, 16, 4)
    weights = blend_weights(windows, 28)
    timestep = editor.stack.scheduler.timesteps[0]
    blended = eve_sampling.blended_step(editor.stack, editor.conditioning, latents, hints, windows, weights, timestep,
                                        None, None)
    per_window = [eve_sampling._window_step(editor.stack, editor.conditioning, latents[:, w.start:w.stop],
                                            hints[w.start:w.stop], timestep, None, None) for w in windows]
    overlap_first, overlap_second = per_window[0][:, 12:], per_window[1][:, :4]
    expected = overlap_first * weights[0][None, 12:, None, None] + overlap_second * weights[1][None, :4, None, None]
    torch.testing.assert_close(blended[:, 12:16], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(blended[:, :12], per_window[0][:, :12], rtol=1e-5, atol=1e-6)
    assert (overlap_first - overlap_second).abs().max() > 1e-4  # the windows disagree, so blending matters


def test_first_frame_is_the_edit_adapter_alone(eve_weights):
    """Frame 0 is edited first by backbone + ControlNet with the temporal layers bypassed, and anchors the clip."""
    from vedit_cli.backends.eve import sampling as eve_sampling

    editor = _editor(eve_weights)
    frames = _clip(6)
    edited = _edit(editor, frames)
    noise = eve_sampling.frame_noise(3, 0, 1, (4, SIZE // 2, SIZE // 2))[:, 0]
    anchor = eve_sampling.edit_anchor(editor.stack, editor.conditioning, noise, (frames[0] + 1) / 2,
                                      editor.stack.scheduler.timesteps)
    torch.testing.assert_close(edited[0], eve_sampling.decode(editor.stack, anchor.trajectory[-1][:, None])[0])
    with_temporal = eve_sampling.denoise_chunk(editor.stack, editor.conditioning, noise[:, None],
                                               (frames[:1] + 1) / 2, [range(0, 1)], editor.stack.scheduler.timesteps)
    assert (with_temporal[:, 0] - anchor.trajectory[-1]).abs().max() > 1e-4  # the bypass really bypasses


def test_chunks_through_the_runner_give_every_frame_once(eve_weights):
    """Two chunks of 28 frames overlapping by 4 over a 40-frame clip; the runner cross-fades them."""
    from dataclasses import replace

    import numpy as np

    from vedit_cli.config import EditConfig
    from vedit_cli.pipeline.runner import run_clip

    editor = _editor(eve_weights, steps=1, chunk_windows=2)
    assert (editor.window_size, editor.overlap) == (28, 4)
    frames = [((_clip(1, seed)[0].permute(1, 2, 0) + 1) * 127.5).to(torch.uint8).numpy() for seed in range(40)]
    written: list[np.ndarray] = []

    class ListSink:
        def write(self, frame_hwc):
            written.append(frame_hwc)

    config = EditConfig(model=replace(editor.config, size=SIZE), output_size="processing")  # below --size's floor
    stats = run_clip(frames, 40, editor, PROMPT, ListSink(), None, config)
    assert stats.frames_written == 40 == len(written)
    assert written[0].shape == (SIZE, SIZE, 3)


def test_noise_belongs_to_the_clip_frame_not_the_chunk():
    from vedit_cli.backends.eve.sampling import frame_noise

    whole = frame_noise(7, 0, 20, (4, 3, 3))
    torch.testing.assert_close(frame_noise(7, 12, 8, (4, 3, 3)), whole[:, 12:], rtol=0, atol=0)
    assert not torch.equal(frame_noise(8, 12, 8, (4, 3, 3)), whole[:, 12:])


def test_lora_strength_zero_equals_no_lora(eve_weights, eve_lora_weights):
    frames = _clip(4)
    plain = _editor(eve_weights, steps=1)
    off = _editor(eve_lora_weights, steps=1, lora_scale=0.0)
    on = _editor(eve_lora_weights, steps=1, lora_scale=1.0)
    assert "plug-and-play" in plain.description and "alignment LoRA x1" in on.description
    baseline = _edit(plain, frames)
    torch.testing.assert_close(_edit(off, frames), baseline, rtol=0, atol=1e-6)
    assert (_edit(on, frames) - baseline).abs().max() > 1e-4


def test_lora_folder_without_its_file_is_an_error(tmp_path, eve_weights):
    for name in ("sd15", "controlnet-ip2p", "animatediff-motion-adapter"):
        (tmp_path / name).symlink_to(eve_weights / name, target_is_directory=True)
    (tmp_path / "eve-lora").mkdir()
    with pytest.raises(WeightsMissingError, match="pytorch_lora_weights.safetensors"):
        _editor(tmp_path)
