"""The tiny world's MoViE students, trained by `vedit train movie-student`'s recipe from the world's teacher, and the
ablations the score table compares them with.

Variants (each a weights folder `<world>/students/<name>/` with links to the world's teacher and TAESD, except the
headline student, which is `<world>/movie-student`):
- the headline: mobile architecture, stages mobile -> guidance -> onestep, adversarial weight 0.1;
- guidance-only: the headline chain's stage-2 student (10 steps x 1 pass), no extra training;
- no-adversarial: the one-step stage again from the same stage-2 student with adversarial weight 0;
- no-top-attention: MoViE's cut alone (without vedit's further cut), all stages;
- stock: the teacher's own architecture (no mobile stage), guidance -> onestep;
- taesd-decoder: the one-step stage again from the same stage-2 student, with the pixel term through the world's TAESD.
Shared stages are trained once: the ablations reuse the headline chain's work folders (and its trajectory cache).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

STUDENTS_DIR = "students"
ROW_FILE = "row.json"


@dataclass(frozen=True)
class StudentSize:
    batch: int = 16
    lr: float = 5e-4
    mobile_steps: int = 300
    guidance_steps: int = 700
    onestep_steps: int = 1600
    trajectories: int = 1536
    # share of one-step samples at the trajectory's pure-noise state, the only state `vedit edit` starts from (1600
    # steps at 1.0 were chosen over 800 at 0.5 by PSNR to the teacher's output on the validation clip: README)
    noise_fraction: float = 1.0


@dataclass(frozen=True)
class Variant:
    name: str  # folder under <world>/students; "" = the world's own movie-student
    label: str  # the score table's row
    architecture: str
    adversarial_weight: float = 0.1
    stages: tuple[str, ...] = ("mobile", "guidance", "onestep")
    reuse: str | None = None  # the chain whose earlier stages this variant starts from
    decoder_weight: float = 0.0  # the one-step stage's pixel term through the world's TAESD (0: none)


HEADLINE = Variant("", "movie student (mobile, 1 step)", "mobile")
VARIANTS = (
    HEADLINE,
    Variant("guidance-only", "movie student, stage 1 only (mobile, 10 steps x 1 pass)", "mobile", stages=(),
            reuse=""),
    Variant("no-adversarial", "movie student, no adversarial term (mobile, 1 step)", "mobile", 0.0, ("onestep",),
            reuse=""),
    Variant("no-top-attention", "movie student, no further cut (no-top-attention, 1 step)", "no-top-attention"),
    Variant("stock", "movie student, stock width (1 step)", "stock", stages=("guidance", "onestep")),
    Variant("taesd-decoder", "movie student, TAESD-decoder term (mobile, 1 step)", "mobile", stages=("onestep",),
            reuse="", decoder_weight=1.0),
)


def chain_dir(world: Path, name: str) -> Path:
    return Path(world) / "_build" / "student-work" / (name or "headline")


def variant_weights_dir(world: Path, variant: Variant) -> Path:
    return Path(world) if not variant.name else Path(world) / STUDENTS_DIR / variant.name


def student_config(world: Path, variant: Variant, data, size: StudentSize, resolution: int):
    from vedit_cli.train.config import MovieStudentConfig, TrainerConfig

    trainer = TrainerConfig(work_dir=chain_dir(world, variant.name), batch_size=size.batch, learning_rate=size.lr,
                            lr_scheduler="cosine", lr_warmup_steps=20, checkpoint_every=100, keep_checkpoints=1,
                            resume=True, cpu=True, seed=0)
    return MovieStudentConfig(
        teacher=Path(world) / "instruct-pix2pix", data=data, stages=variant.stages,
        output_dir=variant_weights_dir(world, variant) / "movie-student", trainer=trainer,
        architecture=variant.architecture, mobile_steps=size.mobile_steps, guidance_steps=size.guidance_steps,
        onestep_steps=size.onestep_steps, trajectories=size.trajectories, noise_fraction=size.noise_fraction,
        resolution=resolution, random_resize=1.0,
        adversarial_weight=variant.adversarial_weight, decoder_weight=variant.decoder_weight,
        decoder=Path(world) / "taesd" if variant.decoder_weight else None, overwrite=True)


def build_variant(world: Path, variant: Variant, data, size: StudentSize, resolution: int, progress=None) -> Path:
    """Train (or reuse) the variant's stages and write its weights folder and score row."""
    from vedit_cli.train.recipes.movie_student import STUDENT_FOLDER, _publish, train_movie_student

    world = Path(world)
    config = student_config(world, variant, data, size, resolution)
    if variant.reuse is not None:
        _link_guidance_stage(world, variant)
    if variant.name:
        _copy_trajectories(world, HEADLINE.name, variant.name)
    folder = variant_weights_dir(world, variant)
    _link_teacher(world, folder)
    if variant.stages:
        train_movie_student(config, progress)
    else:  # the reused chain's stage-2 student, as it is
        _publish(chain_dir(world, variant.reuse) / "guidance" / STUDENT_FOLDER, folder / "movie-student")
    last_stage = variant.stages[-1] if variant.stages else "guidance"
    passes = config.teacher_steps if last_stage == "guidance" else 1  # one pass per step; onestep: one step
    (folder / ROW_FILE).write_text(json.dumps({"label": variant.label, "passes": passes}, indent=1))
    return folder


def _link_guidance_stage(world: Path, variant: Variant) -> None:
    """Link the reused chain's stage-2 folder into this variant's work folder."""
    source, target = chain_dir(world, variant.reuse), chain_dir(world, variant.name)
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "guidance").exists():
        (target / "guidance").symlink_to(source / "guidance", target_is_directory=True)


def _copy_trajectories(world: Path, source_chain: str, target_chain: str) -> None:
    """The teacher's trajectories do not depend on the student: every chain starts from the first chain's cache
    (the recipe recomputes it if its fingerprint (teacher, count, scales, seed, data) differs)."""
    source, target = chain_dir(world, source_chain), chain_dir(world, target_chain)
    cache = source / "onestep" / "trajectories.safetensors"
    if cache.is_file() and not (target / "onestep" / cache.name).is_file():
        (target / "onestep").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache, target / "onestep" / cache.name)


def _link_teacher(world: Path, folder: Path) -> None:
    """A variant folder is a weights dir: the world's teacher and TAESD, linked."""
    if folder == world:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("instruct-pix2pix", "taesd"):
        link = folder / name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / name, target_is_directory=True)


def score_rows(world: Path) -> list[tuple[Path, dict]]:
    """(weights dir, row.json) of every built student variant, headline first."""
    found = []
    for variant in VARIANTS:
        folder = variant_weights_dir(world, variant)
        if (folder / ROW_FILE).is_file() and (folder / "movie-student").is_dir():
            found.append((folder, json.loads((folder / ROW_FILE).read_text())))
    return found
