"""diffusers' Flux ControlNet modes on the tiny Flux model, given prompt embeddings: writes local-diffusers/flux-controlnet-modes/.

Usage (see README.md for the environment; run from the repository root):
    python3 tools/reference/flux_controlnet_modes.py tests/DiffusersSharp.Tests/Fixtures

Several Flux ControlNets at once (FluxMultiControlNetModel), FluxControlNetImg2ImgPipeline and
FluxControlNetInpaintPipeline. The first ControlNet is local-diffusers/flux-controlnet/controlnet (made by
flux_controlnet.py, only read here); the second is drawn here the same way with two double- and two single-stream blocks
(so the multi-ControlNet sum meets lists of different lengths, which diffusers zips to the shorter). It leaves
local-diffusers/flux-controlnet as it is.
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.models.controlnets.controlnet_flux import FluxControlNetModel
from diffusers.pipelines.flux.pipeline_flux_controlnet import FluxControlNetPipeline
from diffusers.pipelines.flux.pipeline_flux_controlnet_image_to_image import FluxControlNetImg2ImgPipeline
from diffusers.pipelines.flux.pipeline_flux_controlnet_inpainting import FluxControlNetInpaintPipeline

root = sys.argv[1]
flux = f"{root}/local-diffusers/flux"
dest = f"{root}/local-diffusers/flux-controlnet-modes"
os.makedirs(f"{dest}/controlnet2", exist_ok=True)
torch.set_grad_enabled(False)

transformer = FluxTransformer2DModel.from_pretrained(flux, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(flux, subfolder="scheduler")


def redraw(module, seed, std):
    """Draws every parameter of module from N(0, std) under a fixed seed (in named_parameters order)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in module.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)


cn1 = FluxControlNetModel.from_pretrained(f"{root}/local-diffusers/flux-controlnet/controlnet").eval()
cn2 = FluxControlNetModel.from_transformer(transformer, num_layers=2, num_single_layers=2, attention_head_dim=16,
                                           num_attention_heads=2).eval()
redraw(cn2.controlnet_blocks, 24, 0.2)
redraw(cn2.controlnet_single_blocks, 25, 0.2)
redraw(cn2.controlnet_x_embedder, 26, 0.2)
# save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
cn2.save_config(f"{dest}/controlnet2")
save_file({k: v.contiguous() for k, v in cn2.state_dict().items()}, f"{dest}/controlnet2/diffusion_pytorch_model.safetensors")
cn2 = FluxControlNetModel.from_pretrained(f"{dest}/controlnet2").eval()

image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
# The second control image: tiny-sd3's image mirrored left to right (saved, then read back as the tests read it).
image.transpose(Image.FLIP_LEFT_RIGHT).save(f"{dest}/control2.png")
control2 = Image.open(f"{dest}/control2.png").convert("RGB")

embeds = load_file(f"{flux}/expected.safetensors")
prompt = dict(prompt_embeds=embeds["in.prompt_embeds"], pooled_prompt_embeds=embeds["in.pooled"])
parts = dict(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
             text_encoder_2=None, tokenizer_2=None)
multi = FluxControlNetPipeline(controlnet=[cn1, cn2], **parts)
i2i = FluxControlNetImg2ImgPipeline(controlnet=cn1, **parts)
i2i_multi = FluxControlNetImg2ImgPipeline(controlnet=[cn1, cn2], **parts)
inpaint = FluxControlNetInpaintPipeline(controlnet=cn1, **parts)
inpaint_multi = FluxControlNetInpaintPipeline(controlnet=[cn2, cn1], **parts)

# FluxControlNetPipeline runs true CFG only for a negative_prompt (not for negative embeddings alone) and has no text
# encoder here: this stand-in text encoder gives the stored negative embeddings for the prompt "negative" (the
# pipeline's own encode_prompt for everything else), as a text encoder would give them.
encode_prompt = multi.encode_prompt


def encode_negative(prompt=None, prompt_embeds=None, pooled_prompt_embeds=None, num_images_per_prompt=1, **kw):
    if prompt == "negative":
        prompt, prompt_embeds, pooled_prompt_embeds = None, embeds["in.neg_prompt_embeds"], embeds["in.neg_pooled"]
    return encode_prompt(prompt=prompt, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                         num_images_per_prompt=num_images_per_prompt, **kw)


multi.encode_prompt = encode_negative

cases = {
    # Two ControlNets, 64 high x 80 wide (both 64 x 64 control images resized), per-ControlNet scales and windows
    # (the first on steps 0-2 of 4, the second on steps 1-3), true CFG 2.0 with the stored negative embeddings.
    "multi": (multi, dict(control_image=[image, control2], height=64, width=80, num_inference_steps=4, guidance_scale=3.5,
                          controlnet_conditioning_scale=[0.6, 0.9], control_guidance_start=[0.0, 0.25],
                          control_guidance_end=[0.75, 1.0], negative_prompt="negative", true_cfg_scale=2.0), 42),
    # Image-to-image, one ControlNet: strength 0.6 of 5 steps (3 run), scale 0.8, the ControlNet off on the last step.
    "i2i": (i2i, dict(image=image, control_image=control2, height=64, width=64, strength=0.6, num_inference_steps=5,
                      controlnet_conditioning_scale=0.8, control_guidance_end=0.67), 7),
    # Image-to-image, two ControlNets, 64 x 80 (the image resized), strength 0.8 of 4 steps (all 4 run: the start
    # step is int(4 - 3.2) = 0); diffusers' multi branch
    # needs control_mode as a list (None per ControlNet: plain ControlNets ignore it).
    "i2i_multi": (i2i_multi, dict(image=image, control_image=[image, control2], height=64, width=80, strength=0.8,
                                  num_inference_steps=4, controlnet_conditioning_scale=[0.5, 1.0],
                                  control_mode=[None, None]), 11),
    # Inpainting, one ControlNet: strength 0.8 of 5 steps (4 run), scale 0.7, guidance 5.
    "inpaint": (inpaint, dict(image=image, mask_image=mask, control_image=control2, height=64, width=64, strength=0.8,
                              num_inference_steps=5, guidance_scale=5.0, controlnet_conditioning_scale=0.7), 5),
    # Inpainting, the two ControlNets in the other order, defaults (strength 0.6, scale 1.0) over 5 steps (3 run).
    "inpaint_multi": (inpaint_multi, dict(image=image, mask_image=mask, control_image=[control2, image], height=64,
                                          width=64, num_inference_steps=5, controlnet_conditioning_scale=[1.0, 1.0],
                                          control_mode=[None, None]), 3),
}
out = {}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    out[f"{name}.latents"] = pipe(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                  generator=torch.Generator("cpu").manual_seed(seed)).images
    out[f"{name}.image"] = torch.from_numpy(pipe(**prompt, **args, output_type="np",
                                                 generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{dest}/expected.safetensors")
print(f"wrote {len(out)} tensors")
