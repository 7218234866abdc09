"""The trainer in one process: gradient accumulation == the bigger batch, EMA saved and resumed, gradient
checkpointing changes nothing, a work folder with checkpoints is never silently mixed with a new run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.train_helpers import relative_difference, unet_weights

ACCUMULATION_TOLERANCE = 1e-3  # as the 2-process test: summation order only (see test_train_pix2pix.py)


def _train(sd15_base, triplets, output: Path, overwrite: bool = False, **trainer_fields) -> Path:
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    torch.set_num_threads(1)
    fields = dict(max_steps=3, batch_size=4, learning_rate=1e-3, cpu=True, checkpoint_every=100) | trainer_fields
    return train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=output, resolution=32, random_resize=1.0,
                                       random_flip=False, overwrite=overwrite, trainer=TrainerConfig(**fields)))


def test_gradient_accumulation_matches_the_bigger_batch(sd15_base, triplets, tmp_path):
    whole = _train(sd15_base, triplets, tmp_path / "whole")
    accumulated = _train(sd15_base, triplets, tmp_path / "accumulated", batch_size=2, gradient_accumulation_steps=2)
    assert relative_difference(unet_weights(accumulated), unet_weights(whole), unet_weights(sd15_base)) < ACCUMULATION_TOLERANCE


def test_gradient_checkpointing_gives_the_same_weights(sd15_base, triplets, tmp_path):
    plain = _train(sd15_base, triplets, tmp_path / "plain", max_steps=2)
    checkpointed = _train(sd15_base, triplets, tmp_path / "checkpointed", max_steps=2, gradient_checkpointing=True)
    assert relative_difference(unet_weights(checkpointed), unet_weights(plain), unet_weights(sd15_base)) < 1e-4


def test_ema_and_lr_schedule_are_saved_and_resumed(sd15_base, triplets, tmp_path):
    schedule = dict(max_steps=4, lr_scheduler="cosine", lr_warmup_steps=1)
    plain = _train(sd15_base, triplets, tmp_path / "plain", **schedule)
    straight = _train(sd15_base, triplets, tmp_path / "straight", ema_decay=0.5, **schedule)
    assert relative_difference(unet_weights(straight), unet_weights(plain), unet_weights(sd15_base)) > 0.05
    killed = tmp_path / "resumed.training" / "checkpoints"
    _train(sd15_base, triplets, tmp_path / "resumed", ema_decay=0.5, checkpoint_every=2, **schedule)
    shutil.rmtree(killed / "checkpoint-0000004")  # as if killed between steps 2 and 4
    resumed = _train(sd15_base, triplets, tmp_path / "resumed", ema_decay=0.5, checkpoint_every=2, resume=True,
                     overwrite=True, **schedule)
    weights, reference = unet_weights(resumed), unet_weights(straight)
    assert max(float((weights[k] - reference[k]).abs().max()) for k in weights) < 1e-6


def test_a_work_folder_with_checkpoints_needs_resume_or_overwrite(sd15_base, triplets, tmp_path):
    from vedit_cli.errors import OutputError

    _train(sd15_base, triplets, tmp_path / "out", max_steps=1)
    (tmp_path / "out").rename(tmp_path / "elsewhere")  # the output is gone, the checkpoints are not
    with pytest.raises(OutputError, match="--resume to continue"):
        _train(sd15_base, triplets, tmp_path / "out", max_steps=1)


def test_tensorboard_without_the_package_is_one_line(sd15_base, triplets, tmp_path):
    import importlib.util

    from vedit_cli.errors import ConfigError

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        _train(sd15_base, triplets, tmp_path / "out", max_steps=1, tensorboard=True)


def test_validation_edits_are_written_every_n_steps(sd15_base, triplets, tmp_path):
    from PIL import Image

    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    trainer = TrainerConfig(max_steps=2, batch_size=2, cpu=True, validate_every=1)
    train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=tmp_path / "out", resolution=32,
                                validation_count=1, validation_steps=2, trainer=trainer))
    folders = sorted((tmp_path / "out.training" / "validation").iterdir())
    assert [folder.name for folder in folders] == ["step-0000001", "step-0000002"]
    assert Image.open(folders[-1] / "000.png").size == (3 * 32, 32)  # source | edit | target
    assert (folders[-1] / "000.txt").read_text().strip() == "invert the colours"


def test_data_loader_workers_change_nothing(sd15_base, triplets, tmp_path):
    in_process = _train(sd15_base, triplets, tmp_path / "in_process", max_steps=2)
    workers = _train(sd15_base, triplets, tmp_path / "workers", max_steps=2, num_workers=2)
    a, b = unet_weights(in_process), unet_weights(workers)
    assert all(torch.equal(a[key], b[key]) for key in a)
