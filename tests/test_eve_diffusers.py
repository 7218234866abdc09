"""Differential test: one eve window against diffusers' AnimateDiffVideoToVideoControlNetPipeline, tiny components.

Same modules, same scheduler, same initial latents (strength 1: sampling starts from pure noise, as EVE does).
Where eve deliberately differs, the test aligns the inputs and says so:
- the ControlNet reads the edit instruction and the backbone the output caption; diffusers feeds both one prompt,
  so here caption == instruction;
- eve edits frame 0 first with the edit adapter alone and anchors every window on it; diffusers has no anchor, so
  the editor runs with `anchor_first_frame=False`;
- eve draws each frame's noise from its own seeded stream; the pipeline is handed those latents.
"""

from __future__ import annotations

import pytest
import torch

SIZE, FRAMES = 16, 8
PROMPT = "turn the sky pink"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0])
def test_single_window_matches_diffusers(tmp_path, guidance_scale):
    from diffusers import AnimateDiffVideoToVideoControlNetPipeline, MotionAdapter

    from tests import tiny
    from vedit_cli.backends.eve.editor import EveEditor
    from vedit_cli.backends.eve.sampling import frame_noise
    from vedit_cli.config import ModelConfig

    weights = tiny.save_eve_weights(tmp_path)
    config = ModelConfig(backend="eve", weights_dir=weights, device="cpu", dtype="float32", steps=3, seed=5,
                         guidance_scale=guidance_scale, controlnet_scale=0.8, window=FRAMES)
    from vedit_cli.settings import resolve_run

    run = resolve_run(config)
    editor = EveEditor(EveEditor.from_run(run).stack, run, anchor_first_frame=False)
    frames = torch.rand(FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    editor.prepare(PROMPT)
    ours = editor.edit(frames)

    stack = editor.stack
    pipe = AnimateDiffVideoToVideoControlNetPipeline(
        vae=stack.vae, text_encoder=stack.text_encoder, tokenizer=stack.tokenizer, unet=stack.unet,
        motion_adapter=MotionAdapter.from_pretrained(str(weights / "animatediff-motion-adapter")),
        controlnet=stack.controlnet, scheduler=stack.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    latents = frame_noise(5, 0, FRAMES, (4, SIZE // 2, SIZE // 2))[None]
    reference = pipe(
        prompt=PROMPT, latents=latents, conditioning_frames=[(frame + 1) / 2 for frame in frames], strength=1.0,
        num_inference_steps=3, guidance_scale=guidance_scale, controlnet_conditioning_scale=0.8, height=SIZE,
        width=SIZE, output_type="pt",
    ).frames[0]  # [T, 3, H, W] in [0, 1]
    torch.testing.assert_close((ours + 1) / 2, reference, rtol=0, atol=2e-5)
    assert (ours + 1).std() > 1e-3  # not a degenerate constant output
