"""diffusers' own FluxKontextInpaintPipeline on the tiny Kontext transformer of local-diffusers/flux-kontext.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/flux_kontext_inpaint.py tests/DiffusersSharp.Tests/Fixtures

Writes local-diffusers/flux-kontext-inpaint/{crop_image.png, crop_mask.png, expected.safetensors}. The transformer is
local-diffusers/flux-kontext/transformer (loaded, not drawn again), the scheduler config local-diffusers/flux's, the VAE
and images tiny-sd3's (and local-diffusers/mask-crop's for the padding_mask_crop case). Prompt embeddings are drawn
as flux_fill_kontext.py draws them (transformers does not run here), so CLIP / T5 are not checked.
"""
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_kontext_inpaint import FluxKontextInpaintPipeline

root = sys.argv[1]
folder = f"{root}/local-diffusers/flux-kontext-inpaint"
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
transformer = FluxTransformer2DModel.from_pretrained(f"{root}/local-diffusers/flux-kontext/transformer").eval()
pipe = FluxKontextInpaintPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
reference = Image.open(f"{root}/local-diffusers/flux-kontext/kontext_input.png").convert("RGB")

# The padding_mask_crop inputs: mask-crop's 96 x 72 image and box mask cut to 96 x 64 (a multiple of 16, so the Kontext
# resize without auto-resize keeps them and the crop region, taken from the mask, fits the resized image).
Image.open(f"{root}/local-diffusers/mask-crop/init.png").convert("RGB").crop((0, 0, 96, 64)).save(f"{folder}/crop_image.png")
Image.open(f"{root}/local-diffusers/mask-crop/mask_box.png").crop((0, 0, 96, 64)).save(f"{folder}/crop_mask.png")
crop_image = Image.open(f"{folder}/crop_image.png").convert("RGB")
crop_mask = Image.open(f"{folder}/crop_mask.png")

# Prompt embeddings: 16 text tokens, drawn as flux_fill_kontext.py draws them.
g = torch.Generator("cpu").manual_seed(20261128)
embeds, pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
out = {"in.prompt_embeds": embeds, "in.pooled": pooled}
prompt = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)


def steps_cb(name):
    def cb(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    return cb


def run(name, seed, args):
    with torch.no_grad():
        # output_type "latent": the packed latents [1, tokens, 64]; "np": the decoded image, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=steps_cb(name),
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)


# The image without auto-resize (64 x 64 kept), strength 0.75 of 4 steps, the image's tokens as context.
run("inpaint", 42, dict(**prompt, image=image, mask_image=mask, strength=0.75, num_inference_steps=4, _auto_resize=False))
# image_reference (64 x 40, floored to 64 x 32 and Lanczos-resized) as the context tokens instead; strength 1.
run("reference", 7, dict(**prompt, image=image, mask_image=mask, image_reference=reference, num_inference_steps=3,
                         guidance_scale=2.5, _auto_resize=False))
# padding_mask_crop (output_type "pil" only): every step's latents and the PIL image as uint8 HWC.
with torch.no_grad():
    img = pipe(**prompt, image=crop_image, mask_image=crop_mask, padding_mask_crop=4, strength=0.9, num_inference_steps=3,
               _auto_resize=False, output_type="pil", callback_on_step_end=steps_cb("crop"),
               generator=torch.Generator("cpu").manual_seed(5)).images[0]
out["crop.image"] = torch.from_numpy(np.array(img).astype(np.uint8))
print("crop", img.size)

save_file({k: (v.contiguous() if v.dtype == torch.uint8 else v.contiguous().float()) for k, v in out.items()},
          f"{folder}/expected.safetensors")
print(f"wrote {len(out)} tensors to {folder}/expected.safetensors")
