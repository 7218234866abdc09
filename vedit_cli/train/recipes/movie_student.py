"""`vedit train movie-student`: MoViE's student (arXiv 2412.06578) from an InstructPix2Pix teacher, in stages
(vedit_cli.train.recipes.student_stages): mobile (slim the UNet and recover the teacher), guidance (multimodal
guidance distillation: one pass instead of three), onestep (adversarial distillation from the teacher's 10-step
trajectories to one step). `train_movie_student(MovieStudentConfig(...)) -> Path`.

MovieStudentConfig fields (everything but teacher, data and output_dir has a default):
- teacher: the InstructPix2Pix folder (diffusers layout, safetensors): WEIGHTS/instruct-pix2pix.
- data: triplets as `vedit train pix2pix` reads them (a path, or an object with __len__/load/describe). The mobile
  and guidance stages noise the edited images; the onestep stage reads only sources and instructions.
- output_dir: the student folder to write (WEIGHTS/movie-student, picked up by `vedit edit --backend movie`).
- stages: a subset of ("mobile", "guidance", "onestep"), run in that order; each starts from the previous stage's
  student in the work folder (WORK/<stage>/movie-student). The stock architecture skips mobile (nothing to recover).
- architecture: stock | no-top-attention | mobile (vedit_cli.models.student_architecture).
- trainer: a TrainerConfig (batch, learning rate, checkpoints, resume, ...); each stage gets max_steps from
  mobile_steps / guidance_steps / onestep_steps and its own work folder WORK/<stage>.
- text_scale_range (1, 12), image_scale_range (1, 2): the (s_T, s_I) drawn for every sample of stages 2 and 3.
- teacher_steps (10): the guided teacher's steps (trailing spacing) whose states train the one-step student, and
  the step count stored for the stage-2 student; trajectories (4096): teacher trajectories computed once into
  WORK/onestep/trajectories.safetensors (the K states, the final latent and the source's latents: 192 KiB per
  trajectory at 256x256 with K=10 in float32), each process computing its share (record i on process
  i % processes); samples are read from the file one at a time, never the whole cache into memory.
- noise_fraction (0.5): share of one-step samples taken at the trajectory's first state (pure noise: the recipe's
  one step); distillation_weight (1), adversarial_weight (0.1; 0 = the "no adversarial term" ablation),
  discriminator_max_timestep (750): the discriminator sees both latents noised at t ~ U[0, this).
- decoder (a TAESD folder), decoder_weight (0: off): a pixel term in the one-step stage, the student's latent decoded
  by that TAESD (frozen, gradients flow through it) against the teacher's final latent decoded by the teacher's VAE:
  it trains the student for the tiny autoencoder it is shown through (student_stages.PixelDecoderTerm).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from vedit_cli.errors import ConfigError, OutputError
from vedit_cli.train.config import STUDENT_STAGES, MovieStudentConfig, TrainerConfig  # noqa: F401 (the API)
from vedit_cli.train.data.samples import BadSample
from vedit_cli.train.data.triplets import open_triplets
from vedit_cli.train.trainer import Progress, train

STUDENT_FOLDER = "movie-student"


def stages_to_run(config: MovieStudentConfig) -> tuple[str, ...]:
    """The asked stages in order; the stock architecture has no mobile stage."""
    order = [stage for stage in STUDENT_STAGES if stage in config.stages]
    if config.architecture == "stock" and "mobile" in order:
        order.remove("mobile")
    return tuple(order)


def train_movie_student(config: MovieStudentConfig, progress: Progress | None = None) -> Path:
    """Run every asked stage, then copy the last stage's student to config.output_dir; returns it."""
    from vedit_cli.train.recipes.student_parts import FrozenTeacher
    from vedit_cli.train.recipes.student_stages import load_decoder_term

    config.check()
    dataclasses.replace(config.trainer, work_dir=config.work_dir()).check()
    output = Path(config.output_dir)
    if output.exists() and not (config.overwrite or config.trainer.resume):
        raise OutputError(f"{output} already exists; pass --overwrite to replace it or --resume to continue")
    stages = stages_to_run(config)
    if not stages:
        raise ConfigError("nothing to train: the stock architecture has no mobile stage (add --stage guidance)")
    teacher = FrozenTeacher(config.teacher)
    # loaded (and checked) before the first stage, not hours later
    decoder = load_decoder_term(config, teacher) if "onestep" in stages else None
    data = open_triplets(config.data, config.columns) if isinstance(config.data, (str, Path)) else config.data
    work = config.work_dir()
    last = None
    for stage in stages:
        trainer = dataclasses.replace(config.trainer, work_dir=work / stage, max_steps=config.stage_steps(stage))
        recipe = _recipe(stage, config, teacher, data, work, decoder)
        report = progress or (lambda event: None)
        last = train(recipe, trainer, lambda event, stage=stage: report({**event, "stage": stage})).output
    return _publish(Path(last), output)


def _recipe(stage: str, config: MovieStudentConfig, teacher, data, work: Path, decoder=None):
    """The stage's recipe; `decoder`: the one-step stage's PixelDecoderTerm (student_stages.load_decoder_term)."""
    from vedit_cli.models.student_architecture import slim_unet
    from vedit_cli.train.recipes import student_stages as stages

    output = work / stage / STUDENT_FOLDER
    if stage == "mobile":
        student, _, _ = slim_unet(teacher.unet, config.architecture)
        return stages.MobileStage(config, teacher, data, output, config.architecture, student.requires_grad_(True))
    if stage == "guidance":
        student = _starting_student(work / "mobile" / STUDENT_FOLDER, config, teacher, "mobile")
        return stages.GuidanceStage(config, teacher, data, output, config.architecture, student)
    student = _starting_student(work / "guidance" / STUDENT_FOLDER, config, teacher, "guidance")
    trajectories = TeacherTrajectories(config, data, work / "onestep" / "trajectories.safetensors")
    return stages.OneStepStage(config, teacher, trajectories, output, config.architecture, student, decoder)


def _starting_student(folder: Path, config: MovieStudentConfig, teacher, previous: str):
    """The previous stage's student; the teacher's own UNet (with a zero guidance embedding) for a stock student
    that has no mobile stage."""
    from vedit_cli.models import guidance_embedding
    from vedit_cli.models.student_architecture import slim_unet
    from vedit_cli.train.recipes.student_parts import load_student

    if (folder / "unet").is_dir():
        student, metadata = load_student(folder, "cpu")
        if metadata.get("architecture", config.architecture) != config.architecture:
            raise ConfigError(f"{folder} holds a {metadata.get('architecture')} student, not {config.architecture}: "
                              "use another --work-dir or the same --architecture")
        return student.requires_grad_(True).train()
    if config.architecture == "stock" and previous == "mobile":
        student, _, _ = slim_unet(teacher.unet, "stock")
        guidance_embedding.attach(student, guidance_embedding.for_unet(student))
        return student.requires_grad_(True).train()
    raise ConfigError(f"the {previous} stage's student is missing ({folder}); run --stage {previous} first "
                      "(or --stage all)")


def _publish(trained: Path, output: Path) -> Path:
    """Copy the trained student folder to `output`, replacing it only once the copy is complete."""
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(trained, partial)
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return output


class TeacherTrajectories:
    """The one-step stage's samples: `config.trajectories` guided-teacher trajectories (trailing spacing, from pure
    noise, per-trajectory scales and noise drawn from (seed, index)), computed once and kept in a safetensors file."""

    KEYS = ("model_inputs", "timesteps", "image_latents", "input_ids", "scales", "final")

    def __init__(self, config: MovieStudentConfig, data, path: Path):
        self.config, self.data, self.path = config, data, Path(path)
        self.shards: list[Path] | None = None

    def __len__(self) -> int:
        return self.config.trajectories

    def describe(self, index: int) -> str:
        return f"teacher trajectory {index}"

    def load(self, index: int) -> dict:
        """Trajectory `index`, read from its shard's file alone (the cache is never held in memory whole)."""
        from safetensors import safe_open

        if self.shards is None:
            raise RuntimeError("TeacherTrajectories.build() must run before load()")
        shard, row = index % len(self.shards), index // len(self.shards)
        with safe_open(str(self.shards[shard]), framework="pt") as handle:
            return {key: handle.get_slice(key)[row:row + 1][0] for key in self.KEYS}

    def build(self, teacher, accelerator) -> None:
        """Every process computes (or reuses) its shard of the trajectories (record i belongs to process
        i % processes), then every process loads all shards: no process idles past a collective timeout."""
        rank, processes = accelerator.process_index, accelerator.num_processes
        fingerprint = self._fingerprint(teacher)
        mine = self._shard_path(rank, processes)
        if self._stored_fingerprint(mine) != fingerprint:
            self._compute(teacher, list(range(rank, self.config.trajectories, processes)), mine, fingerprint)
        accelerator.wait_for_everyone()
        self.shards = [self._shard_path(r, processes) for r in range(processes)]

    def _shard_path(self, rank: int, processes: int) -> Path:
        if processes == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{rank:03d}-of-{processes:03d}{self.path.suffix}")

    def _fingerprint(self, teacher) -> str:
        c = self.config
        return (f"{Path(teacher.folder).resolve()}|{c.trajectories}|{c.teacher_steps}|{c.text_scale_range}|"
                f"{c.image_scale_range}|{c.resolution}|{c.trainer.seed}|{len(self.data)}")

    @staticmethod
    def _stored_fingerprint(path: Path) -> str | None:
        from safetensors import safe_open

        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("fingerprint")

    @torch.no_grad()
    def _compute(self, teacher, indices: list[int], path: Path, fingerprint: str, batch: int = 32) -> None:
        from safetensors.torch import save_file

        records = {key: [] for key in self.KEYS}
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            samples = [self._sample(teacher.tokenizer, index) for index in chunk]
            for key, value in self._trajectories(teacher, samples, chunk).items():
                records[key].append(value.cpu())
        tensors = {key: torch.cat(values).contiguous() for key, values in records.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial), metadata={"fingerprint": fingerprint})
        partial.replace(path)

    def _sample(self, tokenizer, record: int):
        """(source [3,R,R], input_ids) of trajectory `record`: the data in a seeded order; an unreadable sample
        is replaced by the next one in that order (every `trajectories`-th)."""
        from vedit_cli.train.recipes.pix2pix import prepare_triplet

        c = self.config
        order = np.random.default_rng([c.trainer.seed, 0x7EAC]).permutation(len(self.data))
        for attempt in range(len(order)):
            index = int(order[(record + attempt * c.trajectories) % len(order)])
            try:
                sample = prepare_triplet(self.data.load(index), record, tokenizer, c.resolution, 1.0, False)
                return sample["source"], sample["input_ids"]
            except BadSample:
                continue
        raise ConfigError("no readable training sample for the teacher's trajectories")

    def _trajectories(self, teacher, chunk: list, records: list[int]) -> dict:
        from vedit_cli.train.recipes.student_parts import draw_scales, euler_scheduler
        from vedit_cli.train.randomness import SampleRandom

        c = self.config
        device = teacher.device
        sources = torch.stack([source for source, _ in chunk]).to(device)
        input_ids = torch.stack([ids for _, ids in chunk])
        image_latents = teacher.vae.encode(sources).latent_dist.mode()
        text = teacher.text(input_ids)
        random = SampleRandom([c.trainer.seed * 1_000_003 + record for record in records])
        scales = draw_scales(random, c.text_scale_range, c.image_scale_range).to(device)
        scheduler = euler_scheduler(teacher.scheduler_config, "trailing")
        scheduler.set_timesteps(c.teacher_steps, device=device)
        latents = random.randn(*image_latents.shape[1:]).to(device) * scheduler.init_noise_sigma
        inputs, steps = [], []
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, timestep)
            inputs.append(model_input)
            steps.append(timestep.expand(len(chunk)))
            prediction = teacher.guided(model_input, timestep, image_latents, text, scales)
            latents = scheduler.step(prediction, timestep, latents).prev_sample
        return {"model_inputs": torch.stack(inputs, dim=1), "timesteps": torch.stack(steps, dim=1).float(),
                "image_latents": image_latents, "input_ids": input_ids, "scales": scales, "final": latents}
