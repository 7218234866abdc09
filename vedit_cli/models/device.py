"""Device and dtype selection shared by the model backends.

`auto` device: cuda, then mps, then cpu. `auto` dtype: float16 on cuda and mps (tensor cores / Metal halves),
bfloat16 on cpu (FACTS.md: 1.6-1.9x faster than float32 on the build machine's AVX512-bf16 CPUs; pass
`--dtype float32` on a CPU without bf16 support, where bf16 is emulated and slow).
"""

from __future__ import annotations

import torch

from vedit_cli.errors import ConfigError

DTYPES_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTO_DTYPE_BY_DEVICE = {"cuda": torch.float16, "mps": torch.float16, "cpu": torch.bfloat16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


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
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` -> float16 on cuda/mps, bfloat16 on cpu; otherwise the named dtype."""
    if name == "auto":
        return AUTO_DTYPE_BY_DEVICE.get(device.type, torch.float32)
    try:
        return DTYPES_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"--dtype must be one of auto, {', '.join(DTYPES_BY_NAME)}; got {name!r}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
