"""Video I/O: probe (exact facts via the bundled ffmpeg), decode (upright RGB frames, bounded memory), encode
(exact rational fps, exact size), audio (mux without metadata) and output (atomic, never over the input)."""
