"""`vedit edit --ray`: the same batch on a local Ray instance with 2 CPU workers (one instance for the module, a
small object store) gives the same outputs as a local run, survives a killed worker, stops a clip after its
timeout, and skips finished outputs on a rerun. Plus the parts that need no Ray: worker planning, the storage check,
removal of a dead writer's partials, and the one line when Ray is missing."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.io_media import make_clip
from vedit_cli.config import EditConfig, EncodeConfig, ModelConfig
from vedit_cli.editing.jobs import ClipJob, plan_jobs
from vedit_cli.editing.ray_batch import RayOptions, SilentRayObserver, driver_run, import_ray, plan_workers
from vedit_cli.editing.ray_worker import StorageCheck, remove_attempt_partials
from vedit_cli.errors import ConfigError

MODEL_BOUND = 2  # tiny float32 movie model, 1 torch thread on both sides: largest decoded-pixel difference (of 255)
# allowed between Ray and local; measured here: 0 (bit for bit). The bound leaves room for another CPU's kernels.


# -- without Ray -----------------------------------------------------------------------------------------------------


def test_without_ray_the_option_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "vedit\[ray\]"'):
        import_ray()


def test_workers_one_per_gpu_or_one_cpu_worker_by_default():
    assert plan_workers({"CPU": 64, "GPU": 8}, RayOptions(), "auto") == plan_workers({"CPU": 64, "GPU": 8},
                                                                                     RayOptions(workers=8), "auto")
    plan = plan_workers({"CPU": 64, "GPU": 8}, RayOptions(gpus_per_worker=0.5), "auto")
    assert (plan.workers, plan.cpus, plan.gpus) == (16, 4, 0.5)
    assert plan_workers({"CPU": 64, "GPU": 8}, RayOptions(), "cpu").gpus == 0
    plan = plan_workers({"CPU": 2}, RayOptions(workers=2), "auto")
    assert (plan.workers, plan.cpus, plan.gpus) == (2, 1, 0)
    with pytest.raises(ConfigError, match="no GPU"):
        plan_workers({"CPU": 8}, RayOptions(), "cuda")
    with pytest.raises(ConfigError, match="lower --workers"):
        plan_workers({"CPU": 64, "GPU": 2}, RayOptions(workers=3), "auto")


def test_storage_check_names_the_folder_a_worker_does_not_share(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", seconds=0.2, audio=False)
    check = StorageCheck.create([ClipJob(clip, "", tmp_path / "out" / "a.vedit.mp4")], None)
    assert check.problem() is None
    check.marker.write_text("another node's folder")  # same path, another file system
    assert "same path on every node" in check.problem() and str(tmp_path / "out") in check.problem()
    check.remove()
    assert "cannot see the output folder" in check.problem()


def test_only_the_dead_writers_partials_are_removed(tmp_path):
    output = tmp_path / "a.vedit.mp4"
    dead = [tmp_path / f".a.vedit.vm-41-0a1b2c3d.{role}.partial.mp4" for role in ("lock", "video")]
    alive = tmp_path / ".a.vedit.vm-4242-0a1b2c3d.video.partial.mp4"
    for path in (*dead, alive):
        path.write_bytes(b"")
    assert sorted(remove_attempt_partials(output, "vm-41")) == sorted(dead)
    assert alive.exists()


def test_an_unreachable_cluster_address_is_refused_in_seconds():
    """ray.init would retry a dead address for minutes; a TCP check refuses it at once, in one line."""
    import socket
    import time

    from vedit_cli.editing.ray_batch import _check_reachable

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"--ray 127.0.0.1:{port}: cannot connect"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    _check_reachable("local")  # nothing to check: Ray starts here


def test_ray_options_without_ray_are_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from vedit_cli.cli import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, ["edit", str(tmp_path / "a.mp4"), "", "--backend", "copy", "--workers", "2"])
    assert result.exit_code != 0
    assert "--workers is used only with --ray" in str(result.exception) + result.output


# -- on a local Ray instance with 2 CPU workers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray_clips")
    for index in range(3):
        make_clip(folder / f"clip{index}.mp4", seconds=0.5 + 0.25 * index, size="96x64")
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def _copy_config(overwrite: bool = False) -> EditConfig:
    return EditConfig(model=ModelConfig(backend="copy"), encode=EncodeConfig(preset="ultrafast"),
                      overwrite=overwrite).validate()


def _frames(path: Path) -> np.ndarray:
    from vedit_cli.io.decode import read_frames
    from vedit_cli.io.probe import probe

    return np.stack(list(read_frames(probe(path))))


def _partials(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if ".partial" in path.name or ".vedit-ray-check" in path.name)


def _run_local(jobs, config):
    from vedit_cli.editing.batch import run_batch
    from vedit_cli.settings import resolve_run

    run = resolve_run(config.model)
    return run_batch(jobs, config, run)


def _run_ray(jobs, config, observer=None, **options):
    from vedit_cli.editing.ray_batch import run_ray_batch

    return run_ray_batch(jobs, config, driver_run(config.model), RayOptions(**options), observer)


def test_copy_on_ray_equals_local_bit_for_bit_on_two_workers_and_a_bad_clip_fails_alone(ray_instance, clips,
                                                                                        tmp_path):
    config = _copy_config()
    local = _run_local(plan_jobs([str(clips)], "", None, tmp_path / "local", None), config)
    jobs = plan_jobs([str(clips)], "", None, tmp_path / "ray", None)
    on_ray = _run_ray(jobs, config, workers=2)
    assert [o.status for o in on_ray] == [o.status for o in local] == ["failed", "ok", "ok", "ok"]
    assert "broken.mp4" in on_ray[0].error and "\n" not in on_ray[0].error
    for here, there in zip(local[1:], on_ray[1:]):
        assert there.frames == here.frames
        assert np.array_equal(_frames(there.job.output_path), _frames(here.job.output_path))
    workers = {o.worker["pid"] for o in on_ray if o.status == "ok"}
    assert len(workers) >= 2 and os.getpid() not in workers  # edited in 2 worker processes, not the driver
    assert all(o.worker["hardware"]["torch_threads"] == 1 for o in on_ray if o.worker)
    assert _partials(tmp_path) == []

    rerun = _run_ray(jobs[1:], config, workers=2)  # finished outputs are skipped: no worker even starts
    assert [o.status for o in rerun] == ["skipped"] * 3


def test_tiny_movie_model_on_ray_matches_local_within_a_bound(ray_instance, clips, tiny_weights, tmp_path):
    import torch

    model = ModelConfig(backend="movie", weights_dir=tiny_weights, device="cpu", dtype="float32", steps=1,
                        vae="tiny", size=64)
    config = EditConfig(model=model, encode=EncodeConfig(preset="ultrafast")).validate()
    inputs = [str(clips / "clip0.mp4")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each Ray worker pins (1 CPU each)
    try:
        local = _run_local(plan_jobs(inputs, "make it red", None, tmp_path / "local", None), config)
    finally:
        torch.set_num_threads(threads)
    on_ray = _run_ray(plan_jobs(inputs, "make it red", None, tmp_path / "ray", None), config, workers=1)
    assert [o.status for o in on_ray] == [o.status for o in local] == ["ok"], [o.error for o in on_ray]
    for here, there in zip(local, on_ray):
        difference = np.abs(_frames(there.job.output_path).astype(int) - _frames(here.job.output_path).astype(int))
        assert difference.max() <= MODEL_BOUND
    assert on_ray[0].editor == local[0].editor


class _KillOnPartial(SilentRayObserver):
    """Kills (SIGKILL) the real worker process writing the first partial file it sees."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.killed, self.notices = folder, None, []

    def progress(self, snapshot) -> None:
        if self.killed is None:
            for path in self.folder.glob(".*.partial.mp4"):
                self.killed = int(re.match(r"^\..*?\.[A-Za-z0-9-]+-(\d+)-[0-9a-f]+\.\w+\.partial\.mp4$", path.name)[1])
                os.kill(self.killed, signal.SIGKILL)
                return

    def notice(self, line: str) -> None:
        self.notices.append(line)


def test_a_killed_worker_leaves_no_partial_and_its_clip_is_retried(ray_instance, tmp_path):
    long_clip = make_clip(tmp_path / "long.mp4", seconds=8, size="320x240")
    observer = _KillOnPartial(tmp_path / "out")
    jobs = plan_jobs([str(long_clip)], "", None, tmp_path / "out", None)
    [outcome] = _run_ray(jobs, _copy_config(), observer, workers=2, max_retries=1)
    assert observer.killed is not None, "the clip finished before the test saw its partial file"
    assert outcome.status == "ok", outcome.error
    assert outcome.worker["pid"] != observer.killed
    assert any("died while editing" in line and "retry 1 of 1" in line for line in observer.notices)
    assert _partials(tmp_path / "out") == []
    assert _frames(outcome.job.output_path).shape[0] == 240


def test_a_clip_over_its_timeout_is_stopped_counted_failed_and_leaves_nothing(ray_instance, tmp_path):
    long_clip = make_clip(tmp_path / "long.mp4", seconds=8, size="320x240")
    jobs = plan_jobs([str(long_clip)], "", None, tmp_path / "out", None)
    [outcome] = _run_ray(jobs, _copy_config(), workers=1, clip_timeout=0.3)
    assert outcome.status == "failed" and "--clip-timeout 0.3 s" in outcome.error
    assert not outcome.job.output_path.exists()
    assert _partials(tmp_path / "out") == []


class _InterruptOnPartial(SilentRayObserver):
    """Ctrl-C in the driver (KeyboardInterrupt) as soon as a worker's partial file exists."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def progress(self, snapshot) -> None:
        if any(self.folder.glob(".*.partial.mp4")):
            raise KeyboardInterrupt


def test_ctrl_c_stops_the_workers_and_removes_their_partials(ray_instance, tmp_path):
    long_clip = make_clip(tmp_path / "long.mp4", seconds=8, size="320x240")
    jobs = plan_jobs([str(long_clip)], "", None, tmp_path / "out", None)
    with pytest.raises(KeyboardInterrupt):
        _run_ray(jobs, _copy_config(), _InterruptOnPartial(tmp_path / "out"), workers=1)
    assert not jobs[0].output_path.exists()
    assert _partials(tmp_path / "out") == []


def test_cli_joins_a_running_cluster_and_json_names_each_clips_worker(ray_instance, clips, tmp_path):
    from tests.cli_helpers import run_vedit

    result = run_vedit("edit", clips, "", "--backend", "copy", "--preset", "ultrafast", "--output-dir", tmp_path,
                       "--ray", "auto", "--workers", "2", "--json")
    assert result.code == 1, result.stderr  # the broken clip
    report = result.json()
    assert report["summary"] == {"ok": 3, "skipped": 0, "failed": 1}
    assert report["settings"]["ray"]["workers"] == 2 and report["settings"]["dtype_reason"] == "resolved on each Ray worker"
    edited = [clip for clip in report["clips"] if clip["status"] == "ok"]
    assert all(clip["worker"]["hardware"]["device"] == "cpu" and clip["worker"]["log"] for clip in edited)
    assert "broken.mp4" in result.stderr and result.stderr.count("failed  ") == 1
