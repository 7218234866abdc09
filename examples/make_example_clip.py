"""Generate examples/example.mp4: 3 s of 320x240 test pattern at 30000/1001 fps with a 440 Hz AAC tone.

Run from the repository root: `python examples/make_example_clip.py [output.mp4]`. Uses the ffmpeg binary that
imageio-ffmpeg bundles, so it needs nothing but the project's own dependencies. The clip is deterministic enough
to commit (bit-exact flags) and small (about 90 KB).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

SECONDS = 3
SIZE = "320x240"
RATE = "30000/1001"


def example_clip_command(output_path: Path) -> list[str]:
    """ffmpeg arguments: lavfi testsrc2 + sine -> H.264 yuv420p (CRF 28) + AAC, +faststart, no metadata."""
    return [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={RATE}:duration={SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-c:v", "libx264", "-preset", "medium", "-crf", "28", "-pix_fmt", "yuv420p",
        "-x264-params", "threads=1", "-c:a", "aac", "-b:a", "64k",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart", str(output_path),
    ]


def main(argv: list[str]) -> int:
    output_path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("example.mp4")
    subprocess.run(example_clip_command(output_path), check=True)
    print(f"wrote {output_path} ({output_path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
