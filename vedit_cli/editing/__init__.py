"""The application layer of `vedit edit`: job planning, one clip end to end, the batch."""
