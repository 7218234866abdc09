"""FLOPs per frame of the movie backend at 480x480, real-size architecture, counted on meta tensors (no weights).

Teacher (MoViE Table 1 "Base Model"): full VAE encode, 10 steps x 3 CFG passes of the InstructPix2Pix UNet (one
batch of 3), full VAE decode. Student ("+ Adversarial Distillation"): TAESD encode, 1 step x 1 pass of the same
UNet with the guidance embedding, TAESD decode. The text encoder runs once per prompt, not per frame. Our student
keeps the SD1.5-sized UNet (the paper also slims it: "Mobile-Pix2Pix"), so the UNet share shows the gap.

    .venv/bin/python scripts/movie_flops.py [--size 480]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vedit_cli.benchmark.flops import flops_of  # noqa: E402
from vedit_cli.models import guidance_embedding  # noqa: E402
from vedit_cli.models.architectures import build_taesd, build_text_encoder, build_unet, build_vae  # noqa: E402

PAPER_TABLE_1 = {  # TFLOPs per frame at 480x480 (MoViE, Table 1)
    "Base Model (10 steps)": 21.31, "+ Mobile-Pix2Pix (10 steps)": 16.10,
    "+ Multi-Guidance Dist. (10 steps)": 5.50, "+ Adversarial Distillation (1 step)": 0.76,
}
TERA = 1e12



def unet_call_flops(unet, latent: int, batch: int, with_guidance: bool = False) -> int:
    sample = torch.empty(batch, 8, latent, latent, device="meta")
    text = torch.empty(batch, 77, 768, device="meta")
    labels = torch.empty(batch, 2, device="meta") if with_guidance else None
    return flops_of(lambda: unet(sample, torch.tensor(500, device="meta"), text, class_labels=labels))


def measure(size: int) -> dict[str, float]:
    """Every stage's FLOPs for one frame at size x size, in TFLOPs."""
    latent = size // 8
    image = torch.empty(1, 3, size, size, device="meta")
    latents = torch.empty(1, 4, latent, latent, device="meta")
    vae, taesd = build_vae(device="meta"), build_taesd(device="meta")
    unet = build_unet(8, device="meta")
    stages = {
        "vae_encode": flops_of(lambda: vae.encode(image)), "vae_decode": flops_of(lambda: vae.decode(latents)),
        "taesd_encode": flops_of(lambda: taesd.encode(image)), "taesd_decode": flops_of(lambda: taesd.decode(latents)),
        "text_encoder": flops_of(lambda: build_text_encoder("meta")(torch.zeros(1, 77, dtype=torch.long,
                                                                              device="meta"))),
        "unet_cfg_batch3": unet_call_flops(unet, latent, 3), "unet_pass": unet_call_flops(unet, latent, 1),
    }
    with torch.device("meta"):
        guidance_embedding.attach(unet, guidance_embedding.GuidanceEmbedding(1280))
    stages["unet_student_pass"] = unet_call_flops(unet, latent, 1, with_guidance=True)
    return {name: flops / TERA for name, flops in stages.items()}


def rows(t: dict[str, float]) -> list[tuple[str, float, float, str]]:
    """(our configuration, total T, UNet T, the paper's row it compares with)."""
    teacher_unet, mgd_unet, student_unet = 10 * t["unet_cfg_batch3"], 10 * t["unet_student_pass"], t["unet_student_pass"]
    return [
        ("teacher: 10 steps x 3 passes, full VAE", t["vae_encode"] + teacher_unet + t["vae_decode"], teacher_unet,
         "Base Model (10 steps)"),
        ("teacher: 10 steps x 3 passes, TAESD", t["taesd_encode"] + teacher_unet + t["taesd_decode"], teacher_unet,
         "+ Mobile-Pix2Pix (10 steps)"),
        ("student: 10 steps x 1 pass, TAESD", t["taesd_encode"] + mgd_unet + t["taesd_decode"], mgd_unet,
         "+ Multi-Guidance Dist. (10 steps)"),
        ("student: 1 step x 1 pass, TAESD", t["taesd_encode"] + student_unet + t["taesd_decode"], student_unet,
         "+ Adversarial Distillation (1 step)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=480)
    size = parser.parse_args().size
    t = measure(size)
    print(f"movie FLOPs per frame at {size}x{size} (FlopCounterMode on meta tensors; multiply-add = 2 FLOPs)")
    for name in ("vae_encode", "vae_decode", "taesd_encode", "taesd_decode", "unet_pass", "unet_student_pass",
                 "unet_cfg_batch3", "text_encoder"):
        print(f"  {name:<20} {t[name]:8.3f} T")
    print(f"  guidance embedding adds {(t['unet_student_pass'] - t['unet_pass']) * 1e6:,.1f} MFLOPs per pass")
    print(f"\n  {'ours':<42} {'total T':>8} {'UNet T':>8} {'UNet %':>7}   paper Table 1 row (T)")
    for label, total, unet, paper in rows(t):
        print(f"  {label:<42} {total:8.2f} {unet:8.2f} {100 * unet / total:6.1f}%   "
              f"{paper} {PAPER_TABLE_1[paper]:.2f}")
    print("  (text encoder once per prompt, not per frame; the paper's Mobile-Pix2Pix rows also slim the UNet)")


if __name__ == "__main__":
    main()
