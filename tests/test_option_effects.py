"""Every (option, backend) pair of vedit_cli/options.py's table is either refused (tests/test_cli_usage.py) or shown
here to act: the CLI passes it into the config, and changing it changes that backend's edited frames (through the
runner, tiny random models, float32 on CPU, 1 step, a few 32x32 frames), or, for the run options (device, weights
folder, download), the resolved run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vedit_cli.config import EditConfig, ModelConfig
from vedit_cli.options import BACKEND_NAMES, OPTION_BACKENDS
from vedit_cli.settings import resolve_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOURCE = 32  # source frames are SOURCE x SOURCE pixels
SIZE = 16  # processing size (below --size's floor of 64: set on the resolved config, as tests/test_eve.py does)
FRAMES = {"movie": 3, "eve": 5, "svdiff": 3}
PROMPT = "make it look like winter"
BASE = {  # every case starts here; each changes one option (after the extra settings it needs)
    "movie": dict(steps=1, seed=0, movie_mode="teacher"),
    "eve": dict(steps=1, seed=0, guidance_scale=2.0),
    "svdiff": dict(steps=2, seed=0, guidance_scale=1.5),
}
RUN_OPTIONS = ("device", "weights_dir", "allow_download")  # act on the run, shown by the tests at the end

# (option, backend) -> (extra settings both sides share, the changed value); "weights": which tiny folder.
CASES: dict[tuple[str, str], tuple[dict, object]] = {
    ("steps", "movie"): ({}, 2), ("steps", "eve"): ({}, 2), ("steps", "svdiff"): ({}, 3),
    ("guidance_scale", "movie"): ({}, 2.0), ("guidance_scale", "eve"): ({}, 5.0),
    ("guidance_scale", "svdiff"): ({}, 3.0),
    ("seed", "movie"): ({}, 1), ("seed", "eve"): ({}, 1), ("seed", "svdiff"): ({}, 1),
    ("size", "movie"): ({}, 24), ("size", "eve"): ({}, 24), ("size", "svdiff"): ({}, 24),
    ("dtype", "movie"): ({}, "bfloat16"), ("dtype", "eve"): ({}, "bfloat16"), ("dtype", "svdiff"): ({}, "bfloat16"),
    ("timestep_spacing", "movie"): ({}, "trailing"), ("timestep_spacing", "eve"): ({}, "leading"),
    ("image_guidance_scale", "movie"): ({}, 3.0),
    ("vae", "movie"): ({}, "tiny"),
    ("movie_mode", "movie"): ({}, "student"),
    ("anchor", "movie"): ({}, True),
    ("keyframe_interval", "movie"): ({"anchor": True}, 1),
    ("caption", "eve"): ({}, "a snowy street"),
    ("controlnet_scale", "eve"): ({}, 0.3),
    ("lora_scale", "eve"): ({"weights": "lora"}, 0.3), ("lora_scale", "svdiff"): ({}, 0.3),
    ("window", "eve"): ({"overlap": 1}, 2),
    ("overlap", "eve"): ({"window": 3, "overlap": 1}, 2),
    ("chunk_windows", "eve"): ({"window": 2, "overlap": 1, "chunk_windows": 1}, 2),
    ("strength", "svdiff"): ({}, 0.8),
    ("svdiff_init", "svdiff"): ({"strength": 0.8}, "noise"),
}
USED = [(option, backend) for option, users in OPTION_BACKENDS.items() for backend in users]


def test_every_used_pair_has_a_case():
    assert set(CASES) | {(o, b) for o, b in USED if o in RUN_OPTIONS} == set(USED)


# -- the CLI passes each option into the config ---------------------------------------------------------------------

CLI_VALUES = {"steps": ("2", 2), "guidance_scale": ("3", 3.0), "seed": ("1", 1), "size": ("96", 96),
              "device": ("cpu", "cpu"), "dtype": ("float32", "float32"), "weights_dir": ("w", Path("w")),
              "allow_download": (None, True), "image_guidance_scale": ("2", 2.0), "vae": ("tiny", "tiny"),
              "movie_mode": ("teacher", "teacher"), "anchor": (None, True), "keyframe_interval": ("2", 2),
              "caption": ("a cat", "a cat"), "controlnet_scale": ("0.5", 0.5), "lora_scale": ("0.5", 0.5),
              "window": ("8", 8), "overlap": ("2", 2), "chunk_windows": ("2", 2), "strength": ("0.3", 0.3),
              "svdiff_init": ("noise", "noise"), "timestep_spacing": ("trailing", "trailing")}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("option,backend", USED)
def test_the_cli_passes_the_option_to_the_backend_config(option, backend, monkeypatch, tmp_path):
    from vedit_cli import cli
    from vedit_cli.options import flag_name

    seen = {}

    def capture(model, *args, **kwargs):
        seen["model"] = model
        raise _Stop

    monkeypatch.setattr("vedit_cli.settings.resolve_run", capture)
    monkeypatch.setattr("vedit_cli.editing.jobs.plan_jobs", lambda *args, **kwargs: [])
    typed, expected = CLI_VALUES[option]
    value = [] if typed is None else [typed]
    monkeypatch.setattr(sys, "argv", ["vedit", "edit", "x.mp4", "p", "--backend", backend, flag_name(option), *value])
    monkeypatch.setenv("VEDIT_DEBUG", "1")  # let _Stop through
    with pytest.raises(_Stop):
        cli.main()
    assert getattr(seen["model"], option) == expected


# -- changing the option changes the edited frames ------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_weights) -> dict[str, Path]:
    from tests import tiny
    from tests.test_movie_student import weights_with_student

    root = tmp_path_factory.mktemp("option_effects")
    eve = tiny.save_eve_weights(root / "eve")
    eve_lora = root / "eve_lora"
    eve_lora.mkdir()
    for name in ("sd15", "controlnet-ip2p", "animatediff-motion-adapter"):
        (eve_lora / name).symlink_to(eve / name, target_is_directory=True)
    tiny.save_unet_lora(eve_lora / "eve-lora")
    svdiff = root / "svdiff"
    svdiff.mkdir()
    for name in ("sd15", "taesd"):
        (svdiff / name).symlink_to(eve / name if name == "sd15" else tiny_weights / name, target_is_directory=True)
    tiny.save_lcm_lora(svdiff / "lcm-lora-sdv1-5")
    movie = weights_with_student(tiny_weights, root / "movie")
    return {"movie": movie, "eve": eve, "lora": eve_lora, "svdiff": svdiff}


def _source_frames(count: int) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(7)
    return [(torch.rand(SOURCE, SOURCE, 3, generator=generator) * 255).to(torch.uint8).numpy() for _ in range(count)]


def edited_frames(folders: dict[str, Path], backend: str, **options) -> np.ndarray:
    """The frames `backend` writes for the tiny source clip with `options` (ModelConfig fields)."""
    from vedit_cli.editor import create_editor
    from vedit_cli.pipeline.runner import run_clip

    folder = folders[options.pop("weights", backend)]
    size = options.pop("size", SIZE)
    options = {"device": "cpu", "dtype": "float32", **options}
    run = resolve_run(ModelConfig(backend=backend, weights_dir=folder, **options))
    editor = create_editor(run)
    written: list[np.ndarray] = []

    class ListSink:
        def write(self, frame_hwc):
            written.append(np.asarray(frame_hwc).copy())

    config = EditConfig(model=replace(run.model, size=size))
    count = FRAMES[backend]
    stats = run_clip(_source_frames(count), count, editor, PROMPT, ListSink(), None, config)
    assert stats.frames_written == count
    return np.stack(written).astype(np.int16)


_BASELINES: dict[tuple, np.ndarray] = {}


@pytest.mark.parametrize("option,backend", sorted(CASES))
def test_changing_the_option_changes_the_output(option, backend, weights):
    extra, value = CASES[(option, backend)]
    before = {**BASE[backend], **extra}
    key = (backend, tuple(sorted(before.items())))
    if key not in _BASELINES:
        _BASELINES[key] = edited_frames(weights, backend, **before)
    baseline = _BASELINES[key]
    changed = edited_frames(weights, backend, **{**before, option: value})
    assert changed.shape == baseline.shape
    assert np.abs(changed - baseline).max() > 0, f"--{option} did not change {backend}'s output"


# -- run options: device, weights folder, download ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ("movie", "eve", "svdiff"))
def test_device_decides_where_the_model_runs(backend, tmp_path):
    assert resolve_run(ModelConfig(backend=backend, weights_dir=tmp_path, device="cpu")).device.type == "cpu"
    if torch.cuda.is_available():
        assert resolve_run(ModelConfig(backend=backend, weights_dir=tmp_path, device="cuda")).device.type == "cuda"
    else:
        from vedit_cli.errors import ConfigError

        with pytest.raises(ConfigError, match="--device cuda"):
            resolve_run(ModelConfig(backend=backend, weights_dir=tmp_path, device="cuda"))


@pytest.mark.parametrize("backend", ("movie", "eve", "svdiff"))
def test_weights_dir_is_where_weights_are_read_and_download_fetches_them(backend, tmp_path):
    """An empty --weights-dir: without --download the error names that folder and the download command; with
    --download the missing entries are fetched (here: refused offline, so nothing is reached)."""
    from vedit_cli.editing.batch import _create_editor
    from vedit_cli.errors import DownloadError, WeightsMissingError

    folder = tmp_path / "empty"
    run = resolve_run(ModelConfig(backend=backend, weights_dir=folder, device="cpu", dtype="float32"))
    assert run.weights_dir == folder
    with pytest.raises(WeightsMissingError, match=str(folder)):
        _create_editor(run, [object()])
    fetching = resolve_run(ModelConfig(backend=backend, weights_dir=folder, device="cpu", dtype="float32",
                                       allow_download=True))
    with pytest.raises(DownloadError):
        _create_editor(fetching, [object()])


def test_copy_is_refused_every_model_option():
    assert [option for option, users in OPTION_BACKENDS.items() if "copy" in users] == []
    assert set(BACKEND_NAMES) - {"copy"} == {backend for users in OPTION_BACKENDS.values() for backend in users}
