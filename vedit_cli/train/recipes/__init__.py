"""Training recipes: each gives the trainer a model, data and a per-sample loss (vedit_cli.train.trainer.Recipe)."""
