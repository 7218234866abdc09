"""Odd-sized sources come out playable: 4:2:0 at the nearest even size, cropped (never scaled), said in the clip's line;
--keep-odd-size keeps the exact size in 4:4:4."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cli_helpers import run_vedit
from tests.io_media import assert_output_matches_source, make_clip
from vedit_cli.io.decode import read_frames
from vedit_cli.io.probe import probe

NOTE = "cropped 853x479 to 852x478"


@pytest.fixture(scope="module")
def odd_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd") / "odd.mp4"
    return make_clip(path, seconds=1.0, size="853x479", rate="30000/1001", extra=("-pix_fmt", "yuv444p"),
                     pattern="testsrc")


def test_odd_source_comes_out_4_2_0_at_the_even_size_with_frames_fps_and_audio(odd_source, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_vedit("edit", odd_source, "", "--backend", "copy", "-o", out, "--preset", "ultrafast")
    assert result.code == 0, result.stderr
    assert NOTE in result.stderr and "--keep-odd-size" in result.stderr  # the clip's line says what changed
    source, edited = probe(odd_source), probe(out)
    assert (source.width, source.height, source.frame_count) == (853, 479, 30)
    assert (edited.width, edited.height, edited.pixel_format) == (852, 478, "yuv420p")
    assert_output_matches_source(source, edited)  # frames, exact fps, audio length, no metadata
    for got, original in zip(read_frames(edited), read_frames(source)):  # cropped, not scaled: pixels line up
        assert np.abs(got.astype(np.int16) - original[:478, :852]).mean() < 4.0


def test_keep_odd_size_gives_the_exact_size_in_4_4_4(odd_source, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_vedit("edit", odd_source, "", "--backend", "copy", "-o", out, "--preset", "ultrafast",
                       "--keep-odd-size", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["clips"][0]["notes"] == []
    edited = probe(out)
    assert (edited.width, edited.height, edited.pixel_format) == (853, 479, "yuv444p")
    assert_output_matches_source(probe(odd_source), edited, keep_odd_size=True)


def test_json_carries_the_crop_note(odd_source, tmp_path):
    result = run_vedit("edit", odd_source, "", "--backend", "copy", "-o", tmp_path / "out.webm", "--codec",
                       "libvpx-vp9", "--preset", "ultrafast", "--json")
    assert result.code == 0, result.stderr
    [note] = result.json()["clips"][0]["notes"]
    assert note.startswith(NOTE)
    assert (probe(tmp_path / "out.webm").width, probe(tmp_path / "out.webm").pixel_format) == (852, "yuv420p")
