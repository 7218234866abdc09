"""LCM-LoRA: latent consistency distillation of a Stable Diffusion base into a LoRA, `train_lcm_lora(config)`.

Latent Consistency Models (Luo et al., arXiv 2310.04378) distilled into a LoRA (LCM-LoRA, Luo et al., arXiv
2311.05556), as diffusers' examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py. For every sample:
- latents z0 (the VAE's sampled posterior, scaled); n ~ U{0..N-1} on the solver grid of N = `ddim_timesteps`
  timesteps (k = T // N, grid = (1..N) * k - 1: [k-1, 2k-1, ..., T-1]); start s = grid[n], end e = max(s - k, 0);
  z_s = the scheduler's add_noise(z0, noise, s), on the base's own stored schedule (nothing hard-coded);
- guidance w ~ U[guidance_range]; the teacher (the frozen base UNet, no LoRA) predicts x0 and the noise at z_s with
  the caption and with the empty prompt, combined as the script's code does, in the LCM paper's form
  cond + w * (cond - uncond) (= Imagen's guidance scale w + 1); one DDIM step from s to e (`DDIMSolver`) gives x_e;
- the target is the consistency function f(x, t) = c_skip(t) x + c_out(t) x0_pred(x, t) of the UNet with the EMA
  LoRA at (x_e, e), without gradient; the student is f of the UNet with the online LoRA at (z_s, s); the boundary
  scalings are LCMScheduler's: c_skip = sd^2 / ((a t)^2 + sd^2), c_out = a t / sqrt((a t)^2 + sd^2), sd = 0.5,
  a = `timestep_scaling` (10);
- the loss is the pseudo-Huber sqrt((f_student - f_target)^2 + c^2) - c (`loss_type` "huber", c = `huber_c`) or
  the squared error ("l2"), averaged over the latent.

Choices (where this differs from the diffusers LoRA script, and why):
- EMA target: the LoRA script takes the target from the online student under no_grad; here, as the LCM paper's
  theta^- and diffusers' full-model script (train_lcm_distill_sd_wds.py, --ema_decay 0.95), the target's LoRA is the
  EMA (`ema_decay`) of the online LoRA. The base is frozen, so an EMA of the LoRA tensors is the EMA of the whole
  target network. The EMA tensors are persistent buffers of `LoraStudent` (the trained module), so every checkpoint
  holds them and --resume continues them exactly. They are updated at the first micro-batch of each optimizer
  step, from the weights the previous step left, before the target is computed: the same sequence as the full-model
  script's update right after optimizer.step(). The lag is one step at the end only: the EMA in a checkpoint (and
  after the last step) has not yet absorbed that step's weights; it does at the next step.
- The output is the online LoRA (the paper's and the script's), or the trainer's own EMA of it when
  TrainerConfig.ema_decay is set.
- Teacher: a second, frozen copy of the base UNet in the mixed-precision dtype, as the script's teacher_unet.
- Checkpoints hold the LoRA and its EMA, not the frozen base (re-read from `base` on --resume): for SD1.5 at rank 64
  about 0.5 GB (plus the optimizer's) instead of 3.4 GB for the base's weights.
- caption_dropout (default 0, the script's proportion_empty_prompts) replaces a share of captions by the empty prompt.
- The output file stores lora_B already multiplied by lora_alpha / lora_rank, so every loader (fuse_lcm_lora
  passes no alphas) applies the trained scale.
- Per-sample draws (dropout, posterior noise, n, noise, w, in that order) come from SampleRandom: a sample's
  trajectory does not depend on the batch split, the process count or a resume.

Data: any object with `__len__`, `load(index) -> {"image": uint8 HxWx3 or PIL, "caption": str}` and
`describe(index) -> str`. Output: `<output_dir>/pytorch_lora_weights.safetensors`, diffusers' LoRA file ("unet." + peft
keys), loaded by vedit_cli.backends.svdiff.loading.fuse_lcm_lora or `pipeline.load_lora_weights`; sample it with
LCMScheduler, 2-8 steps, guidance_scale 1-2. Validation writes 4-step LCMScheduler samples of the first captions.

Real scale. diffusers' documented LCM-LoRA SD1.5 command (examples/consistency_distillation/README.md): CC12M
webdataset, --resolution 512 --lora_rank 64 --learning_rate 1e-4 --loss_type huber --adam_weight_decay 0.0
--max_train_steps 1000 --train_batch_size 12 (per GPU) --mixed_precision fp16 --gradient_checkpointing
--use_8bit_adam (w_min 5, w_max 15 and 50 DDIM timesteps by the script's defaults); the README names no GPU count.
Here: LcmLoraConfig(resolution=512, lora_rank=64, lora_alpha=64, loss_type="huber", guidance_range=(5.0, 15.0),
trainer=TrainerConfig(learning_rate=1e-4, adam_weight_decay=0.0, batch_size=12, max_steps=1000, mixed_precision=
"fp16", gradient_checkpointing=True)); 8-bit Adam has no equivalent (AdamW's float32 states: ~0.5 GB at rank 64 instead of ~0.14 GB).
GPU-hour ESTIMATE (not measured): a step costs per sample 3 UNet forwards without gradient (teacher with and without
the caption, EMA target) + a student forward and backward with checkpointing (about 4 forwards) + a VAE encode, about
8 SD1.5 UNet forwards of ~0.68 TFLOP each (339 G multiply-adds at 512x512, BK-SDM's count), so about 65-75 TFLOP for
a batch of 12; at ~120 TFLOP/s sustained on an A100 (fp16, ~40% of peak) that is ~0.6 s per step: the README's 1000
steps take ~0.2 A100-hours per GPU. That command is a demonstration length; for a production LoRA budget the LCM
paper's full distillation of SD (~32 A100-hours, its abstract), e.g. 8 A100s for 4 hours, ~20k steps of 12 x 8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError
from vedit_cli.models.parameterisation import per_sample, predicted_noise, predicted_original
from vedit_cli.train.config import LcmLoraConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.sd_parts import (
    FrozenSD,
    captioned_image,
    load_sd_unet,
    run_recipe,
    stacked,
    write_folder,
)
from vedit_cli.train.trainer import Progress

LORA_FILE = "pytorch_lora_weights.safetensors"
LOSS_TYPES = ("huber", "l2")
SIGMA_DATA = 0.5  # the consistency function's data scale (LCMScheduler, Song et al.'s consistency models)
VALIDATION_STEPS = 4


def train_lcm_lora(config: LcmLoraConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and write `<output_dir>/pytorch_lora_weights.safetensors`; returns config.output_dir."""
    check_lcm_options(config)
    return run_recipe(config, LcmLoraRecipe, LORA_FILE, progress)


def check_lcm_options(config: LcmLoraConfig) -> None:
    """One ConfigError line per bad LCM option, before anything on disk changes."""
    low, high = config.guidance_range
    if config.loss_type not in LOSS_TYPES:
        raise ConfigError(f"--loss-type must be one of {', '.join(LOSS_TYPES)}, got {config.loss_type!r}")
    if not 0 <= low <= high:
        raise ConfigError(f"--guidance-range must be LOW HIGH with 0 <= LOW <= HIGH, got {low} {high}")
    if config.lora_rank < 1 or config.lora_alpha <= 0 or not config.lora_target_modules:
        raise ConfigError("--lora-rank must be at least 1, --lora-alpha above 0, and --lora-target-modules non-empty")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    if config.huber_c <= 0 or config.timestep_scaling <= 0:
        raise ConfigError("--huber-c and --timestep-scaling must be above 0")
    schedule = Path(config.base) / "scheduler" / "scheduler_config.json"
    steps = json.loads(schedule.read_text()).get("num_train_timesteps", 1000) if schedule.is_file() else 1000
    if not 1 <= config.ddim_timesteps <= steps:
        raise ConfigError(f"--ddim-timesteps must be between 1 and the base's {steps} training timesteps, "
                          f"got {config.ddim_timesteps}")


# 1. The consistency-distillation math (diffusers' script, on tensors of any batch)
def boundary_scalings(timesteps: torch.Tensor, timestep_scaling: float, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out) of f(x, t) = c_skip x + c_out x0_pred: c_skip(0) = 1, c_out(0) = 0 (LCMScheduler's)."""
    scaled = timestep_scaling * timesteps.float()
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


class DDIMSolver:
    """The skipping-step DDIM solver: grid[n] = (n + 1) * k - 1 with k = T // N, and one deterministic DDIM step
    from grid[n] to grid[n] - k (alpha_bar_prev = alpha_bar[grid[n - 1]], or alpha_bar[0] for n = 0)."""

    def __init__(self, alphas_cumprod: torch.Tensor, ddim_timesteps: int):
        total = len(alphas_cumprod)
        if not 1 <= ddim_timesteps <= total:
            raise ConfigError(f"--ddim-timesteps must be between 1 and {total}, got {ddim_timesteps}")
        self.skip = total // ddim_timesteps
        self.timesteps = torch.from_numpy(
            np.round(np.arange(1, ddim_timesteps + 1) * self.skip).astype(np.int64) - 1)
        self.alphas_cumprod_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[self.timesteps[:-1]]]).float()

    def to(self, device) -> DDIMSolver:
        self.timesteps, self.alphas_cumprod_prev = self.timesteps.to(device), self.alphas_cumprod_prev.to(device)
        return self

    def start_and_end(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_{n+k}, t_n): the grid timestep and the one a solver step reaches (clamped at 0)."""
        start = self.timesteps[index]
        return start, (start - self.skip).clamp(min=0)

    def step(self, x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        alpha_prev = per_sample(self.alphas_cumprod_prev, index, x0.ndim)
        return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * noise


def consistency_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float) -> torch.Tensor:
    """[B] pseudo-Huber sqrt(d^2 + c^2) - c or squared error d^2, averaged over every other dimension."""
    difference = prediction.float() - target.float()
    if loss_type == "huber":
        error = torch.sqrt(difference**2 + huber_c**2) - huber_c
    else:
        error = difference**2
    return error.flatten(1).mean(dim=1)


# 2. The trained module: base UNet + LoRA (trainable) + the LoRA's EMA (buffers)
def lora_config(config: LcmLoraConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                      target_modules=list(config.lora_target_modules), lora_dropout=0.0)


def _buffer_name(parameter_name: str) -> str:
    return parameter_name.replace(".", "__")  # buffer names cannot hold dots


class LoraStudent(torch.nn.Module):
    """`unet` (frozen) with a LoRA adapter (the only requires_grad parameters) and, as persistent buffers under
    `ema_lora`, the EMA of every LoRA tensor. forward = the online UNet's output; `target_output` = the EMA one.
    Its state dict leaves out the frozen base weights (a checkpoint is the LoRA and its EMA)."""

    def __init__(self, unet, lora, seed: int = 0):
        super().__init__()
        unet.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # lora_A's random init: the same for every run of the same seed
            unet.add_adapter(lora)
        self.unet = unet
        self.lora_names = [name for name, parameter in unet.named_parameters() if parameter.requires_grad]
        if not self.lora_names:
            raise ConfigError(f"--lora-target-modules {', '.join(lora.target_modules)} match no layer of the UNet")
        self.ema_lora = torch.nn.Module()
        parameters = dict(unet.named_parameters())
        for name in self.lora_names:
            self.ema_lora.register_buffer(_buffer_name(name), parameters[name].detach().clone())
        self._frozen_keys = {f"unet.{name}" for name, p in unet.named_parameters() if not p.requires_grad}
        # identical on every rank by construction: DDP need not broadcast them at every forward
        self._ddp_params_and_buffers_to_ignore = [f"ema_lora.{_buffer_name(name)}" for name in self.lora_names]
        self.register_state_dict_post_hook(_drop_frozen_keys)
        self.register_load_state_dict_post_hook(_frozen_keys_are_not_missing)

    def forward(self, sample, timesteps, encoder_hidden_states) -> torch.Tensor:
        return self.unet(sample, timesteps, encoder_hidden_states).sample

    def ema_tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self.ema_lora, _buffer_name(name)) for name in self.lora_names}

    @torch.no_grad()
    def target_output(self, sample, timesteps, encoder_hidden_states) -> torch.Tensor:
        """The UNet's output with the EMA LoRA in place of the online one (the online tensors are not touched)."""
        inputs = (sample, timesteps, encoder_hidden_states)
        return torch.func.functional_call(self.unet, self.ema_tensors(), inputs).sample

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * online, for every LoRA tensor."""
        parameters = dict(self.unet.named_parameters())
        for name, ema in self.ema_tensors().items():
            ema.lerp_(parameters[name].detach().to(ema.dtype), 1.0 - decay)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()


def _drop_frozen_keys(module: LoraStudent, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in module._frozen_keys:
        state_dict.pop(prefix + key, None)


def _frozen_keys_are_not_missing(module: LoraStudent, incompatible_keys) -> None:
    """The base's weights are not in a checkpoint (the base folder holds them): not missing, even under a wrapper's
    prefix ("module." for DDP)."""
    def frozen(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[start:]) in module._frozen_keys for start in range(len(parts)))

    incompatible_keys.missing_keys[:] = [key for key in incompatible_keys.missing_keys if not frozen(key)]


# 3. The recipe
class LcmLoraRecipe:
    """The trainer's recipe: model = LoraStudent (LoRA trainable, EMA as buffers); teacher UNet, tokenizer, text
    encoder and VAE frozen."""

    def __init__(self, config: LcmLoraConfig):
        self.config, self.source = config, config.data
        self.sd = FrozenSD(config.base)
        self.teacher = load_sd_unet(self.sd.base).requires_grad_(False).eval()
        self.model = LoraStudent(load_sd_unet(self.sd.base), lora_config(config), config.trainer.seed)
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        assert trainable == {f"unet.{name}" for name in self.model.lora_names}, "only the LoRA may train"
        assert all(".lora_" in name for name in trainable), "only the LoRA may train"
        self.solver = DDIMSolver(self.sd.noise_scheduler.alphas_cumprod, config.ddim_timesteps)
        self.prediction_type = self.sd.noise_scheduler.config.prediction_type
        self.ema_step: int | None = None

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        return captioned_image(raw, seed, self.sd, self.config.resolution, self.config.random_flip)

    def collate(self, samples: list[dict]) -> dict:
        return stacked(samples, ("image", "input_ids"))

    def setup(self, accelerator) -> None:
        self.sd.setup(accelerator)
        self.accelerator = accelerator
        self.teacher.to(accelerator.device, self.sd.dtype)
        self.solver.to(accelerator.device)
        self.alphas = self.sd.alphas_cumprod.float().sqrt()
        self.sigmas = (1 - self.sd.alphas_cumprod.float()).sqrt()

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        random = SampleRandom(batch["sample_seed"])
        drop = random.rand() < self.config.caption_dropout
        latents = self.sd.latents(batch["image"], random)
        index = random.randint(self.config.ddim_timesteps).to(latents.device)
        noise = random.randn(*latents.shape[1:]).to(latents.device)
        low, high = self.config.guidance_range
        guidance = (low + (high - low) * random.rand()).to(latents.device)
        text = self.sd.text(batch["input_ids"], drop)
        student = self.accelerator.unwrap_model(model)
        self._update_ema(student, step)
        start, end = self.solver.start_and_end(index)
        noisy = self.sd.noise_scheduler.add_noise(latents, noise, start)
        with torch.no_grad():
            solved = self._teacher_step(noisy, start, index, text, guidance)
            with self.accelerator.autocast():
                target = self._consistency(student.target_output(solved, end, text), solved, end)
        prediction = self._consistency(model(noisy, start, text), noisy, start)
        return consistency_loss(prediction, target, self.config.loss_type, self.config.huber_c)

    def _update_ema(self, student: LoraStudent, step: int) -> None:
        """At the first micro-batch of each optimizer step: fold in the weights the previous step left."""
        if step != self.ema_step:
            student.update_ema(self.config.ema_decay)
            self.ema_step = step

    def _teacher_step(self, noisy, start, index, text, guidance) -> torch.Tensor:
        """One DDIM step from `start` with the teacher's guided x0 and noise: cond + w * (cond - uncond)."""
        both = self.teacher(torch.cat([noisy, noisy]).to(self.sd.dtype), torch.cat([start, start]),
                            torch.cat([text, self.sd.null_text.expand_as(text).float()]).to(self.sd.dtype)).sample
        cond, uncond = both.float().chunk(2)
        w = guidance.reshape(-1, *([1] * (noisy.ndim - 1)))
        guided = {}
        for name, predict in (("x0", predicted_original), ("noise", predicted_noise)):
            with_text, without = (predict(out, start, noisy, self.prediction_type, self.alphas, self.sigmas)
                                  for out in (cond, uncond))
            guided[name] = with_text + w * (with_text - without)
        return self.solver.step(guided["x0"], guided["noise"], index)

    def _consistency(self, output, sample, timesteps) -> torch.Tensor:
        """f(x, t) = c_skip(t) x + c_out(t) x0_pred(x, t)."""
        c_skip, c_out = (c.reshape(-1, *([1] * (sample.ndim - 1)))
                         for c in boundary_scalings(timesteps, self.config.timestep_scaling))
        x0 = predicted_original(output.float(), timesteps, sample, self.prediction_type, self.alphas, self.sigmas)
        return c_skip * sample + c_out * x0

    def validate(self, model, step: int, folder: Path) -> None:
        """4-step LCMScheduler samples (guidance 1) of the first samples' captions, with the online LoRA."""
        from diffusers import LCMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(vae=self.sd.vae, text_encoder=self.sd.text_encoder, tokenizer=self.sd.tokenizer,
                                       unet=model.unet, scheduler=LCMScheduler.from_config(self.sd.scheduler_config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        size = self.config.resolution
        for index in range(min(4, len(self.source))):
            caption = str(self.source.load(index).get("caption", ""))
            image = pipe(caption, height=size, width=size, num_inference_steps=VALIDATION_STEPS, guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(index)).images[0]
            image.save(folder / f"{index:03d}.png")
            (folder / f"{index:03d}.txt").write_text(caption + "\n")

    def save(self, model) -> Path:
        return save_unet_lora(model.unet, Path(self.config.output_dir), self.config.lora_alpha / self.config.lora_rank)


def save_unet_lora(unet, output: Path, scale: float) -> Path:
    """<output>/pytorch_lora_weights.safetensors (diffusers' LoRA format, lora_B x `scale`), written whole."""
    from diffusers import StableDiffusionPipeline

    layers = diffusers_lora_layers(unet, scale)
    return write_folder(output, lambda partial: StableDiffusionPipeline.save_lora_weights(
        str(partial), unet_lora_layers=layers, weight_name=LORA_FILE, safe_serialization=True))


def diffusers_lora_layers(unet, scale: float) -> dict[str, torch.Tensor]:
    """The UNet's LoRA as peft keys (`<module>.lora_A.weight`, `.lora_B.weight`), lora_B multiplied by `scale` =
    lora_alpha / rank, float32. Not passed through convert_state_dict_to_diffusers: that renames only the attention
    projections (to `.lora.down`/`.lora.up`), and diffusers' loader, which decides the format from the first key,
    then silently drops either the attention half or the rest of a LoRA that also targets convolutions."""
    from peft import get_peft_model_state_dict

    return {key: (value * scale if ".lora_B." in key else value).detach().float().cpu().contiguous()
            for key, value in get_peft_model_state_dict(unet).items()}
