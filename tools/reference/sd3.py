"""diffusers' own SD3 pipelines on tiny-sd3, given prompt embeddings: writes local-diffusers/sd3/expected.safetensors.

Usage (see README.md for the environment):
    python3 tools/reference/sd3.py tests/DiffusersSharp.Tests/Fixtures

The shared tiny-sd3 fixture's pipeline outputs cannot be compared end to end: its T5 ran with dropout, differently in
every call. Here every call gets the same prompt embeddings (the shared fixture's stored `t2i.*` / `t2i_nocfg.*`
embeddings, whatever T5 made them), so what is compared is everything after prompt encoding: the schedule, the draws,
CFG, skip-layer guidance, img2img / inpainting preparation, the denoising loop and the decode.
"""
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import StableDiffusion3Img2ImgPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_inpaint import StableDiffusion3InpaintPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd3/model"
transformer = SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")
parts = dict(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
             text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
t2i = StableDiffusion3Pipeline(**parts)
i2i = StableDiffusion3Img2ImgPipeline(**parts)
inpaint = StableDiffusion3InpaintPipeline(**parts)

shared = load_file(f"{root}/tiny-sd3/expected.safetensors")


def embeds(case):
    return dict(prompt_embeds=shared[f"{case}.prompt_embeds"], negative_prompt_embeds=shared[f"{case}.negative_prompt_embeds"],
                pooled_prompt_embeds=shared[f"{case}.pooled_prompt_embeds"],
                negative_pooled_prompt_embeds=shared[f"{case}.negative_pooled_prompt_embeds"])


image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
cases = {
    "t2i": (t2i, dict(**embeds("t2i"), num_inference_steps=4, guidance_scale=4.5, height=64, width=64), 123456),
    "t2i_nocfg": (t2i, dict(**embeds("t2i_nocfg"), num_inference_steps=3, guidance_scale=1.0, height=64, width=80), 7),
    # Skip-layer guidance on steps 1 and 2 of 4 (i > 4 * 0.01 and i < 4 * 0.6), skipping the second block.
    "t2i_slg": (t2i, dict(**embeds("t2i"), num_inference_steps=4, guidance_scale=4.5, height=64, width=64,
                          skip_guidance_layers=[1], skip_layer_guidance_scale=2.8, skip_layer_guidance_start=0.01,
                          skip_layer_guidance_stop=0.6), 99),
    # Default size: sample_size 32 x 8 = 256, so the 64 x 64 image is resized (Pillow LANCZOS).
    "i2i": (i2i, dict(**embeds("t2i"), image=image, strength=0.7, num_inference_steps=10, guidance_scale=7.0), 123456),
    "inpaint": (inpaint, dict(**embeds("t2i"), image=image, mask_image=mask, strength=0.99, num_inference_steps=5,
                              guidance_scale=7.0), 42),
}
out = {}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{root}/local-diffusers/sd3/expected.safetensors")
print(f"wrote {len(out)} tensors")
