"""A byte-level CLIP tokenizer written on the spot, for the random-weights reference (no tokenizer download).

Every byte is a token and there are no merges: prompts take more tokens than with CLIP's vocabulary, but the
pipeline pads to 77 tokens either way, so the text encoder does exactly the work it does with the real tokenizer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_byte_level_vocabulary(folder: Path) -> tuple[Path, Path]:
    """vocab.json (the 256 bytes, their word-end forms, the two special tokens) and an empty merges.txt."""
    chars = _bytes_to_unicode()
    tokens = chars + [char + "</w>" for char in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    merges.write_text("#version: 0.2\n")
    return vocab, merges


def byte_level_clip_tokenizer(model_max_length: int = 77, folder: Path | None = None):
    """A CLIPTokenizer over the 256 bytes, built offline; its files go to `folder` (else a temporary one)."""
    from transformers import CLIPTokenizer

    if folder is not None:
        vocab, merges = write_byte_level_vocabulary(Path(folder))
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=model_max_length)
    with tempfile.TemporaryDirectory(prefix="vedit-tokenizer-") as temporary:
        vocab, merges = write_byte_level_vocabulary(Path(temporary))
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=model_max_length)
