"""Checks every loader shares: the one missing-weights message (built from the registry) and the tokenizer guard.

transformers builds an EMPTY tokenizer, without raising, from a folder whose vocab/merges files are absent
(`len(tokenizer) == 2`, every prompt encoded as padding): a guard refuses it before any edit runs.
"""

from __future__ import annotations

from pathlib import Path

from vedit_cli.errors import WeightsMissingError
from vedit_cli.weights.registry import REGISTRY, download_command

MIN_TOKENIZER_SIZE = 256  # a byte-level BPE vocabulary holds at least the 256 byte symbols; an empty one has 2


def missing_weights(name: str, weights_dir: Path, what: str) -> WeightsMissingError:
    """One line: which entry, where, what is missing, and what to do (download it, or how to produce it)."""
    return WeightsMissingError(f"weights '{name}' are missing or incomplete in {weights_dir} (missing: {what}); "
                               f"{fix_hint(name, weights_dir)}")


def fix_hint(name: str, weights_dir: Path) -> str:
    """`run: vedit download NAME --weights-dir DIR` for hub entries; the entry's own hint for trained ones."""
    entry = REGISTRY.get(name)
    if entry is not None and entry.local_only:
        return entry.local_hint
    return f"run: {download_command([name], weights_dir)}"


def load_clip_tokenizer(folder: Path, name: str, weights_dir: Path, vocab_size: int | None = None):
    """A CLIPTokenizer from a local folder, refusing an empty one or one larger than its text encoder's table."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    absent = [file for file in ("vocab.json", "merges.txt") if not (folder / file).is_file()]
    if absent:
        raise missing_weights(name, weights_dir, ", ".join(f"{folder.name}/{file}" for file in absent))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_tokenizer(tokenizer, folder, name, weights_dir, vocab_size)
    return tokenizer


def check_tokenizer(tokenizer, folder: Path, name: str, weights_dir: Path, vocab_size: int | None = None) -> None:
    """Refuse the silent empty tokenizer, and one whose ids overflow the text encoder's embedding table."""
    size = len(tokenizer)
    if size < MIN_TOKENIZER_SIZE or (vocab_size is not None and size > vocab_size):
        expected = f", the text encoder expects at most {vocab_size}" if vocab_size is not None else ""
        raise missing_weights(name, weights_dir, f"a usable tokenizer in {folder} (it has {size} tokens{expected})")
