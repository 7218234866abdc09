"""Device and dtype by capability (vedit_cli/hardware.py), and one resolution shared by `edit` and `benchmark`."""

from __future__ import annotations

import pytest
import torch

from tests.cli_helpers import run_vedit
from tests.io_media import make_clip
from vedit_cli import hardware
from vedit_cli.errors import ConfigError


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx2 avx512f avx512bw", False),  # AVX512 without bf16: get_cpu_capability() says "AVX512" here too
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_tile amx_bf16", True),
])
def test_cpuinfo_flags_decide_native_bfloat16(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert hardware._cpuinfo_has_bf16_flag(cpuinfo) is expected


@pytest.mark.parametrize("native, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_auto_dtype_on_cpu_is_bfloat16_only_with_native_support(monkeypatch, native, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    resolved = hardware.resolve_hardware("cpu", "auto")
    assert resolved.dtype == expected
    assert ("no native bfloat16" in resolved.dtype_reason) is (not native)
    assert hardware.resolve_hardware("cpu", "bfloat16").dtype == torch.bfloat16  # asked for: always honoured


def test_absent_devices_are_user_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda .* no CUDA GPU"):
        hardware.resolve_hardware("cuda", "auto")
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)
    with pytest.raises(ConfigError, match="--device mps"):
        hardware.resolve_hardware("mps", "auto")


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: True)
    assert hardware.resolve_device("auto").type == "mps"
    assert hardware.resolve_dtype("auto", torch.device("mps"))[0] == torch.float16


def test_edit_and_benchmark_resolve_identical_settings(tiny_weights, tmp_path):
    """The same flags give the same backend, mode, steps, guidance, spacing, device and dtype (with its reason)."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.1, size="64x48")
    flags = ["--weights-dir", str(tiny_weights), "--size", "64"]  # default steps: the table's, on both sides
    edit = run_vedit("edit", clip, "make it snowy", "--backend", "movie", "-o", tmp_path / "out.mp4", "--json",
                     *flags)
    assert edit.code == 0, edit.stderr
    bench = run_vedit("benchmark", "--backend", "movie", "--no-reference", "--frames", "1", "--repeats", "1",
                      "--warmup", "0", "--json", *flags)
    assert bench.code == 0, bench.stderr
    edit_settings = edit.json()["settings"]
    bench_settings = bench.json()["rows"][0]["resolved"]
    assert edit_settings == bench_settings
    assert edit_settings["dtype"] == ("bfloat16" if hardware.cpu_has_native_bf16() else "float32")
