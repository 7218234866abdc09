"""SVDiff's spatial memory trained segment by segment on long clips (Chen et al., arXiv 2405.19726, sec. 4.3 and
5.1): `train_svdiff_memory(config)`.

Stable Diffusion stays frozen; only the memory modules (`vedit_cli.models.memory_attention.UNetMemory`: the learnable
initial memory, its position FFN and the memory attention after every transformer block) train, with the standard
noise-prediction loss of every frame. A sample is one segment of `segment_frames` consecutive frames (the paper: 64)
with its caption; the loss walks it in clips of `clip_frames` frames (the paper: 8) and frame by frame, each frame a
UNet forward that reads the memory the previous frame wrote, and the memory of a clip's last frame is carried to the
next clip's first frame.

Choices:
- Truncated backpropagation through time: inside a clip the carried memory keeps its autograd graph
  (`UNetMemory.keep_graph`), so the loss of frame n reaches the memory writes of frames < n of its clip; at every
  clip boundary the carried state is detached (`UNetMemory.detach_state`): the next clip sees the memory's value but
  sends no gradient into the previous clip. The paper says the memory is propagated from clip to clip and the loss
  computed frame by frame, not whether gradients cross clips; cutting them is our reading (it is what makes the
  clip split bound backpropagation, the scheme's stated purpose).
- One graph per segment: `loss()` returns the mean of the per-frame losses of the whole segment, and the trainer
  calls backward once. Because of the truncation the clips' graphs are disjoint, so the gradient equals a backward
  per clip, but the activations of every frame of the segment stay alive until that one backward: memory grows
  with segment_frames x the UNet's per-frame activations (fine for the tiny world; at 512x512 turn on
  --gradient-checkpointing and, if it still does not fit, lower --segment-frames or the batch).
- Gradient checkpointing is diffusers' (UNet2DConditionModel.enable_gradient_checkpointing on the frozen UNet): it
  recomputes resnets and the transformer's inner blocks in backward, never a whole Transformer2DModel, so the memory
  hooks (on the Transformer2DModel outputs) run exactly once per frame and recomputation cannot overwrite the carried
  state (tests/test_train_svdiff_memory.py counts the hook calls with checkpointing on and off).
- Timesteps: one t ~ U{0..T-1} per segment, shared by all its frames. At inference each LCM step keeps its own memory
  chain at a fixed timestep (`memory.at_step(i)`), so a chain always sees one t; training uses one chain
  (`memory.at_step(0)`), trained at the segment's t. The noise is drawn independently for every frame, the VAE
  posterior sampled per frame. The loss target is the noise (or the velocity when the base's schedule says so), on
  the base's stored schedule.
- Unconditional memory: caption dropout per segment (`caption_dropout`): a dropped segment uses the empty prompt for
  all its frames, so the memory learns the unconditional chain inference keeps beside the conditional one (eq. 8).
  Batch rows are independent memories (one per segment); no CFG doubling in training.
- Base: the UNet alone (the paper trains on SD1.5; `lcm_lora` None), or with the LCM-LoRA fused at scale 1
  (`lcm_lora`: the LoRA file or its folder, fused with vedit_cli.backends.svdiff.loading.fuse_lcm_lora), which
  matches what `vedit edit --backend svdiff` runs the memory with.
- The memory modules are created fresh, seeded by the trainer's seed, sized to the base's transformer blocks, with
  zero output projections: the untrained memory is the identity, so on the first step only the output projections
  get a non-zero gradient; after it every memory parameter does.

Data (`config.data`): a clip, a folder of clips, a CSV/JSONL manifest (columns `input` (or `clip`/`path`) and,
optionally, `caption`), or any sample source (`__len__`, `load(index) -> {"frames": uint8 [T, H, W, 3], "caption":
str}`, `describe(index)`), whose sequences must hold at least segment_frames frames (a random start is taken).
Captions: a row's `caption`, else `config.caption` (`--caption`) for every clip; to caption a folder clip by clip,
write a manifest `input,caption` (one row per clip, paths relative to the manifest). Clips are read as streams with
decord (`ClipSegments`: only a segment's frames are decoded, never a whole clip in memory); a segment starts at every
clip_frames-th frame of the (resampled) clip. `fps`: frames are taken every round(native / fps) frames (e.g. 30 fps
-> 8 fps: every 4th, 7.5 fps); clips at or below `fps` are used at their native rate (frames are never repeated);
None: every frame. A clip shorter than a segment (at that rate) is skipped and counted (the data event and the
command's summary say how many); if every clip is too short the run stops with one line saying so.

Output: `<output_dir>/memory_attention.safetensors` (`save_memory_weights`: the memory config in its metadata),
written under `<output_dir>.partial` and then renamed: the registry entry `svdiff-memory`, which `vedit edit --backend
svdiff --weights-dir W` loads from W/svdiff-memory. Validation (every validate_every steps) writes the per-frame loss
of the first segments with the memory and with it bypassed (same draws): `validation.json`.

Real scale (the paper, sec. 5.1): SD1.5, 20k iterations on a subset of HD-VILA (~2 M subtitled videos), 64
consecutive frames at 512x512 in 8-frame clips, one caption per video, 8 A100s for eight days; h = w = 8. Here:
SvdiffMemoryConfig(resolution=512, segment_frames=64, clip_frames=8, trainer=TrainerConfig(max_steps=20000,
batch_size=1, mixed_precision="bf16", gradient_checkpointing=True, learning_rate=1e-4)) under `accelerate launch`
on 8 GPUs (the paper gives neither its batch size nor its learning rate: 1e-4 and one segment per GPU are our
assumptions). GPU hours, an ESTIMATE: the paper's own figure is 8 GPUs x 8 days = ~1,540 A100-hours. A FLOP count
(torch FlopCounterMode on meta-device SD1.5 shapes with the memory attached) gives per 512x512 frame 0.99 TFLOP for
the UNet forward with memory, 2.2 TFLOP for forward + backward to the memory (no weight gradients for the frozen UNet),
~0.8 more (estimated) for checkpointing's recomputation, and 1.1 TFLOP for the VAE encode: ~4 TFLOP a frame, ~265 TFLOP a 64-frame
segment; at an assumed 40% of an A100's 312 bf16 TFLOP/s that is ~2 s a segment, so 20k iterations of 8 segments
are ~90 A100-hours of arithmetic. The gap to the paper's ~1,540 suggests a larger batch or a run bound by decoding
64-frame video segments; budget for the paper's figure, and pre-scale clips to 512 (ffmpeg -vf scale=-2:512) so
decoding stays cheap. Memory: one 64-frame segment keeps 64 frames of checkpointed UNet activations for one backward
(tens of GB at 512x512): lower --segment-frames (a multiple of --clip-frames) if it does not fit.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError, TrainingDataError, WeightsMissingError
from vedit_cli.models.memory_attention import WEIGHTS_FILE, MemoryConfig, UNetMemory, save_memory_weights
from vedit_cli.train.config import SvdiffMemoryConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.motion_adapter import clip_frames  # `count` consecutive frames, random start
from vedit_cli.train.recipes.sd_parts import (
    FrozenSD,
    check_sd_folder,
    image_tensor,
    load_sd_unet,
    per_sample_mse,
    placed,
    run_recipe,
    write_folder,
)
from vedit_cli.train.trainer import Progress

LCM_LORA_FILE = "pytorch_lora_weights.safetensors"  # the registry entry lcm-lora-sdv1-5's file
VALIDATION_SEGMENTS = 2
VALIDATION_FILE = "validation.json"


def train_svdiff_memory(config: SvdiffMemoryConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) the memory and write `<output_dir>/memory_attention.safetensors`; returns output_dir.

    The cheap checks (options, base folder, LCM-LoRA file) come before the clips are opened; a folder or manifest
    of clips becomes a `CaptionedSegments` source, reported to `progress` as a "data" event."""
    import dataclasses

    check_config(config)
    check_sd_folder(config.base)
    lcm_lora_file(config.lcm_lora)
    data = open_segments(config)
    if isinstance(data, CaptionedSegments):
        (progress or (lambda event: None))({"event": "data", **data.summary()})
    return run_recipe(dataclasses.replace(config, data=data), SvdiffMemoryRecipe, WEIGHTS_FILE, progress)


def open_segments(config: SvdiffMemoryConfig):
    """config.data as a sample source: a path becomes CaptionedSegments, a source is used as it is."""
    if isinstance(config.data, (str, Path)):
        return CaptionedSegments(Path(config.data), config.segment_frames, config.clip_frames, config.fps,
                                 config.caption)
    return config.data


def check_config(config: SvdiffMemoryConfig) -> None:
    config.check()
    if config.clip_frames < 1 or config.segment_frames < 1:
        raise ConfigError(f"--segment-frames and --clip-frames must be at least 1, got {config.segment_frames} and "
                          f"{config.clip_frames}")
    if config.segment_frames % config.clip_frames:
        raise ConfigError(f"--segment-frames ({config.segment_frames}) must be a multiple of --clip-frames "
                          f"({config.clip_frames}): a segment is split into whole clips")
    if config.fps is not None and not config.fps > 0:
        raise ConfigError(f"--fps must be above 0, got {config.fps}")
    if config.memory_height < 1 or config.memory_width < 1:
        raise ConfigError(f"the memory must be at least 1x1, got {config.memory_height}x{config.memory_width}")


def lcm_lora_file(path: Path | None) -> Path | None:
    """The LCM-LoRA safetensors file named by `path` (the file, or a folder holding pytorch_lora_weights.safetensors),
    None for no LoRA, or one WeightsMissingError line."""
    if path is None:
        return None
    path = Path(path)
    file = path / LCM_LORA_FILE if path.is_dir() else path
    if not file.is_file() or file.suffix != ".safetensors":
        raise WeightsMissingError(f"LCM-LoRA {path} is not a .safetensors file or a folder holding {LCM_LORA_FILE} "
                                  "(e.g. `vedit download lcm-lora-sdv1-5`, then --lcm-lora WEIGHTS/lcm-lora-sdv1-5); "
                                  "leave --lcm-lora out to train on the base alone")
    return file


# -- data ------------------------------------------------------------------------------------------------------------

def clip_captions(path: Path) -> list[tuple[Path, str | None]]:
    """(clip, caption or None) for a clip, a folder of clips (no captions) or a CSV/JSONL manifest."""
    from vedit_cli.manifest import read_manifest_rows
    from vedit_cli.train.data.clips import PATH_COLUMNS, open_clips

    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        rows = [row for _, row in read_manifest_rows(path, TrainingDataError)]
        column = next((name for name in PATH_COLUMNS if rows and name in rows[0]), None)
        if column is None:
            raise TrainingDataError(f"manifest {path} needs an 'input' column naming each clip (and optionally a "
                                    "'caption' column)")
        return [(path.parent / str(row[column]), _caption(row.get("caption"))) for row in rows]
    return [(clip, None) for clip in open_clips(path)]


def _caption(value) -> str | None:
    return None if value is None or not str(value).strip() else str(value)


def frame_stride(native_fps: float, fps: float | None) -> int:
    """Take every `stride`-th frame to approach `fps` from `native_fps` (1: native rate; never below 1)."""
    if fps is None or not native_fps or not np.isfinite(native_fps):
        return 1
    return max(1, round(native_fps / fps))


class CaptionedSegments:
    """Every segment of `segment_frames` frames (resampled toward `fps`) starting every `clip_frames` (resampled)
    frames of every clip long enough, with the clip's caption: {"frames": uint8 [N, H, W, 3], "caption", "clip",
    "start"}. Clips shorter than a segment are counted in `too_short`, undecodable ones in `unreadable`."""

    def __init__(self, path: Path, segment_frames: int, clip_frames: int, fps: float | None = None,
                 caption: str | None = None):
        from vedit_cli.train.data.clips import ClipSegments

        self.path, self.segment_frames, self.fps = Path(path), segment_frames, fps
        entries = clip_captions(path)
        if not entries:
            raise TrainingDataError(f"no clips found in {path}: pass a clip, a folder of clips or a CSV/JSONL "
                                    "manifest with an 'input' column")
        self.parts, self.captions, self.too_short, self.unreadable = [], [], [], []
        longest = 0
        for clip, clip_caption in entries:
            text = clip_caption if clip_caption is not None else caption
            if text is None:
                raise TrainingDataError(f"{clip} has no caption: pass --caption TEXT for every clip, or a CSV manifest "
                                        "with columns input,caption")
            try:
                native_fps, frames = _probe(clip)
            except (RuntimeError, OSError, ValueError) as error:  # decord raises DECORDError (a RuntimeError)
                self.unreadable.append(f"{clip}: {error}")
                continue
            stride = frame_stride(native_fps, fps)
            usable = (frames - 1) // stride + 1 if frames else 0
            longest = max(longest, usable)
            if usable < segment_frames:
                self.too_short.append(f"{clip}: {usable} frames")
                continue
            segments = ClipSegments([clip], segment_frames, stride, clip_frames * stride)
            self.unreadable.extend(segments.unreadable)
            if len(segments):
                self.parts.append(segments)
                self.captions.append(text)
        self.offsets = [0, *np.cumsum([len(part) for part in self.parts]).tolist()]
        if not self.parts:
            rate = f" at {fps:g} fps" if fps else ""
            raise TrainingDataError(
                f"none of the {len(entries)} clip(s) in {path} has the {segment_frames} frames{rate} a segment needs "
                f"(longest: {longest}; {len(self.unreadable)} unreadable); lower --segment-frames or add longer clips")

    def summary(self) -> dict:
        return {"clips": len(self.parts), "segments": len(self), "too_short": len(self.too_short),
                "unreadable": len(self.unreadable), "segment_frames": self.segment_frames, "fps": self.fps}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        part = bisect.bisect_right(self.offsets, index) - 1
        return part, index - self.offsets[part]

    def describe(self, index: int) -> str:
        part, local = self._locate(index)
        return self.parts[part].describe(local)

    def load(self, index: int) -> dict:
        part, local = self._locate(index)
        return {**self.parts[part].load(local), "caption": self.captions[part]}


def _probe(clip: Path) -> tuple[float, int]:
    """(average fps, frame count) from the container, without decoding."""
    import decord

    reader = decord.VideoReader(str(clip), num_threads=1)
    return float(reader.get_avg_fps()), len(reader)


# -- the recipe ------------------------------------------------------------------------------------------------------

def new_memory(unet, config: SvdiffMemoryConfig) -> UNetMemory:
    """Fresh memory modules for `unet`'s transformer blocks, seeded by the trainer's seed, in training mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)
        memory = UNetMemory(MemoryConfig.for_unet(unet, config.memory_height, config.memory_width), keep_graph=True)
    return memory


class SvdiffMemoryRecipe:
    """The trainer's recipe: model = the UNetMemory (its parameters are the only trainable ones), attached to the
    frozen UNet (base, or base + fused LCM-LoRA) that the recipe holds and `setup` moves."""

    def __init__(self, config: SvdiffMemoryConfig):
        check_config(config)
        self.config, self.source = config, open_segments(config)
        self.sd = FrozenSD(config.base)
        self.unet = load_sd_unet(self.sd.base)
        lora = lcm_lora_file(config.lcm_lora)
        if lora is not None:
            from vedit_cli.backends.svdiff.loading import fuse_lcm_lora

            fuse_lcm_lora(self.unet, lora, 1.0)
        self.unet.requires_grad_(False).eval()
        self.memory = new_memory(self.unet, config).attach(self.unet)
        self.model = self.memory
        strays = [name for name, p in self.unet.named_parameters() if p.requires_grad]
        assert not strays, f"trainable parameters outside the memory: {strays[:3]}"
        assert all(p.requires_grad for p in self.model.parameters()), "every memory parameter must train"

    # data
    def prepare_sample(self, raw: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        flip = self.config.random_flip and rng.random() < 0.5
        frames = clip_frames(raw.get("frames"), self.config.segment_frames, rng)
        caption = _caption(raw.get("caption"))
        caption = caption if caption is not None else self.config.caption
        if caption is None:
            raise BadSample("no caption (give the sample a 'caption' or pass --caption)")
        tensors = torch.stack([image_tensor(frame, self.config.resolution, flip) for frame in frames])
        # uint8 in the loader (4x smaller than float; image_tensor's values are k/127.5 - 1, so this is exact)
        return {"frames": ((tensors + 1) * 127.5).round().to(torch.uint8), "input_ids": self.sd.token_ids(caption)}

    def collate(self, samples: list[dict]) -> dict:
        return {key: torch.stack([sample[key] for sample in samples]) for key in ("frames", "input_ids")}

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)
        placed(self.unet, self.sd.device, self.sd.dtype)
        if self.config.trainer.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    # loss
    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        """[B] mean noise-prediction loss over the segment's frames. `model` is the (wrapped) memory: the segment
        runs as its one forward, so DDP and autocast see one forward per backward."""
        return model(self.frame_losses, batch).mean(dim=1)

    def frame_losses(self, batch: dict, carry: bool = True) -> torch.Tensor:
        """[B, N] per-frame losses of the batch's segments, one autograd graph, truncated at clip boundaries.
        carry=False restarts the memory from M^0 at every clip (an ablation: what the carried memory adds)."""
        sd, unet, memory, clip = self.sd, self.unet, self.memory, self.config.clip_frames
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < self.config.caption_dropout  # per segment: the whole segment unconditional
        timesteps = random.randint(sd.num_train_timesteps).to(sd.device)  # one t per segment
        latents = self.segment_latents(batch["frames"], random)  # [B, N, C, h, w], posterior sampled per frame
        noise = random.randn(*latents.shape[1:]).to(sd.device)  # independent per frame
        text = sd.text(batch["input_ids"], drop).to(sd.dtype)
        dtype = next(unet.parameters()).dtype
        losses = []
        memory.clear()
        try:
            with memory.at_step(0):
                for index in range(latents.shape[1]):
                    if index and index % clip == 0:  # clip boundary: carry the value, cut the gradient
                        memory.detach_state() if carry else memory.clear()
                    frame, frame_noise = latents[:, index], noise[:, index]
                    noisy = sd.noise_scheduler.add_noise(frame, frame_noise, timesteps)
                    prediction = unet(noisy.to(dtype), timesteps, text).sample
                    losses.append(per_sample_mse(prediction, sd.target(frame, frame_noise, timesteps)))
        finally:
            memory.clear()  # the state holds the segment's graph: do not keep it past the step
        return torch.stack(losses, dim=1)

    @torch.no_grad()
    def segment_latents(self, frames: torch.Tensor, random: SampleRandom) -> torch.Tensor:
        """uint8 frames [B, N, 3, H, W] -> scaled latents [B, N, C, h, w], encoded clip_frames frames at a time."""
        vae, chunk = self.sd.vae, self.config.clip_frames
        means, stds = [], []
        for sequence in frames:
            posteriors = [vae.encode(part.to(self.sd.device, self.sd.dtype) / 127.5 - 1).latent_dist
                          for part in sequence.split(chunk)]
            means.append(torch.cat([posterior.mean for posterior in posteriors]))
            stds.append(torch.cat([posterior.std for posterior in posteriors]))
        mean, std = torch.stack(means), torch.stack(stds)
        sample = mean + std * random.randn(*mean.shape[1:]).to(mean.device, mean.dtype)
        return sample.float() * vae.config.scaling_factor

    # validation and output
    def validate(self, model, step: int, folder: Path) -> None:
        """Per-frame losses of the first segments (fixed draws) with the memory and with it bypassed."""
        count = min(VALIDATION_SEGMENTS, len(self.source))
        samples = []
        for index in range(count):
            try:
                samples.append(self.prepare_sample(self.source.load(index), index))
            except BadSample:
                continue
        if not samples:
            return
        batch = {**self.collate(samples), "sample_seed": torch.arange(len(samples))}
        with_memory = self.frame_losses(batch)
        with self.memory.bypassed():
            without = self.frame_losses(batch)
        report = {"step": step, "segments": len(samples),
                  "loss_with_memory": float(with_memory.mean()), "loss_without_memory": float(without.mean()),
                  "per_frame_with_memory": with_memory.mean(dim=0).tolist(),
                  "per_frame_without_memory": without.mean(dim=0).tolist()}
        (Path(folder) / VALIDATION_FILE).write_text(json.dumps(report, indent=2) + "\n")

    def save(self, model) -> Path:
        """memory_attention.safetensors under `<output>.partial`, then moved to config.output_dir."""
        def write(partial: Path) -> None:
            partial.mkdir(parents=True)
            save_memory_weights(self.memory, partial / WEIGHTS_FILE)

        return write_folder(Path(self.config.output_dir), write)
