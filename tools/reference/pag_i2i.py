"""diffusers' own Perturbed-Attention Guidance for image-to-image and inpainting on the UNet models
(StableDiffusionPAGImg2ImgPipeline, StableDiffusionPAGInpaintPipeline, StableDiffusionXLPAGImg2ImgPipeline,
StableDiffusionXLPAGInpaintPipeline) on tiny-sd15 and tiny-sdxl: writes local-diffusers/pag-i2i/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/pag_i2i.py tests/DiffusersSharp.Tests/Fixtures

No text encoder runs: prompt embeddings are seeded random tensors, stored here. The start image and the mask are drawn
with PIL here (init.png, mask.png; 80 wide x 64 high). A 9-channel inpainting UNet is tiny-sd15's with in_channels 9,
every weight copied but conv_in.weight, re-drawn by reset_parameters() under torch.manual_seed(4) and stored as an input
(as controlnet_modes.py makes its own). layers.json lists, for each case, the self-attention layers diffusers'
_set_pag_attn_processor resolves its selection to (pipe.pag_attn_processors).
"""
import json
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image, ImageDraw, ImageOps
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.pag.pipeline_pag_sd_img2img import StableDiffusionPAGImg2ImgPipeline
from diffusers.pipelines.pag.pipeline_pag_sd_inpaint import StableDiffusionPAGInpaintPipeline
from diffusers.pipelines.pag.pipeline_pag_sd_xl_img2img import StableDiffusionXLPAGImg2ImgPipeline
from diffusers.pipelines.pag.pipeline_pag_sd_xl_inpaint import StableDiffusionXLPAGInpaintPipeline

root = sys.argv[1]
OUT = f"{root}/local-diffusers/pag-i2i"
os.makedirs(OUT, exist_ok=True)

# Images, 80 wide x 64 high (saved, then read back as the tests read them).
init = Image.new("RGB", (80, 64), (40, 90, 160))
d = ImageDraw.Draw(init)
for y in range(64):
    d.line((0, y, 79, y), fill=(200 - 2 * y, 60 + 2 * y, 90))
d.rectangle((44, 6, 74, 30), fill=(230, 210, 50))
d.ellipse((6, 18, 40, 58), fill=(20, 140, 200))
init.save(f"{OUT}/init.png")
mask = Image.new("L", (80, 64), 0)
ImageDraw.Draw(mask).rectangle((10, 16, 50, 56), fill=255)
mask.save(f"{OUT}/mask.png")
init = Image.open(f"{OUT}/init.png").convert("RGB")
mask = Image.open(f"{OUT}/mask.png")

g = torch.Generator("cpu").manual_seed(20261129)
out = {}
layers = {}


def run(name, pipe, seed, applied, **kw):
    pipe.set_pag_applied_layers(applied)
    # StableDiffusionXLPAGInpaintPipeline returns early for output_type "latent", before it puts the UNet's own attention
    # processors back: the PAG processors would stay for the next calls. Each case starts from (and ends on) the plain ones.
    plain = pipe.unet.attn_processors

    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        if i == 0:
            layers[name] = sorted(k[: -len(".processor")] for k in p.pag_attn_processors)
        return cb_kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**kw, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        pipe.unet.set_attn_processor(dict(plain))
        out[f"{name}.image"] = torch.from_numpy(pipe(**kw, output_type="np", generator=torch.Generator("cpu").manual_seed(seed)).images)
        pipe.unet.set_attn_processor(dict(plain))
    print(name, tuple(out[f"{name}.latents"].shape), len([k for k in out if k.startswith(name + ".step") and k.endswith("latents")]), "steps")


sd_model = f"{root}/tiny-sd15/model"
vae = AutoencoderKL.from_pretrained(sd_model, subfolder="vae").eval()
unet = UNet2DConditionModel.from_pretrained(sd_model, subfolder="unet").eval()


def sd_parts(u):
    return dict(vae=vae, text_encoder=None, tokenizer=None, unet=u, scheduler=PNDMScheduler.from_pretrained(sd_model, subfolder="scheduler"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


out["in.sd15.prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
out["in.sd15.negative_prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
sd_in = dict(prompt_embeds=out["in.sd15.prompt_embeds"], negative_prompt_embeds=out["in.sd15.negative_prompt_embeds"])

sd_i2i = StableDiffusionPAGImg2ImgPipeline(**sd_parts(unet))
# PNDM (skip_prk_steps) repeats its second timestep: strength 0.9 of 4 steps runs 501, 501, 251, 1; of 3 steps 334, 334, 1.
# The output takes the image's size (80 x 64).
run("sd15_i2i_cfg", sd_i2i, 61, ["mid", "down_blocks.1"], **sd_in, image=init, strength=0.9, num_inference_steps=4, guidance_scale=6.0,
    pag_scale=3.0)
# pag_adaptive_scale 0.0035: the scale 3 - 0.0035 x (1000 - t) is 0.669 at t 334 and clamped to 0 at t 1.
run("sd15_i2i_nocfg_adaptive", sd_i2i, 62, ["mid", "up_blocks.1"], **sd_in, image=init, strength=0.9, num_inference_steps=3,
    guidance_scale=1.0, pag_scale=3.0, pag_adaptive_scale=0.0035, num_images_per_prompt=2)

sd_inpaint = StableDiffusionPAGInpaintPipeline(**sd_parts(unet))
# The default strength (0.9999: the image is noised to the first timestep, not replaced by noise) of 3 steps.
run("sd15_inpaint_cfg", sd_inpaint, 63, ["down_blocks.1", "mid"], **sd_in, image=init, mask_image=mask, height=64, width=80,
    num_inference_steps=3, guidance_scale=6.0, pag_scale=3.0)
# PAG off (pag_scale 0) without CFG, two images with different masks (the second mirrored): diffusers' PAG inpainting
# blends with `init_mask, *_ = mask`, the first image's mask, for both.
run("sd15_inpaint_pagoff_two_masks", sd_inpaint, 66, ["mid"], **sd_in, image=[init, init], mask_image=[mask, ImageOps.mirror(mask)],
    height=64, width=80, num_inference_steps=3, guidance_scale=1.0, pag_scale=0.0, num_images_per_prompt=2)

cfg = dict(unet.config)
cfg["in_channels"] = 9
unet9 = UNet2DConditionModel.from_config(cfg)
weights = unet.state_dict()
torch.manual_seed(4)
unet9.conv_in.reset_parameters()
weights["conv_in.weight"] = unet9.conv_in.weight.detach().clone()
unet9.load_state_dict(weights)
unet9.eval()
out["in.unet9.conv_in.weight"] = weights["conv_in.weight"]
sd_inpaint9 = StableDiffusionPAGInpaintPipeline(**sd_parts(unet9))
run("sd15_inpaint9_cfg", sd_inpaint9, 64, ["mid"], **sd_in, image=init, mask_image=mask, height=64, width=80, strength=0.8,
    num_inference_steps=4, guidance_scale=5.0, pag_scale=2.0)
run("sd15_inpaint9_nocfg", sd_inpaint9, 65, ["up_blocks.2"], **sd_in, image=init, mask_image=mask, height=64, width=80,
    num_inference_steps=3, guidance_scale=1.0, pag_scale=3.0)

xl_model = f"{root}/tiny-sdxl/model"
xl_vae = AutoencoderKL.from_pretrained(xl_model, subfolder="vae").eval()
xl_unet = UNet2DConditionModel.from_pretrained(xl_model, subfolder="unet").eval()


def xl_parts():
    return dict(vae=xl_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=xl_unet,
                scheduler=EulerDiscreteScheduler.from_pretrained(xl_model, subfolder="scheduler"), add_watermarker=False)


pooled = 80 - 6 * xl_unet.config.addition_time_embed_dim
for k, shape in (("prompt_embeds", (1, 77, 64)), ("negative_prompt_embeds", (1, 77, 64)),
                 ("pooled_prompt_embeds", (1, pooled)), ("negative_pooled_prompt_embeds", (1, pooled))):
    out[f"in.sdxl.{k}"] = torch.randn(shape, generator=g)
xl_in = {k: out[f"in.sdxl.{k}"] for k in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")}

xl_i2i = StableDiffusionXLPAGImg2ImgPipeline(**xl_parts())
# strength 0.6 of 5 steps runs 3 (SDXL's default 0.3 would run 1).
run("sdxl_i2i_cfg", xl_i2i, 71, ["mid"], **xl_in, image=init, strength=0.6, num_inference_steps=5, guidance_scale=5.0, pag_scale=3.0)
run("sdxl_i2i_nocfg", xl_i2i, 72, ["down_blocks.2.attentions.1", "up_blocks.0"], **xl_in, image=init, strength=0.8,
    num_inference_steps=4, guidance_scale=1.0, pag_scale=2.0)

xl_inpaint = StableDiffusionXLPAGInpaintPipeline(**xl_parts())
# The default strength 0.9999 of 3 steps; two images per prompt; the scale clamped to 0 at the last timestep.
run("sdxl_inpaint_adaptive", xl_inpaint, 73, ["mid", "down_blocks.1"], **xl_in, image=init, mask_image=mask, height=64, width=80,
    num_inference_steps=3, guidance_scale=5.0, pag_scale=4.0, pag_adaptive_scale=0.005, num_images_per_prompt=2)
run("sdxl_inpaint_nocfg", xl_inpaint, 74, ["up_blocks.0"], **xl_in, image=init, mask_image=mask, height=64, width=80, strength=0.75,
    num_inference_steps=4, guidance_scale=1.0, pag_scale=3.0)

save_file({k: v.contiguous() for k, v in out.items()}, f"{OUT}/expected.safetensors")
with open(f"{OUT}/layers.json", "w") as f:
    json.dump(layers, f, indent=1, sort_keys=True)
    f.write("\n")
print(len(out), "tensors")
