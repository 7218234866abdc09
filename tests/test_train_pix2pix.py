"""`vedit train pix2pix` end to end on tiny local components: 2 processes == 1 process with the doubled batch,
resume after a kill == an uninterrupted run, bad samples skipped and counted, the output edits through `vedit edit`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests import tiny
from tests.train_helpers import (REPO_ROOT, TRAIN_ARGS, max_difference, relative_difference, run_train, train_env,
                                 unet_weights, vedit_command, write_triplets)
from vedit_cli.train.checkpoints import read_log

# Tolerances. 2 processes vs 1: the same samples with the same per-sample draws, so only float32 summation order
# differs (DDP averages two half-batch means; convolutions run over batch 2 instead of 4). Step losses agree to
# 1e-5 relative. AdamW divides by sqrt(v): where a gradient is ~0 its rounding noise becomes a full lr-sized step
# of either sign, so a few elements differ by up to ~1e-4 while the mean element differs by ~1e-8. So the bound is
# on the whole weight vector: ||w_2proc - w_1proc|| / ||w_1proc - w_start|| measured 9.6e-5 after 3 steps at
# lr 1e-3; bound 1e-3. Resume vs uninterrupted: one process, the same operations in the same order: measured 0,
# bound 1e-6 (max |dw|).
DDP_TOLERANCE = 1e-3
RESUME_TOLERANCE = 1e-6


def _train_in_process(sd15_base, triplets, output: Path, **trainer_fields) -> Path:
    """The same run as TRAIN_ARGS through the CLI, without a process start."""
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    torch.set_num_threads(1)
    trainer = TrainerConfig(learning_rate=1e-3, cpu=True, checkpoint_every=100, **trainer_fields)
    return train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=output, trainer=trainer, resolution=32,
                                       random_resize=1.0, random_flip=False))


def _start_event(work_dir: Path) -> dict:
    return next(record for record in read_log(work_dir / "log.jsonl") if record["event"] == "start")


def test_two_processes_match_one_process_with_the_doubled_batch(sd15_base, triplets, tmp_path):
    common = (triplets, "--base", sd15_base, "--max-steps", "3", *TRAIN_ARGS)
    two = run_train(*common, "--batch-size", "2", "-o", tmp_path / "two", processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    _train_in_process(sd15_base, triplets, tmp_path / "one", max_steps=3, batch_size=4)
    start_two = _start_event(tmp_path / "two.training")
    assert (start_two["processes"], start_two["backend"], start_two["global_batch"]) == (2, "gloo", 4)
    assert _start_event(tmp_path / "one.training")["processes"] == 1
    end_two = read_log(tmp_path / "two.training" / "log.jsonl")[-1]
    assert len(end_two["rank_digests"]) == 2 and len(set(end_two["rank_digests"])) == 1  # identical on both ranks
    losses = {name: [r["loss"] for r in read_log(tmp_path / f"{name}.training" / "log.jsonl") if r["event"] == "step"]
              for name in ("one", "two")}
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-5)
    trained, single = unet_weights(tmp_path / "two"), unet_weights(tmp_path / "one")
    assert relative_difference(trained, single, unet_weights(sd15_base)) < DDP_TOLERANCE
    assert trained["conv_in.weight"].shape[1] == 8  # the base UNet's 4 inputs, widened


def test_resume_after_a_kill_runs_only_the_remaining_steps_and_ends_at_the_same_weights(sd15_base, triplets, tmp_path):
    steps = 12
    args = (triplets, "--base", sd15_base, "--max-steps", str(steps), "--batch-size", "2", "--checkpoint-every", "2",
            "--keep-checkpoints", "2", *TRAIN_ARGS)
    killed = subprocess.Popen(vedit_command("train", "pix2pix", *args, "-o", tmp_path / "resumed"),
                              env=train_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "resumed.training" / "checkpoints"
    deadline = time.monotonic() + 90
    while not (checkpoints / "checkpoint-0000004").exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "resumed").exists()
    resumed = run_train(*args, "-o", tmp_path / "resumed", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    killed_at = summary["start_step"]
    assert 4 <= killed_at < steps and summary["steps"] == steps
    log = read_log(tmp_path / "resumed.training" / "log.jsonl")
    assert [r["step"] for r in log if r["event"] == "step"] == list(range(1, steps + 1))  # each step logged once

    straight = _train_in_process(sd15_base, triplets, tmp_path / "straight", max_steps=steps, batch_size=2)
    assert max_difference(unet_weights(tmp_path / "resumed"), unet_weights(straight)) < RESUME_TOLERANCE


def test_bad_samples_are_skipped_and_counted(sd15_base, tmp_path):
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.plan import BatchPlan
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    bad = {2: "missing", 5: "corrupt"}
    table = write_triplets(tmp_path / "data", count=8, bad=bad)
    trainer = TrainerConfig(max_steps=3, batch_size=4, checkpoint_every=10, cpu=True, seed=3)
    events = []
    train_pix2pix(Pix2PixConfig(base=sd15_base, data=table, output_dir=tmp_path / "out", trainer=trainer, resolution=32,
                                random_resize=1.0), progress=events.append)
    plan = BatchPlan(8, 4, seed=3)
    expected = sum(plan.dataset_index(step, q) in bad for step in range(3) for q in range(4))
    assert expected >= 2  # 12 draws over 8 samples: both bad rows come up in the first epoch
    assert events[-1]["skipped_samples"] == expected
    skipped = [e["sample"] for e in events if e["event"] == "skipped"]
    assert len(skipped) == expected and any("002_absent.png" in s or "line 4" in s for s in skipped)
    log = read_log(tmp_path / "out.training" / "log.jsonl")
    assert log[-1]["event"] == "end" and log[-1]["skipped_samples"] == expected
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_data_with_no_readable_sample_is_one_line(sd15_base, tmp_path):
    from vedit_cli.errors import TrainingDataError
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    table = write_triplets(tmp_path / "data", count=2, bad={0: "missing", 1: "corrupt"})
    config = Pix2PixConfig(base=sd15_base, data=table, output_dir=tmp_path / "out", resolution=32,
                           trainer=TrainerConfig(max_steps=1, batch_size=1, cpu=True))
    expected = f"none of the 2 training samples could be read \\(first: {table} line 2: unreadable image"
    with pytest.raises(TrainingDataError, match=expected) as error:
        train_pix2pix(config)
    assert "\n" not in str(error.value)


def test_missing_base_model_is_one_line(triplets, tmp_path):
    result = run_train(triplets, "--base", tmp_path / "nowhere", "-o", tmp_path / "out", "--max-steps", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"vedit: error: base model {tmp_path / 'nowhere'} is not a local folder" in result.stderr


def test_trained_folder_loads_in_the_movie_backend_and_edits_through_the_cli(sd15_base, triplets, tmp_path):
    from tests.io_media import make_clip
    from vedit_cli.backends.movie.loading import load_teacher_unet, load_text_path, require_instruct_pix2pix
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    weights = tmp_path / "weights"
    torch.set_num_threads(1)
    train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=weights / "instruct-pix2pix", resolution=32,
                                trainer=TrainerConfig(max_steps=2, batch_size=2, cpu=True)))
    root = require_instruct_pix2pix(weights)
    assert load_teacher_unet(root, weights, torch.float32).config.in_channels == 8
    assert len(load_text_path(root, weights, torch.float32)[0]) > 2
    tiny.save_taesd(weights / "taesd")
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, size="64x48")
    edited = subprocess.run(vedit_command("edit", clip, "invert the colours", "--backend", "movie", "--weights-dir",
                                          weights, "--dtype", "float32", "--size", "64", "--steps", "2", "--vae",
                                          "full", "--preset", "ultrafast", "-o", tmp_path / "out.mp4", "--json"),
                            capture_output=True, text=True, env=train_env(), cwd=REPO_ROOT, timeout=180)
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert json.loads(edited.stdout)["summary"]["ok"] == 1


def test_a_refused_run_deletes_nothing_and_schedulers_are_checked(tmp_path):
    """Options are checked before --overwrite clears an earlier run's checkpoints; --lr-scheduler is a known one."""
    from diffusers.optimization import SchedulerType

    from vedit_cli.errors import ConfigError
    from vedit_cli.train.checkpoints import STATE_FILE, checkpoint_dir
    from vedit_cli.train.config import LR_SCHEDULERS, Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    assert set(LR_SCHEDULERS) == {kind.value for kind in SchedulerType}
    output = tmp_path / "instruct-pix2pix"
    earlier = checkpoint_dir(output.with_name(output.name + ".training"), 2)
    earlier.mkdir(parents=True)
    (earlier / STATE_FILE).write_text("{}")
    for bad in (dict(checkpoint_every=0), dict(lr_scheduler="bogus"), dict(max_steps=0)):
        config = Pix2PixConfig(base=tmp_path / "no-base", data=tmp_path / "no-data", output_dir=output,
                               trainer=TrainerConfig(**bad), overwrite=True)
        with pytest.raises(ConfigError, match="--" + next(iter(bad)).replace("_", "-")):
            train_pix2pix(config)
        assert (earlier / STATE_FILE).is_file()


def test_cached_latents_equal_fresh_encodes_and_each_image_is_encoded_once():
    from tests.tiny import tiny_vae
    from vedit_cli.train.recipes.latent_cache import LatentCache

    torch.manual_seed(0)
    vae, cache = tiny_vae().eval(), LatentCache()
    a, b, c = torch.rand(3, 3, 32, 32) * 2 - 1
    for images in (torch.stack([a, b]), torch.stack([b, c, b]), torch.stack([b.flip(-1), a])):
        mean, std = cache.posterior(vae, images)
        with torch.no_grad():
            fresh = vae.encode(images).latent_dist
        assert torch.allclose(mean, fresh.mean, atol=1e-5) and torch.allclose(std, fresh.std, atol=1e-5)
    assert (cache.misses, cache.hits) == (4, 3)  # a, b; c; b flipped is a new image


def test_training_with_the_latent_cache_matches_training_without(sd15_base, triplets, tmp_path):
    """8 triplets, batch 4, 3 steps: the third step's images all come from the cache."""
    from vedit_cli.errors import ConfigError
    from vedit_cli.train.config import Pix2PixConfig, TrainerConfig
    from vedit_cli.train.recipes.pix2pix import train_pix2pix

    torch.set_num_threads(1)
    for name, cache in (("fresh", False), ("cached", True)):
        trainer = TrainerConfig(learning_rate=1e-3, cpu=True, max_steps=3, batch_size=4)
        train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=tmp_path / name, trainer=trainer,
                                    resolution=32, random_resize=1.0, random_flip=True, cache_latents=cache))
    losses = {name: [r["loss"] for r in read_log(tmp_path / f"{name}.training" / "log.jsonl") if r["event"] == "step"]
              for name in ("fresh", "cached")}
    assert len(losses["fresh"]) == 3 and losses["cached"] == pytest.approx(losses["fresh"], rel=1e-4)
    # 3 Adam steps at lr 1e-3 move a weight by up to 3e-3; batched and single encodes sum floats differently (1.05e-4
    # apart on an AVX-512 CPU), a wrong cache by a step's size
    assert max_difference(unet_weights(tmp_path / "cached"), unet_weights(tmp_path / "fresh")) < 3e-4
    with pytest.raises(ConfigError, match="--cache-latents needs --random-resize 1"):
        train_pix2pix(Pix2PixConfig(base=sd15_base, data=triplets, output_dir=tmp_path / "refused",
                                    trainer=TrainerConfig(cpu=True), random_resize=1.125, cache_latents=True))
