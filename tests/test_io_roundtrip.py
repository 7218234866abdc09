"""Every real clip through probe -> read_frames -> ClipWriter: same frames, rate, size, audio; no GPS metadata."""

from __future__ import annotations

import numpy as np
import pytest

from tests.io_media import MANIFEST, assert_output_matches_source, header_text
from vedit_cli.config import EncodeConfig
from vedit_cli.io.decode import read_frames
from vedit_cli.io.output import ClipWriter
from vedit_cli.io.probe import probe

FAST = EncodeConfig(preset="ultrafast")


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_round_trip_keeps_frames_rate_size_and_audio(shared_videos, tmp_path, name):
    source = probe(shared_videos / name)
    out_path = tmp_path / "out" / "edited.mp4"
    first_frame = None
    with ClipWriter(out_path, source, source.width, source.height, FAST) as writer:
        for frame in read_frames(source):
            assert frame.shape == (source.height, source.width, 3) and frame.dtype == np.uint8
            first_frame = frame.copy() if first_frame is None else first_frame
            writer.write(frame)
        assert writer.commit(source.frame_count) == out_path
    assert sorted(path.name for path in out_path.parent.iterdir()) == ["edited.mp4"]  # no temp left

    out = probe(out_path)
    assert_output_matches_source(source, out)
    decoded_first = next(iter(read_frames(out)))
    cropped = first_frame[: out.height, : out.width]  # an odd side loses its last column/row (4:2:0), unscaled
    assert np.abs(decoded_first.astype(np.int16) - cropped).mean() < 6.0  # same picture, same orientation


def test_gps_metadata_is_present_in_the_sources(shared_videos):
    """The round trip's no-location check can fail: these sources do carry GPS tags."""
    assert "location" in header_text(shared_videos / "fire2.mp4").lower()
    assert "com.apple.quicktime.location" in header_text(shared_videos / "dolbyVision-hdr.MOV").lower()
