"""The tiny world: every component a backend loads, trained small here, with procedural edits as ground truth."""
