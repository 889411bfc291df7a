"""diffusers' own Flux2KleinInpaintPipeline on local-diffusers/flux2-klein's tiny model: writes
local-diffusers/flux2-klein/inpaint.safetensors.

Usage (diffusers v0.39.0 source; see README.md for the environment), after flux2_klein.py:
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/flux2_klein_inpaint.py tests/DiffusersSharp.Tests/Fixtures

The pipeline is built from the folder's transformer, VAE and scheduler (no text encoder), as a base model (CFG) or a
distilled one; the prompt embeddings are flux2_klein.py's (expected.safetensors' in.*). Per case: every step's packed
latents (callback_on_step_end), the final latents (output_type "latent": de-normalised, unpatchified) and the decoded
images (output_type "np"); with padding_mask_crop the pasted 8-bit images (output_type "pil").
"""
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from diffusers.pipelines.flux2.pipeline_flux2_klein_inpaint import Flux2KleinInpaintPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-klein"
transformer = Flux2Transformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKLFlux2.from_pretrained(f"{here}/vae").eval()


def pipeline(is_distilled):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
    return Flux2KleinInpaintPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer,
                                     is_distilled=is_distilled)


base, distilled = pipeline(False), pipeline(True)
given = load_file(f"{here}/expected.safetensors")
embeds, negatives = given["in.prompt_embeds"], given["in.negative_prompt_embeds"]
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")  # 64 x 64
mask = Image.open(f"{root}/tiny-sd3/mask.png")  # 64 x 64, L; white = repaint
wide = Image.fromarray(given["in.wide"].numpy().astype(np.uint8))  # 96 x 72
odd = Image.fromarray(given["in.odd"].numpy().astype(np.uint8))  # 90 x 70

out = {}
cases = {
    # The base model with CFG: strength 0.8 of 3 steps; the image's latents also condition every step (t = 10).
    "inpaint": (base, dict(image=image, mask_image=mask, prompt_embeds=embeds[:1], negative_prompt_embeds=negatives[:1],
                           strength=0.8, num_inference_steps=3, guidance_scale=4.0), 21),
    # 90 x 70 resized (LANCZOS) to 88 x 64, the 64 x 64 mask resized to it; strength 1, two prompts x two images.
    "inpaint_odd": (distilled, dict(image=odd, mask_image=mask, prompt_embeds=embeds, strength=1.0, num_inference_steps=2,
                                    num_images_per_prompt=2), 22),
    # A second reference image (centre-cropped as Flux2KleinPipeline's, t = 20).
    "inpaint_ref": (base, dict(image=image, mask_image=mask, image_reference=wide, prompt_embeds=embeds[1:],
                               negative_prompt_embeds=negatives[1:], strength=0.7, num_inference_steps=3, guidance_scale=3.0), 23),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)


# padding_mask_crop: the region around the mask inpainted at the image's size, pasted back (output type "pil" only).
def on_crop_step(p, i, t, kw):
    out[f"inpaint_crop.step{i}.latents"] = kw["latents"].clone()
    return kw


with torch.no_grad():
    pasted = distilled(image=image, mask_image=mask, prompt_embeds=embeds[:1], strength=0.9, num_inference_steps=2,
                       padding_mask_crop=4, output_type="pil", callback_on_step_end=on_crop_step,
                       generator=torch.Generator("cpu").manual_seed(24)).images
out["inpaint_crop.pil"] = torch.from_numpy(np.stack([np.array(p) for p in pasted]))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/inpaint.safetensors")
print(f"wrote {len(out)} tensors to {here}/inpaint.safetensors")
