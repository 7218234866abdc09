"""Training data and the pure parts of the trainer: the batch plan, per-sample draws, condition dropout, the UNet
widening, triplet readers (folder, CSV, parquet), clip segments (decord), bad samples skipped with weight 0."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import tiny
from tests.train_helpers import write_triplets
from vedit_cli.errors import ConfigError, TrainingDataError
from vedit_cli.train.config import TripletColumns
from vedit_cli.train.data.samples import BadSample, MicroBatches
from vedit_cli.train.data.triplets import open_triplets
from vedit_cli.train.plan import BatchPlan, sample_seed
from vedit_cli.train.randomness import SampleRandom

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.mp4"


def _global_batch(plan: BatchPlan, step: int) -> list[tuple[int, int]]:
    """(position, dataset index) of every sample of `step`, over all ranks and micro-steps."""
    return sorted((q, plan.dataset_index(step, q)) for m in range(plan.accumulation) for r in range(plan.num_processes)
                  for q in plan.positions(step, m, r))


def test_two_processes_with_batch_b_see_what_one_process_with_2b_sees():
    one, two = BatchPlan(10, 4, 1, seed=5), BatchPlan(10, 2, 2, seed=5)
    accumulated = BatchPlan(10, 1, 2, accumulation=2, seed=5)
    for step in range(6):
        assert _global_batch(one, step) == _global_batch(two, step) == _global_batch(accumulated, step)
    assert sample_seed(5, 3, 1) == sample_seed(5, 3, 1) != sample_seed(5, 3, 2) != sample_seed(5, 4, 1)


def test_every_sample_is_seen_once_per_epoch():
    plan = BatchPlan(12, 3, 2, seed=1)
    first_epoch = [index for step in range(2) for _, index in _global_batch(plan, step)]
    assert sorted(first_epoch) == list(range(12))
    assert [index for step in (2, 3) for _, index in _global_batch(plan, step)] != first_epoch  # reshuffled


def test_per_sample_draws_do_not_depend_on_the_batch():
    together = SampleRandom([11, 22])
    alone = SampleRandom([22])
    assert together.rand()[1] == alone.rand()[0]
    assert torch.equal(together.randn(4, 2, 2)[1], alone.randn(4, 2, 2)[0])


def test_condition_dropout_is_5_percent_text_5_image_5_both():
    from vedit_cli.train.recipes.pix2pix import condition_dropout

    drop_text, drop_image = condition_dropout(torch.rand(200_000, generator=torch.Generator().manual_seed(0)), 0.05)
    fractions = [float(x.float().mean()) for x in (drop_text & ~drop_image, drop_image & ~drop_text,
                                                   drop_text & drop_image)]
    assert fractions == pytest.approx([0.05, 0.05, 0.05], abs=0.003)


def test_widened_unet_starts_as_the_base_unet():
    from vedit_cli.train.recipes.pix2pix import widen_conv_in

    base = tiny.tiny_unet(4)
    widened = tiny.tiny_unet(4)
    widen_conv_in(widened)
    assert widened.config.in_channels == 8 and widened.conv_in.weight.shape[1] == 8
    latents, image = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    text = torch.randn(1, 5, tiny.TEXT_HIDDEN)
    with torch.no_grad():
        expected = base(latents, 10, text).sample
        got = widened(torch.cat([latents, image], 1), 10, text).sample
    torch.testing.assert_close(got, expected)


def test_csv_folder_and_subfolder_triplets(tmp_path):
    table = write_triplets(tmp_path / "csv", count=3)
    for path in (table, table.parent):
        source = open_triplets(path)
        sample = source.load(1)
        assert len(source) == 3 and sample["instruction"] == "invert the colours"
        assert np.array_equal(np.asarray(sample["edited"]), 255 - np.asarray(sample["source"]))
    item = tmp_path / "folders" / "a"
    item.mkdir(parents=True)
    shutil.copy(table.parent / "000_source.png", item / "source.png")
    shutil.copy(table.parent / "000_edited.png", item / "edited.png")
    (item / "instruction.txt").write_text("invert the colours\n")
    (tmp_path / "folders" / "b").mkdir()  # no images: a bad sample, not a crash
    (tmp_path / "folders" / "b" / "instruction.txt").write_text("invert the colours\n")
    folders = open_triplets(tmp_path / "folders")
    assert len(folders) == 2 and folders.load(0)["instruction"] == "invert the colours"
    with pytest.raises(BadSample, match="no source image"):
        folders.load(1)


def test_wrong_column_names_are_one_line(tmp_path):
    table = write_triplets(tmp_path, count=1)
    with pytest.raises(ConfigError, match="--source-column"):
        open_triplets(table, TripletColumns(source="input_image"))
    with pytest.raises(TrainingDataError, match="does not exist"):
        open_triplets(tmp_path / "absent.csv")


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("source_column", ["original_image", "input_image"])
def test_instruct_pix2pix_parquet_with_image_structs(tmp_path, source_column):
    """The layout of timbrooks/instructpix2pix-clip-filtered (and fusing/instructpix2pix-1000-samples: input_image)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = [np.full((8, 8, 3), value, dtype=np.uint8) for value in (10, 20, 30, 40, 50)]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": _png_bytes(image), "path": None} for image in images]
    cells[3] = {"bytes": b"broken", "path": None}
    table = pa.table({
        source_column: pa.array(cells, type=struct),
        "edit_prompt": ["make it brighter"] * 5,
        "edited_image": pa.array([{"bytes": _png_bytes(255 - image), "path": None} for image in images], type=struct),
    })
    (tmp_path / "data").mkdir()
    pq.write_table(table.slice(0, 3), tmp_path / "data" / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(table.slice(3), tmp_path / "data" / "train-00001-of-00002.parquet")
    columns = TripletColumns(source=source_column)
    source = open_triplets(tmp_path, columns)
    assert len(source) == 5
    assert [int(np.asarray(source.load(i)["source"])[0, 0, 0]) for i in (0, 2, 4)] == [10, 30, 50]
    assert source.load(1)["instruction"] == "make it brighter"
    with pytest.raises(BadSample, match="unreadable image"):
        source.load(3)
    assert "train-00001-of-00002.parquet row 0" in source.describe(3)


def test_clip_segments_read_consecutive_frames_without_the_whole_clip(tmp_path):
    from vedit_cli.train.data.clips import ClipSegments, open_clips

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    shutil.copy(EXAMPLE, tmp_path / "example.mp4")
    clips = ClipSegments(open_clips(tmp_path), segment_length=3, stride=2, step=10, size=(64, 48))
    assert len(clips.unreadable) == 1 and "broken.mp4" in clips.unreadable[0]
    assert len(clips) == (90 - 5) // 10 + 1  # starts 0, 10, ..., 80 for a span of 5 frames in 90
    segment = clips.load(2)
    assert segment["frames"].shape == (3, 48, 64, 3) and segment["start"] == 20
    one_by_one = ClipSegments([tmp_path / "example.mp4"], size=(64, 48))
    for offset in range(3):  # frame 20 + 2k of the segment is frame 20 + 2k of the clip
        assert np.abs(segment["frames"][offset].astype(int) - one_by_one.load(20 + 2 * offset)["frames"][0]).mean() < 2


class _Source:
    def __init__(self, bad: set[int]):
        self.bad = bad

    def __len__(self):
        return 6

    def describe(self, index):
        return f"sample {index}"

    def load(self, index):
        if index in self.bad:
            raise BadSample("broken")
        return {"value": index}


def test_a_bad_sample_is_replaced_by_a_readable_one_with_weight_zero():
    plan = BatchPlan(6, 3, shuffle=False)
    batches = MicroBatches(_Source({0, 4}), plan, rank=0, start_step=0, max_steps=2,
                           prepare=lambda raw, seed: {"value": torch.tensor(raw["value"])},
                           collate=lambda samples: {"value": torch.stack([s["value"] for s in samples])})
    first, second = batches[0], batches[1]
    assert first["value"].tolist() == [1, 1, 2] and first["weight"].tolist() == [0.0, 1.0, 1.0]
    assert first["skipped"] == ["sample 0: broken"] and second["skipped"] == ["sample 4: broken"]
    with pytest.raises(TrainingDataError, match="none of the 6 training samples"):
        MicroBatches(_Source(set(range(6))), plan, 0, 0, 1, lambda raw, seed: raw, lambda s: {})[0]
