"""The `svdiff` backend: streaming edits, one frame at a time, with a recurrent spatial memory (SVDiff, arXiv 2405.19726).

Each frame: TAESD encode -> the first LCM timestep, by deterministic DDIM inversion through the LCM-fused UNet
(default; conditional pass only, memory bypassed) or by seeded forward noising (`--svdiff-init noise`) ->
`steps` LCM steps with classifier-free guidance, where the conditional and unconditional passes carry their own
memories (eq. 8) and each denoising step keeps its own memory from frame to frame -> TAESD decode. Frames come
out as they go in (latency 0); memory and cost per frame do not grow with the clip's length.
"""

from __future__ import annotations

import torch

from vedit_cli.editor import Editor
from vedit_cli.backends.svdiff import sampling
from vedit_cli.backends.svdiff.loading import SvdiffComponents, load_components, random_components
from vedit_cli.errors import ConfigError
from vedit_cli.settings import ResolvedRun


class SvdiffEditor(Editor):
    window_size = 1
    overlap = 0
    latency = 0
    size_multiple = 8

    def __init__(self, components: SvdiffComponents, run: ResolvedRun):
        config = run.model
        self.parts = components
        self.steps = config.steps
        self.guidance_scale = config.guidance_scale
        self.strength = config.strength
        self.seed = config.seed
        self.init = config.svdiff_init
        self.lora_scale = config.lora_scale
        self.embeddings: torch.Tensor | None = None  # [uncond; cond] or [cond], on device
        for module in self._modules():
            module.to(device=components.device, dtype=components.dtype).eval().requires_grad_(False)
        components.taesd.to(memory_format=torch.channels_last)  # TAESD's convolutions run ~3x faster channels-last
        self.description = self._describe()

    @classmethod
    def from_run(cls, run: ResolvedRun) -> "SvdiffEditor":
        return cls(load_components(run), run)

    @classmethod
    def random_weights(cls, run: ResolvedRun) -> "SvdiffEditor":
        return cls(random_components(run), run)

    def _modules(self) -> list[torch.nn.Module]:
        memory = [self.parts.memory] if self.parts.memory is not None else []
        return [self.parts.unet, self.parts.taesd, self.parts.text_encoder, *memory]

    def _describe(self) -> str:
        passes = 2 if self.uses_guidance else 1
        init = (f"DDIM inversion ({self.steps} conditional passes)" if self.init == "inversion"
                else "seeded forward noising")
        lora = {0.0: "SD1.5 without LCM-LoRA", 1.0: "SD1.5 + LCM-LoRA"}.get(self.lora_scale,
                                                                       f"SD1.5 + LCM-LoRA x{self.lora_scale:g}")
        head = f"svdiff: {lora}, {init}, {self.steps} LCM steps x {passes} passes, TAESD"
        if self.parts.random:
            return head + ", random weights (benchmark only)"
        if self.parts.memory is None:
            return head + "; no trained memory weights (svdiff-memory): per-frame LCM editing, no temporal memory"
        return head + f", recurrent {self.parts.memory.config.height}x{self.parts.memory.config.width} memory"

    @property
    def uses_guidance(self) -> bool:
        """CFG runs the unconditional pass only when it changes the result (eq. 8 with lambda = scale - 1 > 0)."""
        return self.guidance_scale > 1.0

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        taesd = self.parts.taesd
        return {"text_encoder": self.parts.text_encoder, "encode": taesd.encoder, "unet": self.parts.unet,
                "decode": taesd.decoder}

    # -- per clip -------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prepare(self, prompt: str) -> None:
        """Encode the prompt (and the empty prompt for CFG) once, and start the stream from M^0."""
        cond = self._encode_text(prompt)
        self.embeddings = torch.cat([self._encode_text(""), cond]) if self.uses_guidance else cond
        self.reset()

    def _encode_text(self, text: str) -> torch.Tensor:
        token_ids = self._token_ids(text).to(self.parts.device)
        return self.parts.text_encoder(token_ids)[0].to(self.parts.dtype)

    def _token_ids(self, text: str) -> torch.Tensor:
        tokenizer = self.parts.tokenizer
        if tokenizer is None:  # random weights: the text encoder's cost does not depend on token values
            config = self.parts.text_encoder.config
            ids = [config.bos_token_id, config.eos_token_id] + [config.eos_token_id] * 75
            return torch.tensor([ids])
        return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    def reset(self) -> None:
        """Forget the stream's memories (the next frame starts from the initial memory M^0)."""
        if self.parts.memory is not None:
            self.parts.memory.clear()

    def flush(self) -> torch.Tensor | None:
        return None  # every frame is emitted by the `edit` call that received it

    # -- memory state: cut a stream and resume it -----------------------------------------------------------------

    def memory_state(self) -> dict[str, torch.Tensor]:
        """The recurrent memories after the last edited frame (empty without trained memory)."""
        return self.parts.memory.memory_state() if self.parts.memory is not None else {}

    def load_memory_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue a stream from `memory_state()` taken earlier; call after `prepare`."""
        if self.parts.memory is not None:
            self.parts.memory.load_memory_state(state)

    # -- per frame ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def edit(self, frames_tchw: torch.Tensor) -> torch.Tensor:
        """Edit each frame in order; frame n sees frames < n only through the memory (causal)."""
        if self.embeddings is None:
            raise ConfigError("svdiff: call prepare(prompt) before edit(frames)")
        edited = [self._edit_frame(frame.unsqueeze(0)) for frame in frames_tchw]
        return torch.cat(edited).to(device=frames_tchw.device, dtype=frames_tchw.dtype)

    def _edit_frame(self, frame_1chw: torch.Tensor) -> torch.Tensor:
        """1. encode  2. reach the first LCM timestep  3. LCM steps with CFG and memories  4. decode."""
        parts = self.parts
        taesd = parts.taesd
        image = frame_1chw.to(device=parts.device, dtype=parts.dtype, memory_format=torch.channels_last)
        latents = taesd.encode(image).latents * taesd.config.scaling_factor
        parts.scheduler.set_timesteps(self.steps, device=parts.device, strength=self.strength)
        timesteps = parts.scheduler.timesteps
        # Seeded per frame: the stream stays deterministic and frame n never depends on n+1.
        generator = torch.Generator(device=parts.device).manual_seed(self.seed)
        latents = self._initial_latents(latents, timesteps, generator)
        denoised = latents
        for step_index, timestep in enumerate(timesteps):
            noise_pred = self._predict_noise(latents, timestep, step_index)
            latents, denoised = parts.scheduler.step(noise_pred, timestep, latents, generator=generator,
                                                     return_dict=False)
        image = taesd.decode(denoised / taesd.config.scaling_factor).sample
        return image.clamp(-1, 1)

    def _initial_latents(self, latents: torch.Tensor, timesteps: torch.Tensor, generator) -> torch.Tensor:
        """The source latent at the first timestep: DDIM-inverted (SVDiff) or forward-noised with the seed."""
        if self.init == "noise":
            return sampling.forward_noise(self.parts.scheduler, latents, timesteps[0], generator)
        grid = sampling.inversion_timesteps(timesteps)
        return sampling.ddim_invert(self._conditional_noise, latents, grid, self.parts.scheduler.alphas_cumprod)

    def _conditional_noise(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The conditional pass alone, with the recurrent memory bypassed (inversion must not touch the stream)."""
        memory = self.parts.memory
        cond = self.embeddings[-1:]
        if memory is None:
            output = self.parts.unet(latents, timestep, cond).sample
        else:
            with memory.bypassed():
                output = self.parts.unet(latents, timestep, cond).sample
        return sampling.as_noise(output, latents, timestep, self.parts.scheduler)

    def _predict_noise(self, latents: torch.Tensor, timestep: torch.Tensor, step_index: int) -> torch.Tensor:
        """eps = (1 + lambda) eps_c - lambda eps_uc with lambda = guidance_scale - 1; memories per step (eq. 8)."""
        batch = self.embeddings.shape[0]
        model_input = latents.expand(batch, -1, -1, -1)
        memory = self.parts.memory
        if memory is None:
            noise_pred = self.parts.unet(model_input, timestep, self.embeddings).sample
        else:  # batch rows [uncond, cond] carry the unconditional and conditional memories
            with memory.at_step(step_index):
                noise_pred = self.parts.unet(model_input, timestep, self.embeddings).sample
        return sampling.guided(noise_pred, self.guidance_scale) if self.uses_guidance else noise_pred
