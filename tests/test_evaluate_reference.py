"""`vedit evaluate --reference`: PSNR and SSIM per frame against a ground-truth clip (vedit_cli/metrics/reference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_evaluate_cli import run_vedit
from tests.test_metrics_evaluation import write_frames
from tests.test_metrics_temporal import smooth_texture, translated_clip
from vedit_cli.metrics.reference import frame_psnr, frame_ssim


def test_psnr_and_ssim_of_known_frames():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    shifted = np.clip(frame.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = ((frame.astype(float) - shifted) ** 2).mean()
    assert frame_psnr(frame, shifted) == pytest.approx(10 * np.log10(255**2 / mse))
    assert frame_psnr(frame, frame) == 100.0
    assert frame_ssim(frame, frame) == pytest.approx(1.0)
    assert frame_ssim(frame, shifted) < 1.0
    assert frame_ssim(frame, 255 - frame) < 0.0  # anti-correlated structure


@pytest.fixture(scope="module")
def reference_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_clips")
    reference = translated_clip(smooth_texture(0), frames=3)
    noisy = [np.clip(f.astype(int) + np.random.default_rng(i).integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
             for i, f in enumerate(reference)]
    return {"reference": write_frames(root / "reference", reference), "noisy": write_frames(root / "noisy", noisy),
            "short": write_frames(root / "short", reference[:2])}


def test_evaluate_reference_json_per_frame(monkeypatch, capsys, reference_clips):
    code, out, _ = run_vedit(monkeypatch, capsys, reference_clips["noisy"], "--reference", reference_clips["reference"],
                             "--metrics", "psnr,ssim,flicker", "--json")
    assert code == 0
    clip = json.loads(out)["clips"][0]
    assert len(clip["per_frame"]["psnr"]) == len(clip["per_frame"]["ssim"]) == 3
    assert 20 < clip["metrics"]["psnr"] < 35  # uniform noise of +-20 levels: ~24.6 dB
    assert clip["metrics"]["psnr"] == pytest.approx(np.mean(clip["per_frame"]["psnr"]))
    assert 0 < clip["metrics"]["ssim"] < 1


def test_evaluate_reference_identical_and_gate(monkeypatch, capsys, reference_clips):
    code, out, _ = run_vedit(monkeypatch, capsys, reference_clips["reference"], "--reference",
                             reference_clips["reference"], "--metrics", "psnr,ssim", "--json", "--min", "psnr=40")
    assert code == 0
    assert json.loads(out)["clips"][0]["metrics"]["ssim"] == pytest.approx(1.0)
    code, _, err = run_vedit(monkeypatch, capsys, reference_clips["noisy"], "--reference", reference_clips["reference"],
                             "--metrics", "psnr", "--min", "psnr=40")
    assert code == 1 and "psnr" in err


def test_reference_metrics_need_a_reference_and_equal_lengths(monkeypatch, capsys, reference_clips):
    code, _, err = run_vedit(monkeypatch, capsys, reference_clips["noisy"], "--metrics", "psnr")
    assert code != 0 and "--reference" in err
    code, _, err = run_vedit(monkeypatch, capsys, reference_clips["short"], "--reference", reference_clips["reference"],
                             "--metrics", "psnr")
    assert code != 0 and "differ in length" in err
