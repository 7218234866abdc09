"""vedit: batch video editing from a text instruction with diffusion models."""

__version__ = "0.1.0"
