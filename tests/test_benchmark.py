"""vedit benchmark: FLOP counts against hand counts, stage attribution, timing samples, the diffusers reference row."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vedit_cli.editor import Editor
from vedit_cli.benchmark.flops import OTHER, FlopProbe
from vedit_cli.benchmark.hooks import StageHooks
from vedit_cli.benchmark.measure import count_flops, make_clip, time_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TOKENS, TEXT_IN, TEXT_OUT = 4, 8, 16
SIZE, LATENT = 16, 8
STEPS, PASSES = 2, 2  # UNet calls per frame, batch items per call (CFG)


def conv_flops(batch: int, c_in: int, c_out: int, kernel: int, out_hw: int) -> int:
    """Hand count: one multiply-add (2 FLOPs) per weight per output position; bias is free, as in torch's counter."""
    return 2 * batch * c_out * out_hw * out_hw * c_in * kernel * kernel


TEXT_FLOPS = 2 * TOKENS * TEXT_IN * TEXT_OUT
ENCODE_FLOPS = conv_flops(1, 3, 4, 2, LATENT)
UNET_FLOPS = STEPS * conv_flops(PASSES, 4, 4, 3, LATENT)
DECODE_FLOPS = conv_flops(1, 4, 3, 1, SIZE)
GLUE_FLOPS = 2 * 1 * 4 * 4  # nn.Linear(4, 4) on one vector per frame, outside every stage


class TinyStagesEditor(Editor):
    """An editor made of layers whose FLOPs are known by hand; the UNet is nested in a wrapper stage."""

    window_size = 1
    description = "tiny stages"

    def __init__(self, nested_stage: bool = False):
        torch.manual_seed(0)
        self.text_encoder = nn.Linear(TEXT_IN, TEXT_OUT)
        self.encoder = nn.Conv2d(3, 4, kernel_size=2, stride=2)
        self.unet = nn.Conv2d(4, 4, kernel_size=3, padding=1)
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 3, kernel_size=1))
        self.glue = nn.Linear(4, 4)
        self.nested_stage = nested_stage
        self.text = None

    @classmethod
    def from_run(cls, run) -> "TinyStagesEditor":
        return cls()

    @classmethod
    def random_weights(cls, run) -> "TinyStagesEditor":
        return cls()

    def stage_modules(self) -> dict[str, nn.Module]:
        stages = {"text_encoder": self.text_encoder, "encode": self.encoder, "unet": self.unet, "decode": self.decoder}
        if self.nested_stage:  # the decoder's conv is also listed: it must not be counted a second time
            stages["decode_conv"] = self.decoder[1]
        return stages

    def prepare(self, prompt: str) -> None:
        self.text = self.text_encoder(torch.ones(1, TOKENS, TEXT_IN))

    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        edited = []
        for frame in frames_tchw:
            latents = self.encoder(frame[None])
            for _ in range(STEPS):
                noise = self.unet(torch.cat([latents] * PASSES))
                latents = latents + noise[:1] * 0.1
            self.glue(torch.ones(1, 4))
            edited.append(self.decoder(latents)[0])
        return torch.stack(edited)


@pytest.mark.parametrize("shape_only", [True, False], ids=["meta", "real"])
def test_flops_per_stage_match_the_hand_count(shape_only):
    editor = TinyStagesEditor()
    result = count_flops(editor, make_clip(3, SIZE, SIZE, torch.device("cpu"), torch.float32), "x", shape_only)
    assert result.per_clip.flops == {"text_encoder": TEXT_FLOPS, OTHER: 0}
    assert result.per_frame.flops == {"encode": ENCODE_FLOPS, "unet": UNET_FLOPS, "decode": DECODE_FLOPS,
                                      OTHER: GLUE_FLOPS}
    assert result.per_frame.calls == {"encode": 1, "unet": STEPS, "decode": 1}
    assert result.per_frame.passes == {"encode": 1, "unet": STEPS * PASSES, "decode": 1}


def test_a_stage_nested_in_another_is_not_counted_twice():
    editor = TinyStagesEditor(nested_stage=True)
    result = count_flops(editor, make_clip(2, SIZE, SIZE, torch.device("cpu"), torch.float32), "x")
    assert result.per_frame.flops["decode"] == DECODE_FLOPS
    assert "decode_conv" not in result.per_frame.flops
    assert result.per_frame.total == ENCODE_FLOPS + UNET_FLOPS + DECODE_FLOPS + GLUE_FLOPS


def test_shape_only_calls_leave_weights_in_place_and_return_zeros_of_the_right_shape():
    editor = TinyStagesEditor()
    weight = editor.unet.weight.detach().clone()
    with FlopProbe(editor.stage_modules(), shape_only=True):
        output = editor.unet(torch.ones(2, 4, LATENT, LATENT))
    assert output.device.type == "cpu" and output.shape == (2, 4, LATENT, LATENT) and not output.any()
    assert editor.unet.weight.device.type == "cpu" and torch.equal(editor.unet.weight, weight)
    assert "forward" not in editor.unet.__dict__  # the class forward is back
    assert editor.unet(torch.ones(1, 4, LATENT, LATENT)).any()


def test_one_module_serving_two_stages_is_refused():
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="two stages"):
        StageHooks({"encode": layer, "decode": layer}, lambda *a: None, lambda *a: None)


def test_timing_has_one_sample_per_window_per_repeat_and_every_stage():
    editor = TinyStagesEditor()
    clip = make_clip(3, SIZE, SIZE, torch.device("cpu"), torch.float32)
    result = time_clip(editor, clip, "x", repeats=2, warmup=1, device=torch.device("cpu"))
    assert len(result.per_frame) == 6 and len(result.prepare_per_clip) == 2
    assert set(result.stages_per_frame) == {"encode", "unet", "decode"}
    assert all(len(samples) == 6 and min(samples) > 0 for samples in result.stages_per_frame.values())
    assert all(stage <= frame for stage, frame in zip(result.stages_per_frame["unet"], result.per_frame))
    assert result.memory["host_peak_rss_bytes"] > 0 and result.memory["gpu_peak_bytes"] is None


def _direct_flops(module: nn.Module, *args, **kwargs) -> int:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def tiny_reference(tiny_weights):
    from vedit_cli.benchmark.reference import ReferenceEditor, downloaded_pipeline

    def build(steps: int = 2):
        return ReferenceEditor(downloaded_pipeline(tiny_weights, torch.float32), torch.device("cpu"), steps, 7.5, 1.5, 0)

    return build


def test_reference_pipeline_flops_equal_its_modules_counted_directly(tiny_reference):
    """The stock pipeline runs 3 UNet passes per step (batched), the full VAE once each way, text once per clip."""
    editor = tiny_reference(steps=2)
    pipe = editor.pipeline
    result = count_flops(editor, make_clip(2, 32, 32, torch.device("cpu"), torch.float32), "make it blue")
    ids = torch.zeros(1, pipe.tokenizer.model_max_length, dtype=torch.long)
    text = _direct_flops(pipe.text_encoder, ids)
    latent = 32 // pipe.vae_scale_factor
    unet = _direct_flops(pipe.unet, torch.zeros(3, 8, latent, latent), 10, encoder_hidden_states=torch.zeros(3, 77, 32))
    encode = _direct_flops(pipe.vae.encoder, torch.zeros(1, 3, 32, 32))
    decode = _direct_flops(pipe.vae.decoder, torch.zeros(1, 4, latent, latent))
    assert result.per_clip.flops["text_encoder"] == 2 * text  # the prompt and the empty negative prompt
    assert result.per_frame.flops["unet"] == 2 * unet
    assert result.per_frame.passes["unet"] == 2 * 3
    assert (result.per_frame.flops["encode"], result.per_frame.flops["decode"]) == (encode, decode)
    assert 0 < result.per_frame.flops[OTHER] < 0.01 * result.per_frame.total  # the VAE's 1x1 quant convs only


def test_reference_counts_on_meta_equal_counts_on_real_tensors(tiny_reference):
    clip = make_clip(1, 32, 32, torch.device("cpu"), torch.float32)
    on_meta = count_flops(tiny_reference(steps=1), clip, "x", shape_only=True)
    on_real = count_flops(tiny_reference(steps=1), clip, "x", shape_only=False)
    assert on_meta.per_frame.flops == on_real.per_frame.flops
    assert on_meta.per_clip.flops == on_real.per_clip.flops


def test_reference_edits_frames_into_the_same_shape_and_range(tiny_reference):
    editor = tiny_reference(steps=1)
    editor.prepare("make it blue")
    edited = editor.edit(make_clip(2, 32, 32, torch.device("cpu"), torch.float32))
    assert edited.shape == (2, 3, 32, 32) and edited.min() >= -1 and edited.max() <= 1


class StatefulConv(nn.Conv2d):
    """A stage that mixes in state kept outside its parameters (as SVDiff's memories): it cannot run on meta."""

    def __init__(self):
        super().__init__(4, 4, kernel_size=3, padding=1)
        self.memory = torch.zeros(1, 4, 1, 1)  # a plain attribute: functional_call cannot swap it

    def forward(self, x):
        return super().forward(x) * 2 + self.memory


def test_a_stateful_stage_is_counted_on_real_tensors_without_double_counting():
    editor = TinyStagesEditor()
    editor.unet = StatefulConv()
    result = count_flops(editor, make_clip(2, SIZE, SIZE, torch.device("cpu"), torch.float32), "x")
    assert result.per_frame.flops == {"encode": ENCODE_FLOPS, "unet": UNET_FLOPS, "decode": DECODE_FLOPS,
                                      OTHER: GLUE_FLOPS}
