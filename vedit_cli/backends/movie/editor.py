"""The `movie` backend (MoViE, arXiv 2412.06578): InstructPix2Pix per frame, as the teacher or the distilled student.

Teacher: the InstructPix2Pix UNet with image+text classifier-free guidance (up to 3 passes per step, batched into
one UNet call), 10 steps, the full VAE. Student (MoViE): the same UNet with the guidance scales as an input
(one pass per step), 1 step, TAESD. Every frame of a clip starts from the same noise tensor (less flicker), and
optional anchor-frame attention lets each frame attend to the clip's first frame or last keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vedit_cli.backends.movie import loading
from vedit_cli.backends.movie import sampling
from vedit_cli.editor import Editor
from vedit_cli.config import ModelConfig, TrainedSchedule, sampling_defaults
from vedit_cli.hardware import dtype_name
from vedit_cli.models import anchor_attention, guidance_embedding
from vedit_cli.settings import ResolvedRun

TOKENS = 77  # CLIP context length


@dataclass
class MovieComponents:
    """The loaded (or randomly initialised) modules and constants one movie editor runs on."""

    unet: torch.nn.Module
    autoencoder: torch.nn.Module  # AutoencoderKL (full) or AutoencoderTiny (TAESD)
    text_encoder: torch.nn.Module
    tokenizer: object | None  # None: fixed token ids (random-weight benchmarks)
    scheduler: object
    vae_scaling_factor: float  # the SD VAE's; TAESD latents are pre-scaled by it
    vae_kind: str  # "full" or "tiny"


class MovieEditor(Editor):
    window_size = 1
    overlap = 0
    latency = 0
    size_multiple = 8

    def __init__(self, components: MovieComponents, run: ResolvedRun):
        config = run.model
        self.components, self.config, self.mode, self.run = components, config, run.mode, run
        self.device, self.dtype = run.device, run.dtype
        self.steps = config.steps
        self.plan = sampling.student_plan() if run.mode == "student" else sampling.teacher_plan(
            config.guidance_scale, config.image_guidance_scale)
        self.anchor_cache = anchor_attention.AnchorCache() if config.anchor else None
        if self.anchor_cache is not None:
            anchor_attention.install(components.unet, self.anchor_cache)
        self.description = self._describe()
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reset()

    # 0. Construction -------------------------------------------------------------------------------------------
    @classmethod
    def resolve_mode(cls, config: ModelConfig, weights_dir) -> tuple[str, TrainedSchedule | None]:
        """auto: the student when its weights are present, else the teacher; the student's trained schedule."""
        from vedit_cli.backends.movie.student import resolve_mode, trained_schedule

        if weights_dir is None:  # random weights (benchmarks): the mode asked for, teacher by default
            mode = "student" if config.movie_mode == "student" else "teacher"
            recipe = sampling_defaults("movie", "student")  # a random student stands for MoViE's recipe
            return mode, (TrainedSchedule(recipe.steps, recipe.spacing) if mode == "student" else None)
        mode = resolve_mode(config.movie_mode, weights_dir)
        return mode, (trained_schedule(weights_dir) if mode == "student" else None)

    @classmethod
    def from_run(cls, run: ResolvedRun) -> "MovieEditor":
        """Load from `<weights_dir>/instruct-pix2pix` (+ `taesd`, + `movie-student`), safetensors only."""
        from vedit_cli.backends.movie.student import load_student_unet

        config, mode, weights_dir, dtype = run.model, run.mode, run.weights_dir, run.dtype
        root = loading.require_instruct_pix2pix(weights_dir)
        vae_kind = _vae_kind(config.vae, mode)
        unet = loading.load_teacher_unet(root, weights_dir, dtype)
        if mode == "student":
            unet = load_student_unet(unet, weights_dir, dtype)
        tokenizer, text_encoder = loading.load_text_path(root, weights_dir, dtype)
        scheduler = loading.load_scheduler(root, weights_dir, run.spacing)
        if mode == "student":  # the student's output may be the clean latent (the one-step recipe), not epsilon
            scheduler = loading.with_prediction_type(scheduler, run.trained.prediction_type)
        components = MovieComponents(
            unet=unet, autoencoder=loading.load_autoencoder(vae_kind, root, weights_dir, dtype),
            text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            vae_scaling_factor=loading.vae_scaling_factor(root), vae_kind=vae_kind,
        )
        return cls(_to_device(components, run.device), run)

    @classmethod
    def random_weights(cls, run: ResolvedRun) -> "MovieEditor":
        """Real-size InstructPix2Pix UNet, VAE or TAESD and CLIP-L text encoder with random weights; no tokenizer."""
        from diffusers import EulerDiscreteScheduler

        from vedit_cli.models import architectures as arch
        from vedit_cli.models.student_architecture import DEFAULT_ARCHITECTURE

        config, mode, dtype = run.model, run.mode, run.dtype
        vae_kind = _vae_kind(config.vae, mode)
        if mode == "student":  # MoViE's slimmer student (models.student_architecture), its guidance embedding
            unet = arch.build_student_unet(DEFAULT_ARCHITECTURE, device="cpu", dtype=dtype)
            guidance_embedding.attach(unet, guidance_embedding.for_unet(unet))
        else:
            unet = arch.build_unet(8, device="cpu", dtype=dtype)
        autoencoder = (arch.build_vae if vae_kind == "full" else arch.build_taesd)(device="cpu", dtype=dtype)
        components = MovieComponents(
            unet=unet, autoencoder=autoencoder, text_encoder=arch.build_text_encoder(device="cpu", dtype=dtype),
            tokenizer=None, scheduler=loading.with_spacing(EulerDiscreteScheduler(**loading.IP2P_SCHEDULER), run.spacing),
            vae_scaling_factor=loading.SD_VAE_SCALING_FACTOR, vae_kind=vae_kind,
        )
        return cls(_to_device(components, run.device), run)

    # 1. Per-clip state -----------------------------------------------------------------------------------------
    def prepare(self, prompt: str) -> None:
        """Encode the prompt and the empty prompt once per clip; start a new clip."""
        with torch.inference_mode():
            self._text = (self._encode_text(prompt), self._encode_text(""))
        self.reset()

    def seek(self, frame_index: int) -> None:
        """The runner's clip index of the next window's first frame (decides which frames are anchor keyframes)."""
        self._frame_index = frame_index

    def reset(self) -> None:
        self._noise: torch.Tensor | None = None
        self._frame_index = 0
        if self.anchor_cache is not None:
            self.anchor_cache.clear()

    # 2. Editing ------------------------------------------------------------------------------------------------
    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        """Edit T frames; batched frames give what T single-frame calls would."""
        if self._text is None:
            raise RuntimeError("MovieEditor.prepare(prompt) must be called before edit()")
        c = self.components
        with torch.inference_mode():
            frames = frames_tchw.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
            image_latents = sampling.encode_image_latents(c.autoencoder, frames, c.vae_scaling_factor)
            latents = torch.cat([self._denoise(image_latents[segment], keyframe)
                                 for segment, keyframe in self._segments(frames.shape[0])])
            edited = sampling.decode_latents(c.autoencoder, latents)
        self._frame_index += frames.shape[0]
        return edited.to(device=frames_tchw.device, dtype=frames_tchw.dtype)

    def _denoise(self, image_latents: torch.Tensor, keyframe: bool) -> torch.Tensor:
        cond = sampling.Conditioning(*self._text, image_latents=image_latents, class_labels=self._class_labels())
        noise = self._clip_noise(tuple(image_latents.shape[1:]))
        cache = self.anchor_cache
        if cache is None:
            return sampling.denoise(self.components.unet, self.components.scheduler, noise, cond, self.plan, self.steps)
        cache.frames_per_pass = image_latents.shape[0]
        if keyframe:
            cache.begin_recording()
        latents = sampling.denoise(self.components.unet, self.components.scheduler, noise, cond, self.plan,
                                   self.steps, on_step=lambda index: setattr(cache, "step", index))
        cache.commit()
        return latents

    def _segments(self, count: int) -> list[tuple[slice, bool]]:
        """Runs of frames denoised together: each anchor keyframe alone (it records), the others batched."""
        if self.anchor_cache is None:
            return [(slice(0, count), False)]
        segments, start = [], 0
        for offset in range(count):
            if self._is_keyframe(self._frame_index + offset):
                if offset > start:
                    segments.append((slice(start, offset), False))
                segments.append((slice(offset, offset + 1), True))
                start = offset + 1
        if start < count:
            segments.append((slice(start, count), False))
        return segments

    def _is_keyframe(self, index: int) -> bool:
        interval = self.config.keyframe_interval
        return index == 0 or (interval > 0 and index % interval == 0)

    def _clip_noise(self, latent_shape: tuple[int, ...]) -> torch.Tensor:
        """The clip's one noise tensor, drawn from the seed at the first frame."""
        if self._noise is None or tuple(self._noise.shape[1:]) != latent_shape:
            self._noise = sampling.clip_noise(self.config.seed, latent_shape, self.device, self.dtype)
        return self._noise

    def _class_labels(self) -> torch.Tensor | None:
        if self.mode != "student":
            return None
        return guidance_embedding.guidance_labels(self.config.image_guidance_scale, self.config.guidance_scale,
                                                  1, self.device)

    def _encode_text(self, prompt: str) -> torch.Tensor:
        """CLIP hidden states [1, 77, D]; without a tokenizer, fixed ids (benchmarks on random weights)."""
        c = self.components
        if c.tokenizer is None:
            ids = torch.full((1, TOKENS), c.text_encoder.config.eos_token_id, dtype=torch.long)
            ids[0, 0] = c.text_encoder.config.bos_token_id
        else:
            ids = c.tokenizer(prompt, padding="max_length", max_length=c.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
        return c.text_encoder(ids.to(self.device))[0].to(self.dtype)

    # 3. Introspection ------------------------------------------------------------------------------------------
    def stage_modules(self) -> dict[str, torch.nn.Module]:
        c = self.components
        return {"text_encoder": c.text_encoder, "encode": c.autoencoder.encoder, "unet": c.unet,
                "decode": c.autoencoder.decoder}

    def _describe(self) -> str:
        passes = len(self.plan.passes)
        vae = "full VAE" if self.components.vae_kind == "full" else "TAESD"
        anchor = ""
        if self.config.anchor:
            every = self.config.keyframe_interval
            anchor = f", anchor attention ({f'keyframe every {every}' if every else 'first frame'})"
        recipe = f" (off-recipe: trained for {self.run.trained_steps})" if self.run.off_recipe else ""
        return (f"movie {self.mode}: {self.steps} step{'s' if self.steps > 1 else ''}{recipe} x {passes} "
                f"pass{'es' if passes > 1 else ''}, {vae}{anchor}, {self.device.type} {dtype_name(self.dtype)}")


def _vae_kind(choice: str, mode: str) -> str:
    """auto: the full VAE for the teacher, TAESD for the student (MoViE Table 1)."""
    if choice == "auto":
        return "tiny" if mode == "student" else "full"
    return choice


def _to_device(components: MovieComponents, device: torch.device) -> MovieComponents:
    """Move to the device; convolution-heavy modules go channels-last (oneDNN and cuDNN run them faster:
    TAESD encode/decode 3x, the UNet 5-16% on this CPU in bf16)."""
    for module in (components.unet, components.autoencoder):
        module.to(device, memory_format=torch.channels_last)
    components.text_encoder.to(device)
    return components
