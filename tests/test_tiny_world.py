"""The tiny world end to end: `scripts/tiny_world.py build --quick`, then `score` through the real `vedit edit` path.

Slow (marked, opt-in with VEDIT_SLOW_TESTS=1): the quick build trains the autoencoder, TAESD, the InstructPix2Pix
teacher (the `vedit train pix2pix` recipe) and every MoViE student variant (2 steps per stage) on 2 CPU cores and
scores one held-out clip with every row: 15.0 minutes measured on 2 quiet cores (2026-12-02). Needs
../shared/videos (the pinned clips); skipped without it. The CI-sized teacher alone (quick autoencoders, a narrower
teacher, no students) runs in every CI run: it must beat identity by 1 dB on a held-out clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vedit_cli.tinyworld.edits import EDITS, apply_uint8

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "videos"
SCRIPT = REPO / "scripts" / "tiny_world.py"


def test_edits_are_deterministic_distinct_and_in_range():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    outputs = {edit.name: apply_uint8(edit, frames) for edit in EDITS}
    assert len(EDITS) >= 8 and len({e.instruction for e in EDITS}) == len(EDITS)
    for edit in EDITS:
        assert outputs[edit.name].shape == frames.shape and outputs[edit.name].dtype == np.uint8
        assert np.array_equal(outputs[edit.name], apply_uint8(edit, frames))
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.array_equal(outputs[a], outputs[b]), (a, b)
    gray = apply_uint8(EDITS[0], frames)
    assert np.array_equal(gray[..., 0], gray[..., 1])


def test_world_spec_splits_are_disjoint():
    spec = json.loads((REPO / "scripts" / "tinyworld.json").read_text())
    splits = [set(spec[name]) for name in ("train", "validation", "held_out")]
    assert all(splits) and not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])


def test_score_rows_are_picked_by_part_of_their_label_or_exactly_with_an_equals_sign():
    from vedit_cli.tinyworld.score import wanted

    assert wanted("movie teacher, TAESD", ("movie teacher",)) and wanted("movie teacher", ("=movie teacher",))
    assert not wanted("movie teacher, TAESD", ("=movie teacher",)) and not wanted("eve + FDD LoRA", ("movie",))


def test_taesd_jitter_moves_latents_off_the_manifold_within_its_bound_and_trains_against_the_vae_decoder():
    import torch

    from vedit_cli.tinyworld import components as parts

    latents = torch.randn(64, 4, 8, 8)
    unmoved = parts.jittered_latents(latents, 0.0, torch.Generator().manual_seed(0))
    moved = parts.jittered_latents(latents, 0.5, torch.Generator().manual_seed(0))
    assert not torch.equal(unmoved, latents)  # blurred towards the 3x3 mean even without noise
    assert (moved - unmoved).flatten(1).std(1).max() <= 0.5 * 1.1  # the noise's std stays within the bound
    assert torch.equal(moved, parts.jittered_latents(latents, 0.5, torch.Generator().manual_seed(0)))

    frames = torch.rand(4, 3, 16, 16)
    vae = parts.new_vae().eval().requires_grad_(False)
    losses = {}
    for jitter in (0.0, 0.5):
        steps = []
        parts.train_taesd(vae, frames, parts.AutoencoderSize(steps=2, batch=2, jitter=jitter),
                          lambda step, total, loss: steps.append(loss))
        losses[jitter] = steps
    assert losses[0.0] != losses[0.5]  # the jittered decoder term is in the loss


# The CI-sized teacher: the quick world's autoencoders and a narrower teacher (blocks 16/32/64, 600 steps x 16 at lr
# 2e-3, Min-SNR-5 weighting): the build measured 4.9 minutes on 2 cores (README "Tiny world"). Both commands run at a
# fixed thread count: with the same clips, threads and CPU the build is bit-reproducible (the thread count a busy
# machine picks changes the float sums, and training amplifies that to tenths of a dB).
CI_TEACHER = ("--teacher-steps", "600", "--teacher-lr", "2e-3", "--teacher-snr-gamma", "5",
              "--teacher-blocks", "16", "32", "64")
THREADS = str(min(2, os.cpu_count() or 1))


@pytest.mark.skipif(not VIDEOS.is_dir(), reason="needs ../shared/videos")
def test_a_ci_sized_teacher_beats_identity_on_a_held_out_clip(tmp_path):
    """Issue 12: the quick world's VAE, TAESD and teacher alone (no students, no Stable Diffusion side), scored on
    the first held-out clip through `vedit edit`: at least 1 dB above identity and above its random weights."""
    world = tmp_path / "world"
    built = subprocess.run([sys.executable, str(SCRIPT), "build", str(world), "--quick", "--no-sd", "--students",
                            "none", "--threads", THREADS, *CI_TEACHER], capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    scored = subprocess.run([sys.executable, str(SCRIPT), "score", str(world), "--clips", str(VIDEOS), "--json",
                             "--frames", "4", "--max-clips", "1", "--threads", THREADS, "--rows", "=movie teacher",
                             "random weights"],
                            capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = {row["row"]: row for row in json.loads(scored.stdout)["rows"]}
    identity, teacher, random = rows["identity (source)"], rows["movie teacher"], rows["movie teacher, random weights"]
    assert teacher["unet_passes_per_frame"] == 30 and identity["unet_passes_per_frame"] == 0
    assert teacher["psnr"] >= identity["psnr"] + 1.0, rows
    assert teacher["psnr"] > random["psnr"] + 3.0, rows


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_dir(), reason="needs ../shared/videos")
def test_quick_world_builds_resumes_and_scores_every_student(tmp_path):
    world = tmp_path / "world"
    built = subprocess.run([sys.executable, str(SCRIPT), "build", str(world), "--quick"], capture_output=True,
                           text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "| teacher |" in built.stderr  # the budget table
    for name in ("instruct-pix2pix/unet/diffusion_pytorch_model.safetensors", "taesd/config.json",
                 "random/instruct-pix2pix/model_index.json", "instruct-pix2pix/tokenizer/vocab.json"):
        assert (world / name).is_file(), name
    again = subprocess.run([sys.executable, str(SCRIPT), "build", str(world), "--quick"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "min left" not in again.stderr  # resumable: nothing is trained again
    scored = subprocess.run([sys.executable, str(SCRIPT), "score", str(world), "--clips", str(VIDEOS), "--json",
                             "--frames", "4", "--max-clips", "1"], capture_output=True, text=True, timeout=900)
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = {row["row"]: row for row in json.loads(scored.stdout)["rows"]}
    assert set(rows) >= {"identity (source)", "movie teacher", "movie teacher, random weights",
                         "movie teacher, 1 step (trailing, undistilled)", "movie student (mobile, 1 step)",
                         "movie student, no adversarial term (mobile, 1 step)", "movie student, stock width (1 step)",
                         "movie student, full VAE (mobile, 1 step)"}
    assert rows["movie student (mobile, 1 step)"]["unet_passes_per_frame"] == 1
    for name in ("movie-student/guidance_embedding.safetensors", "students/stock/movie-student/unet/config.json",
                 "students/guidance-only/row.json"):
        assert (world / name).is_file(), name
    identity, teacher, random = rows["identity (source)"], rows["movie teacher"], rows["movie teacher, random weights"]
    assert teacher["unet_passes_per_frame"] == 30 and identity["unet_passes_per_frame"] == 0
    assert teacher["flicker"] >= 0 and 0 <= teacher["edit_accuracy"] <= 1
    assert teacher["psnr"] > random["psnr"], rows
