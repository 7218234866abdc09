"""(source image, instruction, edited image) triplets from a folder, a CSV/JSONL file, or InstructPix2Pix parquet.

`open_triplets(path, columns)` picks the reader:
- a .csv / .jsonl / .ndjson file, or a folder holding `triplets.csv`, `metadata.csv` or `metadata.jsonl`: one row a
  triplet, image paths relative to the file's folder;
- a folder of one subfolder per triplet: `source.*`, `edited.*` (png/jpg/webp) and `instruction.txt`;
- a .parquet file or a folder of them (a local copy of timbrooks/instructpix2pix-clip-filtered or
  fusing/instructpix2pix-1000-samples): image columns hold Hugging Face image structs ({bytes, path}) or raw bytes.
Column names are options (`TripletColumns`); the parquet defaults are the clip-filtered dataset's names.
Every sample comes back as {"source": PIL RGB, "edited": PIL RGB, "instruction": str}; an unreadable one raises
BadSample and is skipped by the loader.
"""

from __future__ import annotations

import io
from pathlib import Path

from vedit_cli.errors import TrainingDataError
from vedit_cli.train.config import TripletColumns
from vedit_cli.manifest import read_manifest_rows
from vedit_cli.train.data.samples import BadSample

TABLE_NAMES = ("triplets.csv", "metadata.csv", "metadata.jsonl", "triplets.jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, SyntaxError)  # PIL raises SyntaxError on some bad PNGs


PARQUET_COLUMNS = TripletColumns("original_image", "edit_prompt", "edited_image")
TABLE_COLUMNS = TripletColumns("source", "instruction", "edited")


def open_triplets(path: Path, columns: TripletColumns | None = None):
    """The reader for `path` (see the module docstring); TrainingDataError when it is neither."""
    path, columns = Path(path), columns or TripletColumns()
    if not path.exists():
        raise TrainingDataError(f"training data {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".parquet" or path.is_dir() and any(path.rglob("*.parquet")):
        return ParquetTriplets(path, columns.resolved(PARQUET_COLUMNS))
    if path.is_dir():
        tables = [path / name for name in TABLE_NAMES if (path / name).is_file()]
        if tables:
            return TableTriplets(tables[0], columns.resolved(TABLE_COLUMNS))
        return FolderTriplets(path)
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        return TableTriplets(path, columns.resolved(TABLE_COLUMNS))
    raise TrainingDataError(f"training data {path} is not a folder, a .csv/.jsonl table or a .parquet file")


def _open_image(source) -> "PIL.Image.Image":  # noqa: F821
    from PIL import Image

    try:
        image = Image.open(source)
        image.load()
        return image.convert("RGB")
    except READ_ERRORS as error:
        raise BadSample(f"unreadable image ({type(error).__name__}: {error})") from error


class TableTriplets:
    """Rows of a CSV/JSONL table: source and edited image paths (relative to the table's folder) and instruction."""

    def __init__(self, table: Path, columns: TripletColumns):
        from vedit_cli.errors import ConfigError

        self.table, self.columns = Path(table), columns
        rows = read_manifest_rows(self.table, TrainingDataError)
        wanted = (columns.source, columns.instruction, columns.edited)
        if rows and any(name not in rows[0][1] for name in wanted):
            raise ConfigError(f"{self.table} has columns {sorted(rows[0][1])}, expected {list(wanted)}; "
                              "name them with --source-column, --instruction-column, --edited-column")
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self, index: int) -> str:
        return f"{self.table} line {self.rows[index][0]}"

    def load(self, index: int) -> dict:
        row = self.rows[index][1]
        instruction = row.get(self.columns.instruction)
        if not isinstance(instruction, str):
            raise BadSample("no instruction")
        return {"source": _open_image(self.table.parent / str(row[self.columns.source])),
                "edited": _open_image(self.table.parent / str(row[self.columns.edited])), "instruction": instruction}


class FolderTriplets:
    """One subfolder per triplet: source.<ext>, edited.<ext>, instruction.txt."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.items = sorted(child for child in self.folder.iterdir() if child.is_dir())

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return str(self.items[index])

    def load(self, index: int) -> dict:
        item = self.items[index]
        try:
            instruction = (item / "instruction.txt").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise BadSample(f"no readable instruction.txt ({error})") from error
        return {"source": _open_image(_image_named(item, "source")),
                "edited": _open_image(_image_named(item, "edited")), "instruction": instruction}


def _image_named(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise BadSample(f"no {stem} image ({'/'.join(IMAGE_SUFFIXES)})")


class ParquetTriplets:
    """Rows of parquet files, read one row group at a time (the last one is cached: sequential reads are cheap)."""

    def __init__(self, path: Path, columns: TripletColumns):
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise TrainingDataError("reading parquet needs pyarrow: pip install 'vedit[parquet]'") from error
        from vedit_cli.errors import ConfigError

        self.columns = columns
        files = [path] if Path(path).is_file() else sorted(Path(path).rglob("*.parquet"))
        self.files, self.groups = files, []  # groups: (file index, row group, first row, rows)
        for file_index, file in enumerate(files):
            parquet = pq.ParquetFile(file)
            metadata, names = parquet.metadata, set(parquet.schema_arrow.names)
            missing = [name for name in (columns.source, columns.instruction, columns.edited) if name not in names]
            if missing:
                raise ConfigError(f"{file} has no column {missing[0]!r} (columns: {sorted(names)}); name the "
                                  "columns with --source-column, --instruction-column, --edited-column")
            for group in range(metadata.num_row_groups):
                self.groups.append((file_index, group, metadata.row_group(group).num_rows))
        self.starts = [0]
        for _, _, rows in self.groups:
            self.starts.append(self.starts[-1] + rows)
        self._cached: tuple[int, object] | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        import bisect

        group = bisect.bisect_right(self.starts, index) - 1
        return group, index - self.starts[group]

    def describe(self, index: int) -> str:
        group, row = self._locate(index)
        return f"{self.files[self.groups[group][0]]} row {self.starts[group] - self._file_start(group) + row}"

    def _file_start(self, group: int) -> int:
        file_index = self.groups[group][0]
        return self.starts[next(i for i, g in enumerate(self.groups) if g[0] == file_index)]

    def _table(self, group: int):
        if self._cached is None or self._cached[0] != group:
            import pyarrow.parquet as pq

            file_index, row_group, _ = self.groups[group]
            names = [self.columns.source, self.columns.instruction, self.columns.edited]
            self._cached = (group, pq.ParquetFile(self.files[file_index]).read_row_group(row_group, columns=names))
        return self._cached[1]

    def load(self, index: int) -> dict:
        group, row = self._locate(index)
        try:
            record = self._table(group).slice(row, 1).to_pylist()[0]
        except READ_ERRORS as error:
            raise BadSample(f"unreadable row ({error})") from error
        instruction = record[self.columns.instruction]
        if not isinstance(instruction, str):
            raise BadSample("no instruction")
        return {"source": _open_image(_image_bytes(record[self.columns.source])),
                "edited": _open_image(_image_bytes(record[self.columns.edited])), "instruction": instruction}


def _image_bytes(value) -> io.BytesIO:
    """A Hugging Face image struct ({"bytes", "path"}) or raw bytes, as a file object for PIL."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise BadSample("image cell holds no bytes")
    return io.BytesIO(value)
