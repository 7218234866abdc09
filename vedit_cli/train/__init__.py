"""Training: one accelerate loop for every recipe (trainer.py), the data plan and per-sample randomness (plan.py,
randomness.py), checkpoints (checkpoints.py), data readers (data/), and recipes (recipes/: pix2pix, ...).

Entry points: `vedit train pix2pix` (vedit_cli/commands/train.py) and, from Python,
`vedit_cli.train.recipes.pix2pix.train_pix2pix(Pix2PixConfig(...))`.
"""
