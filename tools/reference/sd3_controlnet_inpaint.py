"""diffusers' SD3 ControlNet inpainting on tiny-sd3, given prompt embeddings: writes local-diffusers/sd3-controlnet-inpaint/.

Usage (see README.md for the environment; run from the repository root):
    python3 tools/reference/sd3_controlnet_inpaint.py tests/DiffusersSharp.Tests/Fixtures

A tiny inpainting ControlNet (the Alimama kind) is made and saved (diffusers layout) beside the expected values:
SD3ControlNetModel.from_transformer(tiny-sd3's transformer, num_layers=1, num_extra_conditioning_channels=1), so that
pos_embed_input takes the masked image's 16 latent channels plus the mask. Its zero-initialised parts (controlnet_blocks,
pos_embed_input) are re-drawn under a fixed seed so they matter.
diffusers' pipeline samples the masked image's VAE posterior from torch's global generator, so every call is preceded by
torch.manual_seed(CONTROL_SEED).
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.models.controlnets.controlnet_sd3 import SD3ControlNetModel
from diffusers.pipelines.controlnet_sd3.pipeline_stable_diffusion_3_controlnet_inpainting import (
    StableDiffusion3ControlNetInpaintingPipeline,
)

root = sys.argv[1]
model = f"{root}/tiny-sd3/model"
dest = f"{root}/local-diffusers/sd3-controlnet-inpaint"
os.makedirs(dest, exist_ok=True)
torch.set_grad_enabled(False)

transformer = SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")


def save(net, folder):
    # save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
    net.save_config(folder)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")


def redraw(module, seed, std):
    """Draws every parameter of module from N(0, std) under a fixed seed (in named_parameters order)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in module.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)


cn = SD3ControlNetModel.from_transformer(transformer, num_layers=1, num_extra_conditioning_channels=1).eval()
redraw(cn.controlnet_blocks, 21, 0.2)
redraw(cn.pos_embed_input, 22, 0.2)
save(cn, f"{dest}/controlnet")
# Reload, so that what is recorded comes from the saved files.
cn = SD3ControlNetModel.from_pretrained(f"{dest}/controlnet").eval()

shared = load_file(f"{root}/tiny-sd3/expected.safetensors")
pipe = StableDiffusion3ControlNetInpaintingPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None,
                                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                                    text_encoder_3=None, tokenizer_3=None, controlnet=cn)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")

out = {}
# (arguments, generator seed, global seed for the masked image's VAE sample)
cases = {
    "inpaint": (dict(prompt_embeds=shared["t2i.prompt_embeds"], negative_prompt_embeds=shared["t2i.negative_prompt_embeds"],
                     pooled_prompt_embeds=shared["t2i.pooled_prompt_embeds"],
                     negative_pooled_prompt_embeds=shared["t2i.negative_pooled_prompt_embeds"],
                     control_image=image, control_mask=mask, num_inference_steps=4, guidance_scale=4.5, height=64,
                     width=64, controlnet_conditioning_scale=0.8), 321, 6),
}
for name, (args, seed, control_seed) in cases.items():
    def on_step_end(pp, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    torch.manual_seed(control_seed)
    out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                  generator=torch.Generator("cpu").manual_seed(seed)).images
    torch.manual_seed(control_seed)
    out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                 generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{dest}/expected.safetensors")
print(f"wrote {len(out)} tensors")
