"""Which backend uses which `vedit edit` option: one table, as data, checked before any clip starts.

Keys are ModelConfig field names (the CLI's parameter names); an option of ModelConfig missing from the table is a
test failure, so a new option says which backends it acts on. No torch import: the CLI reads this at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable

from vedit_cli.errors import UnusedOptionError

BACKEND_NAMES = ("copy", "movie", "eve", "svdiff")  # == vedit_cli.editor.BACKENDS (tested; that module imports torch)
MODEL_BACKENDS = ("movie", "eve", "svdiff")  # copy runs no model: it uses none of the model options

OPTION_BACKENDS: dict[str, tuple[str, ...]] = {
    # every model backend
    "steps": MODEL_BACKENDS,
    "guidance_scale": MODEL_BACKENDS,
    "seed": MODEL_BACKENDS,
    "size": MODEL_BACKENDS,
    "device": MODEL_BACKENDS,
    "dtype": MODEL_BACKENDS,
    "weights_dir": MODEL_BACKENDS,
    "allow_download": MODEL_BACKENDS,
    "timestep_spacing": ("movie", "eve"),
    # movie (InstructPix2Pix teacher and its student)
    "image_guidance_scale": ("movie",),
    "vae": ("movie",),
    "movie_mode": ("movie",),
    "anchor": ("movie",),
    "keyframe_interval": ("movie",),
    # eve
    "caption": ("eve",),
    "controlnet_scale": ("eve",),
    "lora_scale": ("eve", "svdiff"),
    "window": ("eve",),
    "overlap": ("eve",),
    "chunk_windows": ("eve",),
    # svdiff
    "strength": ("svdiff",),
    "svdiff_init": ("svdiff",),
}

FLAG_NAMES = {"allow_download": "--download"}  # where the flag is not the field name with dashes


def flag_name(option: str) -> str:
    """`chunk_windows` -> `--chunk-windows`."""
    return FLAG_NAMES.get(option, "--" + option.replace("_", "-"))


def unused_options(backend: str, given: Iterable[str]) -> list[str]:
    """The options among `given` (parameter names the user set) that `backend` does not use, in table order."""
    given = set(given)
    return [option for option, users in OPTION_BACKENDS.items() if option in given and backend not in users]


def check_options(backend: str, given: Iterable[str]) -> None:
    """Refuse, in one line, the first option the user set that `backend` does not use."""
    unused = unused_options(backend, given)
    if not unused:
        return
    users = OPTION_BACKENDS[unused[0]]
    others = f" (also {', '.join(flag_name(option) for option in unused[1:])})" if unused[1:] else ""
    raise UnusedOptionError(
        f"{flag_name(unused[0])} is used by --backend {_either(users)} only, not by {backend}{others}; "
        "remove it or choose a backend that uses it")


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
