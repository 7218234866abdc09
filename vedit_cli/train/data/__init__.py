"""Training data: triplet readers (folder, CSV/JSONL, InstructPix2Pix parquet), clip frames and segments (decord),
and the loader that turns them into per-process micro-batches, skipping and counting bad samples."""
