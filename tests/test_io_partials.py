"""Partial files of a writer that died (kill -9, power cut) are removed by the next run; a live writer's never are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from tests.cli_helpers import REPO_ROOT, run_vedit
from tests.io_media import make_clip
from vedit_cli.io.partials import PartialLock, partial_path, remove_stale_partials
from vedit_cli.io.probe import probe

KILL_WAIT_SECONDS = 120


def _partials(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if ".partial" in path.name)


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_rerun_after_kill_9_removes_the_partials_and_writes_the_output(tmp_path):
    source = make_clip(tmp_path / "long.mp4", seconds=10.0, size="640x360", rate="30")
    out_dir = tmp_path / "out"
    out = out_dir / "edited.mp4"
    command = [sys.executable, "-m", "vedit_cli", "edit", str(source), "", "--backend", "copy", "-o", str(out),
               "--preset", "veryslow", "--quiet"]
    killed = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        _wait_for(lambda: out_dir.is_dir() and any(".video.partial" in p.name for p in out_dir.iterdir()),
                  KILL_WAIT_SECONDS, "the first run's partial video")
        assert killed.poll() is None, "the first run finished before it could be killed: make the clip longer"
        os.kill(killed.pid, signal.SIGKILL)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.wait()
    assert _partials(out_dir) and not out.exists()  # what a SIGKILL leaves behind

    rerun = run_vedit("edit", source, "", "--backend", "copy", "-o", out, "--preset", "ultrafast", "--json")
    assert rerun.code == 0, rerun.stderr
    assert _partials(out_dir) == []
    assert probe(out).frame_count == probe(source).frame_count == 300


LIVE_WRITER = """
import sys
from pathlib import Path
import numpy as np
from vedit_cli.config import EncodeConfig
from vedit_cli.io.output import ClipWriter
from vedit_cli.io.probe import probe
source = probe(sys.argv[1])
with ClipWriter(Path(sys.argv[2]), source, source.width, source.height, EncodeConfig(preset="ultrafast")) as writer:
    writer.write(np.zeros((source.height, source.width, 3), np.uint8))
    print("writing", flush=True)
    sys.stdin.readline()  # hold the partial until the test says so; leaving without commit removes it
"""


def test_a_live_writers_partials_are_never_removed(tmp_path):
    source = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    out = tmp_path / "edited.mp4"
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(source), str(out)], cwd=REPO_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        _wait_for(lambda: any(".video.partial" in p.name for p in tmp_path.iterdir()), 60, "the live partial video")
        live = _partials(tmp_path)
        assert any(".lock.partial" in p.name for p in live) and any(".video.partial" in p.name for p in live)
        assert remove_stale_partials(out) == []
        assert run_vedit("edit", source, "", "--backend", "copy", "-o", out, "--preset", "ultrafast").code == 0
        assert set(live) <= set(_partials(tmp_path))  # the second writer of the same output left them alone
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0 and _partials(tmp_path) == []


def test_stale_partials_are_those_whose_lock_is_free_or_missing(tmp_path):
    out = tmp_path / "clip.mp4"
    dead_writer = partial_path(out, "otherhost-4242-0badcafe", "lock")
    orphans = [dead_writer, partial_path(out, "otherhost-4242-0badcafe", "video"),
               partial_path(out, "otherhost-77-12345678", "muxed"),  # no lock file at all
               partial_path(out, str(_dead_pid()), "video")]  # an older vedit's PID-only name
    others = [partial_path(tmp_path / "clip.b.mp4", "h-1-aa", "video"), partial_path(tmp_path / "clip.mkv", "h-1-aa",
                                                                                       "video")]
    for path in orphans + others:
        path.write_bytes(b"x")
    held = PartialLock(out)
    held.partial("video").write_bytes(b"x")
    try:
        assert sorted(remove_stale_partials(out)) == sorted(orphans)
        assert held.lock_path.exists() and held.partial("video").exists()
        assert all(path.exists() for path in others)
    finally:
        held.partial("video").unlink()
        held.release()
    assert not held.lock_path.exists()


def test_a_pid_reused_on_another_host_gets_its_own_name(tmp_path):
    first, second = PartialLock(tmp_path / "a.mp4"), PartialLock(tmp_path / "a.mp4")
    try:
        assert first.token != second.token and str(os.getpid()) in first.token
    finally:
        first.release()
        second.release()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_skipped_output_loses_the_partials_of_a_killed_overwrite(tmp_path):
    """A killed `--overwrite` run leaves the old output and its partials; the next plain run skips it and cleans up."""
    source = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    out = tmp_path / "edited.mp4"
    out.write_bytes(b"the previous output")
    stale = [partial_path(out, "otherhost-4242-0badcafe", role) for role in ("lock", "video")]
    for path in stale:
        path.write_bytes(b"x")
    result = run_vedit("edit", source, "", "--backend", "copy", "-o", out, "--json")
    assert result.code == 0 and result.json()["summary"]["skipped"] == 1, result.stderr
    assert _partials(tmp_path) == [] and out.read_bytes() == b"the previous output"
