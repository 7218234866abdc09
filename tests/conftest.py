"""Shared fixtures: real clips from ../shared/videos (skipped when absent) and tiny local checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO_ROOT.parent / "shared" / "videos"


OPT_IN = {  # marker -> (environment variable that runs it, why it is not in the default run)
    "network": ("VEDIT_NETWORK_TESTS", "downloads real checkpoints"),
    "slow": ("VEDIT_SLOW_TESTS", "trains a tiny world for minutes"),
}


def pytest_collection_modifyitems(config, items):
    for marker, (variable, why) in OPT_IN.items():
        if os.environ.get(variable) == "1":
            continue
        skip = pytest.mark.skip(reason=f"{why}; set {variable}=1 to run")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"real test clips not found at {SHARED_VIDEOS}")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights dir with tiny 'instruct-pix2pix' and 'taesd' entries, saved with save_pretrained."""
    from tests import tiny

    root = tmp_path_factory.mktemp("weights")
    tiny.save_instruct_pix2pix(root / "instruct-pix2pix")
    tiny.save_taesd(root / "taesd")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread than with two fighting the encoder, decoder and other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory) -> Path:
    """A weights dir with tiny random 'clip-vit-large-patch14' and 'pickscore' (processor in a subfolder) entries."""
    from tests import tiny

    root = tmp_path_factory.mktemp("clip_weights")
    tiny.save_tiny_clip(root / "clip-vit-large-patch14", seed=0)
    tiny.save_tiny_clip(root / "pickscore", seed=1, logit_scale=3.1, processor_subfolder="processor")
    return root


@pytest.fixture(scope="session")
def svdiff_weights(tmp_path_factory) -> dict[str, Path]:
    """Two weights dirs sharing tiny sd15 / lcm-lora / taesd: one without, one with (non-zero) memory weights."""
    from tests import tiny

    plain = tmp_path_factory.mktemp("svdiff_plain")
    tiny.save_sd15(plain / "sd15")
    tiny.save_lcm_lora(plain / "lcm-lora-sdv1-5")
    tiny.save_taesd(plain / "taesd")
    with_memory = tmp_path_factory.mktemp("svdiff_memory")
    for name in ("sd15", "lcm-lora-sdv1-5", "taesd"):
        (with_memory / name).symlink_to(plain / name, target_is_directory=True)
    tiny.save_svdiff_memory(with_memory / "svdiff-memory")
    return {"plain": plain, "memory": with_memory}


@pytest.fixture(scope="session")
def sd15_base(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion folder: the base `vedit train pix2pix` widens."""
    from tests import tiny

    return tiny.save_sd15(tmp_path_factory.mktemp("base") / "sd15")


@pytest.fixture(scope="session")
def triplets(tmp_path_factory) -> Path:
    """8 (source, instruction, edited) triplets in a CSV table."""
    from tests.train_helpers import write_triplets

    return write_triplets(tmp_path_factory.mktemp("triplets"), count=8)
