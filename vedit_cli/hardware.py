"""Device, dtype and threads, resolved once in the process that loads the model, by what the machine can do.

`auto` device: cuda, then mps, then cpu. `auto` dtype, by capability:
- cuda: float16 (bfloat16 only when asked: SD1.5-family models run in float16);
- mps: float16;
- cpu: bfloat16 only where the CPU computes it natively (AVX512-BF16 or AMX tiles); elsewhere float32, because
  emulated bfloat16 is about 100x slower (an SD-VAE decode of 64x64 took 77.6 s in bfloat16 and 0.75 s in float32
  on an AVX2-only AMD EPYC). `torch.backends.cpu.get_cpu_capability()` says "AVX512" on CPUs without bf16, so it
  is not used for this decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vedit_cli.errors import ConfigError

DTYPES_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Hardware:
    """What the model runs on, and why that dtype."""

    device: torch.device
    dtype: torch.dtype
    dtype_reason: str  # e.g. "auto: this CPU has no native bfloat16 (AVX512-BF16/AMX)"
    torch_threads: int

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def describe(self) -> str:
        return f"{self.device.type} {self.dtype_name} ({self.dtype_reason}), {self.torch_threads} torch threads"

    def as_dict(self) -> dict:
        return {"device": self.device.type, "dtype": self.dtype_name, "dtype_reason": self.dtype_reason,
                "torch_threads": self.torch_threads}


def resolve_hardware(device: str = "auto", dtype: str = "auto", torch_threads: int | None = None) -> Hardware:
    """The one resolution of device, dtype and torch threads; pins the thread count when one is given."""
    resolved_device = resolve_device(device)
    resolved_dtype, reason = resolve_dtype(dtype, resolved_device)
    if torch_threads is not None:
        if torch_threads < 1:
            raise ConfigError(f"--torch-threads must be at least 1, got {torch_threads}")
        torch.set_num_threads(torch_threads)
    return Hardware(resolved_device, resolved_dtype, reason, torch.get_num_threads())


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> cuda > mps > cpu; an explicit device that is absent is a user error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not _mps_available():
        raise ConfigError("--device mps was asked for but Metal (MPS) is not available; use --device auto or cpu")
    if name != "cpu":
        raise ConfigError(f"--device must be one of auto, cpu, cuda, mps; got {name!r}")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why): `auto` by the device's capability, otherwise the named dtype."""
    if name != "auto":
        try:
            return DTYPES_BY_NAME[name], "asked for"
        except KeyError:
            raise ConfigError(f"--dtype must be one of auto, {', '.join(DTYPES_BY_NAME)}; got {name!r}") from None
    if device.type in ("cuda", "mps"):
        return torch.float16, f"auto: float16 on {device.type}"
    if cpu_has_native_bf16():
        return torch.bfloat16, "auto: this CPU computes bfloat16 natively (AVX512-BF16/AMX)"
    return torch.float32, "auto: this CPU has no native bfloat16 (AVX512-BF16/AMX), where it is ~100x slower"


def cpu_has_native_bf16() -> bool:
    """True where the CPU has AVX512-BF16 or AMX tiles (torch's own probes, else /proc/cpuinfo's flags)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None for probe in probes):
        return any(bool(probe()) for probe in probes if probe is not None)
    return _cpuinfo_has_bf16_flag(CPUINFO)


def _cpuinfo_has_bf16_flag(cpuinfo: Path) -> bool:
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
