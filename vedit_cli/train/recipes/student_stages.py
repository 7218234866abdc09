"""The MoViE student's three training stages, each a recipe of the accelerate trainer (vedit_cli.train.trainer).

1. mobile: the slimmed UNet (vedit_cli.models.student_architecture) learns to reproduce the teacher's prediction,
   for each of its three conditionings (instruction + image, image only, neither) drawn with equal chance, so
   that the teacher's guidance formula still works on it. x_t: the data's edited images, noised at t ~ U[0, 1000).
2. guidance (Meng et al., arXiv 2210.03142, with MoViE's two scales): one conditional pass of the student, given
   (s_I, s_T) through the guidance embedding, regresses the teacher's three-pass guided prediction. x_t: the data's
   edited images noised at t ~ U[0, 1000), the distribution the teacher was trained on, so its targets are
   trustworthy at every t (teacher trajectories would only visit its sampler's 10 timesteps).
3. onestep (MoViE Fig. 3): the student reads a state x_t of the guided teacher's own denoising trajectory
   (trailing spacing: the first state is pure noise at t=999), with that trajectory's scales, and predicts the
   clean latent (one Euler step to sigma 0 returns it exactly). Its output is the teacher's own v where the teacher
   predicts v, read as x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v: stage 3 then starts from the stage-2 student's own
   one-step estimate instead of re-learning its output (at t=999, v is about -x0); for an epsilon teacher, whose x0
   would divide by sqrt(a_t) (0.07 at t=999), the output is the clean latent itself ("sample"). Loss per sample:
   distillation_weight * |x0_student - x0_teacher|^2 + adversarial_weight * hinge generator term, plus the
   discriminator's hinge term (vedit_cli.train.recipes.discriminator), trained in the same step (the
   generator term reads the heads detached; the discriminator term reads the student's latent detached).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vedit_cli.train.randomness import SampleRandom
from vedit_cli.train.recipes.pix2pix import collate_triplets, prepare_triplet
from vedit_cli.train.recipes.student_parts import FrozenTeacher, draw_scales, save_student


class _TripletStage:
    """Data and output shared by the mobile and guidance stages."""

    model: torch.nn.Module

    def __init__(self, config, teacher: FrozenTeacher, source, output: Path, architecture: str):
        from diffusers import DDPMScheduler

        self.config, self.teacher, self.source, self.output = config, teacher, source, Path(output)
        self.architecture = architecture
        self.noise_scheduler = DDPMScheduler.from_config(teacher.scheduler_config)

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        c = self.config
        return prepare_triplet(raw, seed, self.teacher.tokenizer, c.resolution, c.random_resize, c.random_flip)

    def collate(self, samples: list[dict]) -> dict:
        return collate_triplets(samples)

    def setup(self, accelerator) -> None:
        self.device = accelerator.device
        self.teacher.to(self.device)
        self.noise_scheduler.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)

    def noised(self, batch: dict, random) -> tuple:
        """(x_t, t, image latents, text) from the batch's edited images."""
        latents, image_latents, text = self.teacher.encode(batch, random)
        timesteps = random.randint(self.noise_scheduler.config.num_train_timesteps).to(self.device)
        noise = random.randn(*latents.shape[1:]).to(self.device)
        return self.noise_scheduler.add_noise(latents, noise, timesteps), timesteps, image_latents, text

    def validate(self, model, step: int, folder: Path) -> None:
        pass

    def spacing(self) -> str:
        return self.teacher.scheduler_config.get("timestep_spacing", "linspace")


class MobileStage(_TripletStage):
    """Stage 1: the slim UNet reproduces the teacher's prediction (epsilon or v) under each conditioning."""

    def __init__(self, config, teacher: FrozenTeacher, source, output: Path, architecture: str, student_unet):
        super().__init__(config, teacher, source, output, architecture)
        self.model = student_unet

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        random = SampleRandom(batch["sample_seed"])
        which = (random.rand() * 3).long().clamp(max=2).to(self.device)  # 0: text+image, 1: image, 2: neither
        x_t, timesteps, image_latents, text = self.noised(batch, random)
        null = self.teacher.null_text.expand_as(text)
        text = torch.where((which > 0)[:, None, None], null, text)
        image_latents = image_latents * (which < 2)[:, None, None, None]
        inputs = torch.cat([x_t, image_latents], dim=1)
        with torch.no_grad():
            target = self.teacher.unet(inputs, timesteps, text).sample
        prediction = model(inputs, timesteps, text).sample
        return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    def save(self, model) -> Path:
        from vedit_cli.models import guidance_embedding

        embedding = guidance_embedding.for_unet(model)  # zero: this student's one pass is its conditional pass
        return save_student(self.output, model, embedding, trained_steps=10, spacing=self.spacing(),
                            prediction_type=self.teacher.prediction_type, architecture=self.architecture)


class GuidanceStage(_TripletStage):
    """Stage 2: one pass with (s_I, s_T) embedded regresses the teacher's three-pass guided prediction."""

    def __init__(self, config, teacher: FrozenTeacher, source, output: Path, architecture: str, student_unet):
        super().__init__(config, teacher, source, output, architecture)
        self.model = student_unet  # with its guidance embedding attached (class_embedding)

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        c = self.config
        random = SampleRandom(batch["sample_seed"])
        scales = draw_scales(random, c.text_scale_range, c.image_scale_range).to(self.device)
        x_t, timesteps, image_latents, text = self.noised(batch, random)
        target = self.teacher.guided(x_t, timesteps, image_latents, text, scales)
        prediction = model(torch.cat([x_t, image_latents], dim=1), timesteps, text, class_labels=scales).sample
        return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    def save(self, model) -> Path:
        return save_student(self.output, model, model.class_embedding, trained_steps=self.config.teacher_steps,
                            spacing=self.spacing(), prediction_type=self.teacher.prediction_type,
                            architecture=self.architecture)


class PixelDecoderTerm(torch.nn.Module):
    """The student's one-step latent decoded by the TAESD `vedit edit` decodes it with (frozen; gradients flow through
    it) against the teacher's final latent decoded by the teacher's own VAE: what `vedit edit` shows against what the
    teacher shows. Per-sample MSE in pixels ([-1, 1])."""

    def __init__(self, taesd, vae, scaling_factor: float):
        super().__init__()
        self.taesd, self.vae, self.scaling_factor = taesd.requires_grad_(False).eval(), vae, scaling_factor

    def forward(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self.vae.decode(target / self.scaling_factor).sample.clamp(-1, 1)
        # TAESD reads the UNet's latents divided by its own scaling factor (1 for TAESD), as inference decodes them;
        # only the target is clamped: a clamped output would give no gradient where the student overshoots
        shown = self.taesd.decode(x0 / getattr(self.taesd.config, "scaling_factor", 1.0)).sample
        return F.mse_loss(shown.float(), wanted.float(), reduction="none").mean(dim=(1, 2, 3))


def load_taesd(folder: Path, latent_channels: int):
    """A TAESD (AutoencoderTiny) folder, safetensors, every weight present, reading `latent_channels`; else one line."""
    import json

    from diffusers import AutoencoderTiny

    from vedit_cli.errors import WeightsMissingError

    folder = Path(folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("_class_name") != "AutoencoderTiny" or not any(folder.glob("*.safetensors")):
        raise WeightsMissingError(f"--decoder {folder}: not a TAESD folder (config.json of an AutoencoderTiny and "
                                  "safetensors weights)")
    if config.get("latent_channels", 4) != latent_channels:
        raise WeightsMissingError(f"--decoder {folder}: its latents have {config.get('latent_channels', 4)} "
                                  f"channels, the teacher's {latent_channels}")
    taesd, info = AutoencoderTiny.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                                  output_loading_info=True)
    if info["missing_keys"]:
        raise WeightsMissingError(f"--decoder {folder}: {len(info['missing_keys'])} TAESD weights are missing "
                                  f"(e.g. {info['missing_keys'][0]})")
    return taesd


def load_decoder_term(config, teacher: FrozenTeacher) -> PixelDecoderTerm | None:
    """The decoder term when config.decoder_weight is above 0 (config.decoder: a TAESD folder, safetensors)."""
    if not config.decoder_weight:
        return None
    taesd = load_taesd(config.decoder, teacher.vae.config.latent_channels)
    return PixelDecoderTerm(taesd, teacher.vae, teacher.scaling_factor)


class StudentWithHeads(torch.nn.Module):
    """The one-step stage's trained module: the student UNet and the discriminator's heads. Its forward returns
    the per-sample loss, so that DDP sees one forward per step."""

    def __init__(self, student_unet, discriminator, noise_scheduler, config, decoder=None,
                 prediction_type: str = "sample"):
        super().__init__()
        self.student, self.discriminator = student_unet, discriminator
        self.noise_scheduler, self.config = noise_scheduler, config
        self.prediction_type = prediction_type  # what the student's output is (onestep_prediction_type)
        # PixelDecoderTerm or None, held outside the module (like the discriminator's frozen teacher): its frozen
        # TAESD and VAE are never saved in checkpoints, and resuming with another --decoder-weight works
        object.__setattr__(self, "decoder", decoder)

    def enable_gradient_checkpointing(self) -> None:
        """The trainer's --gradient-checkpointing: the student UNet, and the frozen teacher UNet whose encoder the
        discriminator runs with gradients to the student (diffusers checkpoints only while gradients are on, so the
        teacher's no-grad trajectory sampling is unaffected)."""
        self.student.enable_gradient_checkpointing()
        self.discriminator.teacher.enable_gradient_checkpointing()

    def clean_latent(self, model_input, timesteps, image_latents, text, scales) -> torch.Tensor:
        """The student's one-step x0 at the trajectory state `model_input` (the DDPM-scaled x_t at `timesteps`)."""
        from vedit_cli.models.parameterisation import predicted_original

        output = self.student(torch.cat([model_input, image_latents], dim=1), timesteps, text,
                              class_labels=scales).sample
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(output.device)
        return predicted_original(output, timesteps.round().long(), model_input, self.prediction_type,
                                  alpha_bar.sqrt(), (1 - alpha_bar).sqrt())

    def forward(self, batch: dict, disc_timesteps, disc_noise) -> tuple[torch.Tensor, dict]:
        from vedit_cli.train.recipes.discriminator import hinge_losses

        c = self.config
        image_latents, text, scales = batch["image_latents"], batch["text"], batch["scales"]
        x0 = self.clean_latent(batch["model_input"], batch["timesteps"], image_latents, text, scales)
        target = batch["final"]
        distillation = F.mse_loss(x0.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        loss = c.distillation_weight * distillation
        terms = {"distillation": distillation.detach()}
        if self.decoder is not None:
            decoded = self.decoder(x0, target)
            loss = loss + c.decoder_weight * decoded
            terms["decoder"] = decoded.detach()
        if c.adversarial_weight > 0:
            disc = self.discriminator
            fake = disc.features(self.noise_scheduler.add_noise(x0, disc_noise, disc_timesteps), image_latents,
                                 text, disc_timesteps)
            with torch.no_grad():
                real = disc.features(self.noise_scheduler.add_noise(target, disc_noise, disc_timesteps),
                                     image_latents, text, disc_timesteps)
            d_loss, g_loss = hinge_losses(disc.logits(real), disc.logits([f.detach() for f in fake]),
                                          disc.logits(fake, frozen_heads=True))
            loss = loss + c.adversarial_weight * g_loss + d_loss
            terms.update(generator=g_loss.detach(), discriminator=d_loss.detach())
        return loss, terms


class OneStepStage:
    """Stage 3: one step from the teacher's trajectory states to its final latent, with an adversarial term."""

    def __init__(self, config, teacher: FrozenTeacher, trajectories, output: Path, architecture: str, student_unet,
                 decoder: PixelDecoderTerm | None = None):
        from diffusers import DDPMScheduler

        from vedit_cli.train.recipes.discriminator import TeacherFeatureDiscriminator

        self.config, self.teacher, self.source, self.output = config, teacher, trajectories, Path(output)
        self.architecture = architecture
        self.noise_scheduler = DDPMScheduler.from_config(teacher.scheduler_config)
        self.model = StudentWithHeads(student_unet, TeacherFeatureDiscriminator(teacher.unet), self.noise_scheduler,
                                      config, decoder,
                                      onestep_prediction_type(config.onestep_prediction, teacher.prediction_type))
        if config.adversarial_weight == 0:  # the ablation: unused heads would stall DDP's gradient reduction
            self.model.discriminator.requires_grad_(False)

    def prepare_sample(self, raw: dict, seed: int) -> dict:
        return raw

    def collate(self, samples: list[dict]) -> dict:
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def setup(self, accelerator) -> None:
        self.device = accelerator.device
        self.teacher.to(self.device)
        self.noise_scheduler.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)
        if self.model.decoder is not None:
            self.model.decoder.taesd.to(self.device)
        self.source.build(self.teacher, accelerator)

    def loss(self, model, batch: dict, step: int) -> torch.Tensor:
        c = self.config
        random = SampleRandom(batch["sample_seed"])
        states = batch["model_inputs"].shape[1]
        pure_noise = random.rand() < c.noise_fraction
        index = torch.where(pure_noise, torch.zeros(len(pure_noise), dtype=torch.long), random.randint(states))
        rows = torch.arange(len(index))
        disc_timesteps = random.randint(c.discriminator_max_timestep).to(self.device)
        disc_noise = random.randn(*batch["final"].shape[1:]).to(self.device)
        inputs = {"model_input": batch["model_inputs"][rows, index].to(self.device),
                  "timesteps": batch["timesteps"][rows, index].to(self.device),
                  "image_latents": batch["image_latents"].to(self.device), "scales": batch["scales"].to(self.device),
                  "final": batch["final"].to(self.device), "text": self.teacher.text(batch["input_ids"])}
        loss, self.last_terms = model(inputs, disc_timesteps, disc_noise)
        return loss

    def validate(self, model, step: int, folder: Path) -> None:
        pass

    def save(self, model) -> Path:
        student = model.student
        return save_student(self.output, student, student.class_embedding, trained_steps=1, spacing="trailing",
                            prediction_type=model.prediction_type, architecture=self.architecture)


def onestep_prediction_type(choice: str, teacher_prediction_type: str) -> str:
    """The one-step student's output: "auto" keeps a v teacher's v (x0 = sqrt(a) x_t - sqrt(1 - a) v is well
    conditioned at every t) and takes the clean latent itself otherwise (an epsilon teacher's x0 divides by sqrt(a_t))."""
    if choice != "auto":
        return choice
    return "v_prediction" if teacher_prediction_type == "v_prediction" else "sample"
