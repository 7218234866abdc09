"""The metrics `vedit evaluate` knows: names, which way is better, and the convention each one follows."""

from __future__ import annotations

METRIC_NAMES = (
    "warp_error", "flicker", "clip_frame", "clip_text", "clip_direction", "pick_score",
    "viclip_direction", "viclip_output", "psnr", "ssim",
)
LOWER_IS_BETTER = frozenset({"warp_error", "flicker"})
CLIP_METRICS = frozenset({"clip_frame", "clip_text", "clip_direction"})
PICKSCORE_METRICS = frozenset({"pick_score"})
VICLIP_METRICS = frozenset({"viclip_direction", "viclip_output"})
REFERENCE_METRICS = frozenset({"psnr", "ssim"})

VICLIP_UNAVAILABLE = (
    "unavailable: the public ViCLIP checkpoints (OpenGVLab/ViCLIP-L-14-hf) load only through trust_remote_code "
    "(model code shipped inside the checkpoint), which vedit does not run; no value is guessed"
)

CONVENTIONS = {
    "warp_error": "E_warp (Lai et al. 2018): DIS optical flow on the SOURCE, forward-backward occlusion check "
                  "(Ruder et al. 2016), edited frame i warped onto i+1, squared RGB distance in [0,1] units over "
                  "non-occluded pixels; mean over consecutive pairs; lower is better",
    "flicker": "mean absolute difference of consecutive edited frames, 8-bit units (0-255); mean over consecutive "
               "pairs; lower is better",
    "clip_frame": "CLIPFrame (TGVE clip_score_frame): cosine of CLIP ViT-L/14 image embeddings, mean over ALL "
                  "ordered frame pairs i != j; not x100; higher is better",
    "clip_text": "TGVE clip_score_text: CLIP ViT-L/14 logits_per_image = exp(logit_scale) (=100) x cosine(text, "
                 "frame), mean over frames; x100; text = caption of the edited video, else the prompt",
    "clip_direction": "CLIP directional similarity (InstructPix2Pix): cosine(E_img(edited_i) - E_img(source_i), "
                      "E_txt(caption) - E_txt(source caption)) on unit ViT-L/14 embeddings, mean over frames; not x100",
    "pick_score": "TGVE pick_score: PickScore_v1 exp(logit_scale) x cosine(text, frame), mean over frames; x100 "
                  "(model's scale); text = caption of the edited video, else the prompt",
    "psnr": "PSNR against the reference clip (--reference): 10 log10(255^2 / MSE) over each frame's RGB values, "
            "edited frames resized to the reference's size; mean over frames (per frame in --json); higher is better",
    "ssim": "SSIM against the reference clip (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, per RGB channel, "
            "mean over the frame; mean over frames (per frame in --json); higher is better",
    "viclip_direction": "EVE ViCLIP_dir: " + VICLIP_UNAVAILABLE,
    "viclip_output": "EVE ViCLIP_out: " + VICLIP_UNAVAILABLE,
}
FRAME_PREPARATION = "every frame is resized to 480x480 (bicubic) before the CLIP processor, as TGVE's run_eval.py does"
