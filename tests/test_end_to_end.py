"""The whole product on every real clip: one `vedit edit` batch with a tiny movie model over ../shared/videos.

No fakes: the real CLI, probe, decoders, runner, a real (tiny, random) InstructPix2Pix loaded with from_pretrained,
the encoder and the audio mux. Checks what a user relies on for every clip.
"""

from __future__ import annotations

import pytest

from tests.cli_helpers import run_vedit
from tests.io_media import MANIFEST, assert_output_matches_source
from vedit_cli.io.probe import probe


@pytest.fixture(scope="module")
def edited_batch(shared_videos, tiny_weights, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("edited")
    result = run_vedit(
        "edit", shared_videos, "make it look like a watercolour painting", "--backend", "movie",
        "--weights-dir", tiny_weights, "--steps", "1", "--vae", "tiny", "--size", "64", "--preset", "ultrafast",
        "--output-dir", out_dir, "--json", timeout=1800, env={"OMP_NUM_THREADS": "1"},
    )
    assert result.code == 0, result.stderr[-2000:]
    return out_dir, {clip["input"]: clip for clip in result.json()["clips"]}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_clip_keeps_frames_rate_orientation_and_audio(edited_batch, shared_videos, name):
    out_dir, clips = edited_batch
    report = clips[str(shared_videos / name)]
    assert report["status"] == "ok", report["error"]
    source, out = probe(shared_videos / name), probe(report["output"])
    assert report["output"].startswith(str(out_dir))
    assert out.frame_count == report["frames"]
    assert_output_matches_source(source, out)
