"""`vedit benchmark`: FLOPs, latency, frames/s and memory per backend, beside the diffusers reference pipeline."""
