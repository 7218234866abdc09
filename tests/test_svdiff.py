"""The svdiff backend on tiny components: weights, causality, memory save/restore, determinism, LCM reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vedit_cli.editor import create_editor
from vedit_cli.settings import resolve_run
from vedit_cli.backends.svdiff.editor import SvdiffEditor
from vedit_cli.config import ModelConfig
from vedit_cli.errors import WeightsMissingError

SIZE = 16  # tiny TAESD halves: latents 8x8, memory 8x8 meets features of 8x8 and 4x4


@pytest.fixture(scope="module")
def memory_editor(svdiff_weights) -> SvdiffEditor:
    """One editor with (non-zero) memory weights, reused: `prepare` restarts the stream from M^0."""
    return _editor(svdiff_weights["memory"], guidance_scale=1.5)


@pytest.fixture(scope="module")
def plain_editor(svdiff_weights) -> SvdiffEditor:
    return _editor(svdiff_weights["plain"], guidance_scale=1.5)


def _editor(weights_dir: Path, prompt: str = "make it red", **changes) -> SvdiffEditor:
    config = ModelConfig(backend="svdiff", weights_dir=weights_dir, device="cpu", **changes).validate()
    editor = create_editor(resolve_run(config))
    editor.prepare(prompt)
    return editor


def _frames(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, SIZE, SIZE, generator=generator) * 2 - 1


def _stream(editor: SvdiffEditor, frames: torch.Tensor) -> torch.Tensor:
    """Feed frames one call at a time, as the runner does with window_size 1."""
    return torch.cat([editor.edit(frame.unsqueeze(0)) for frame in frames])


def test_missing_weights_raise_weights_missing_error(tmp_path, svdiff_weights):
    with pytest.raises(WeightsMissingError, match="sd15"):
        create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=tmp_path)))
    (tmp_path / "sd15").symlink_to(svdiff_weights["plain"] / "sd15", target_is_directory=True)
    (tmp_path / "lcm-lora-sdv1-5").mkdir()
    with pytest.raises(WeightsMissingError, match="lcm-lora-sdv1-5.*pytorch_lora_weights"):
        create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=tmp_path)))


def test_incomplete_memory_folder_is_an_error_not_a_silent_fallback(tmp_path, svdiff_weights):
    for name in ("sd15", "lcm-lora-sdv1-5", "taesd"):
        (tmp_path / name).symlink_to(svdiff_weights["plain"] / name, target_is_directory=True)
    (tmp_path / "svdiff-memory").mkdir()
    with pytest.raises(WeightsMissingError, match="svdiff-memory"):
        create_editor(resolve_run(ModelConfig(backend="svdiff", weights_dir=tmp_path)))


def test_empty_tokenizer_is_refused(tmp_path):
    from vedit_cli.weights.guards import load_clip_tokenizer

    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(WeightsMissingError, match=f"tokenizer.*vedit download sd15 --weights-dir {tmp_path}"):
        load_clip_tokenizer(tmp_path / "tokenizer", "sd15", tmp_path)


def test_streaming_contract_and_descriptions(svdiff_weights, plain_editor):
    plain = plain_editor
    plain.prepare("make it red")
    assert (plain.window_size, plain.latency, plain.flush()) == (1, 0, None)
    assert "no temporal memory" in plain.description and "3 LCM steps x 2 passes" in plain.description
    out = plain.edit(_frames(2))
    assert out.shape == (2, 3, SIZE, SIZE) and out.min() >= -1 and out.max() <= 1
    assert set(plain.stage_modules()) == {"text_encoder", "encode", "unet", "decode"}
    trained = _editor(svdiff_weights["memory"], guidance_scale=1.0)
    assert "recurrent 8x8 memory" in trained.description and "x 1 passes" in trained.description


def test_without_memory_frames_are_edited_independently(plain_editor):
    frames = _frames(2)
    plain_editor.prepare("make it red")
    streamed = _stream(plain_editor, frames)
    assert torch.equal(streamed[1:2], plain_editor.edit(frames[1:2]))


def test_causal_frame_n_depends_on_frame_n_minus_1_not_on_n_plus_1(memory_editor):
    frames = _frames(2)
    replacement = _frames(1, seed=7)[0]
    memory_editor.prepare("make it red")
    reference = _stream(memory_editor, frames)
    memory_editor.prepare("make it red")
    other_past = _stream(memory_editor, torch.stack([replacement, frames[1]]))
    # Bitwise-deterministic computation: any difference in frame 1 comes from frame 0 through the memory.
    assert (reference[1] - other_past[1]).abs().max() > 1e-5
    memory_editor.prepare("make it red")
    other_future = _stream(memory_editor, torch.stack([frames[0], replacement]))
    assert torch.equal(other_future[0], reference[0])  # a later frame never reaches an earlier one
    memory_editor.reset()
    assert torch.equal(_stream(memory_editor, frames), reference)  # reset: the stream starts from M^0 again


def test_save_and_restore_memory_mid_stream_equals_uninterrupted_run(memory_editor, svdiff_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    frames = _frames(3)
    memory_editor.prepare("make it red")
    uninterrupted = _stream(memory_editor, frames)
    memory_editor.prepare("make it red")
    head = _stream(memory_editor, frames[:2])
    state = memory_editor.memory_state()
    assert len(state) == 3 * 6 and all(m.shape[0] == 2 for m in state.values())  # steps x blocks; [uncond, cond]
    save_file(state, str(tmp_path / "memory_state.safetensors"))
    resumed = _editor(svdiff_weights["memory"], guidance_scale=1.5)  # a new process would start like this
    resumed.load_memory_state(load_file(str(tmp_path / "memory_state.safetensors")))
    tail = _stream(resumed, frames[2:])
    assert torch.equal(torch.cat([head, tail]), uninterrupted)
    resumed.prepare("make it red")
    assert (_stream(resumed, frames[2:]) - tail).abs().max() > 1e-5  # without the restored memory: context lost


def test_deterministic_for_a_seed_and_different_across_seeds(memory_editor, svdiff_weights):
    frames = _frames(2)
    memory_editor.prepare("make it red")
    first = _stream(memory_editor, frames)
    again = _stream(_editor(svdiff_weights["memory"], guidance_scale=1.5), frames)
    other = _stream(_editor(svdiff_weights["memory"], guidance_scale=1.5, seed=4), frames)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-4)


def test_prompt_and_guidance_reach_the_output(svdiff_weights, plain_editor):
    frames = _frames(1)
    strong = _editor(svdiff_weights["plain"], "make it red", guidance_scale=3.0)
    base = strong.edit(frames)
    strong.prepare("a snowy day")
    assert not torch.allclose(base, strong.edit(frames), atol=1e-5)
    plain_editor.prepare("make it red")  # guidance 1.5
    assert not torch.allclose(base, plain_editor.edit(frames), atol=1e-5)


def test_untrained_memory_equals_plain_lcm_editing(svdiff_weights):
    """Zero-initialised memory modules attached to the backend's UNet leave every edited frame unchanged."""
    from vedit_cli.models.memory_attention import MemoryConfig, UNetMemory

    frames = _frames(2)
    plain = _editor(svdiff_weights["plain"], guidance_scale=1.5)
    expected = _stream(plain, frames)
    memory = UNetMemory(MemoryConfig.for_unet(plain.parts.unet)).eval().to(plain.parts.dtype)  # auto: bf16 on
    plain.parts.memory = memory.attach(plain.parts.unet)  # a CPU with native bfloat16 (AVX512-BF16/AMX)
    plain.reset()
    assert torch.allclose(_stream(plain, frames), expected, atol=1e-6)


def test_matches_diffusers_lcm_img2img_pipeline_without_memory(svdiff_weights):
    """Differential check of forward noising (`--svdiff-init noise`), latent scaling, scheduler use and noise:
    guidance 1 (no CFG) as the pipeline."""
    from diffusers import LatentConsistencyModelImg2ImgPipeline

    editor = _editor(svdiff_weights["plain"], "make it red", guidance_scale=1.0, seed=5, strength=0.6,
                     svdiff_init="noise", dtype="float32")  # a 1e-5 comparison (auto is bfloat16 on some CPUs)
    frame = _frames(1)
    ours = editor.edit(frame)
    parts = editor.parts
    pipe = LatentConsistencyModelImg2ImgPipeline(
        vae=parts.taesd, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=parts.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # That pipeline is written for distilled LCMs with a guidance embedding; an LCM-LoRA UNet has none
    # (time_cond_proj_dim None), so the reference runs with the embedding switched off, as our backend does.
    pipe.get_guidance_scale_embedding = lambda *args, **kwargs: _NoEmbedding()
    reference = pipe("make it red", image=(frame + 1) / 2, num_inference_steps=3, strength=0.6, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(5), output_type="pt").images
    assert torch.allclose((ours + 1) / 2, reference, atol=1e-5)


class _NoEmbedding:
    def to(self, *args, **kwargs):
        return None
