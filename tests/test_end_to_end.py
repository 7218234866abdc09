"""The whole product on every real clip: one `vedit edit` batch with a tiny movie model over ../shared/videos.

No fakes: the real CLI, probe, decoders, runner, a real (tiny, random) InstructPix2Pix loaded with from_pretrained,
the encoder and the audio mux. Checks what a user relies on for every clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO_ROOT
from tests.io_media import MANIFEST, assert_output_matches_source
from vedit_cli.io.probe import probe


def balanced_groups(names: list[str], frames: dict[str, int], count: int) -> list[list[str]]:
    """`names` split into `count` groups of about equal frame totals (largest first, each to the lightest group)."""
    groups: list[list[str]] = [[] for _ in range(count)]
    for name in sorted(names, key=lambda n: -frames[n]):
        min(groups, key=lambda g: sum(frames[n] for n in g)).append(name)
    return [g for g in groups if g]


@pytest.fixture(scope="module")
def edited_batch(shared_videos, tiny_weights, tmp_path_factory):
    """Every MANIFEST clip edited by `vedit edit FILE... PROMPT`: two batches side by side (one thread each, the
    CI machine's two cores; chrome.webm's 899 frames alone are about half the frames), one --json report."""
    out_dir = tmp_path_factory.mktemp("edited")
    groups = balanced_groups(sorted(MANIFEST), {name: MANIFEST[name].frames for name in MANIFEST}, 2)
    env = {**{k: v for k, v in os.environ.items() if k != "VEDIT_DEBUG"}, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "vedit_cli", "edit", *[str(shared_videos / name) for name in group],
         "make it look like a watercolour painting", "--backend", "movie", "--weights-dir", str(tiny_weights),
         "--steps", "1", "--vae", "tiny", "--size", "64", "--preset", "ultrafast", "--output-dir", str(out_dir),
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
        for group in groups]
    clips = {}
    for process in processes:
        stdout, stderr = process.communicate(timeout=1800)
        assert process.returncode == 0, stderr[-2000:]
        clips.update({clip["input"]: clip for clip in json.loads(stdout)["clips"]})
    return out_dir, clips


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_clip_keeps_frames_rate_orientation_and_audio(edited_batch, shared_videos, name):
    out_dir, clips = edited_batch
    report = clips[str(shared_videos / name)]
    assert report["status"] == "ok", report["error"]
    source, out = probe(shared_videos / name), probe(report["output"])
    assert report["output"].startswith(str(out_dir))
    assert out.frame_count == report["frames"]
    assert_output_matches_source(source, out)
