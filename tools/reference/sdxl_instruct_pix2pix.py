"""diffusers' own StableDiffusionXLInstructPix2PixPipeline on tiny-sdxl with an 8-channel UNet: writes
local-diffusers/sdxl-instruct-pix2pix/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/sdxl_instruct_pix2pix.py tests/DiffusersSharp.Tests/Fixtures

The UNet is tiny-sdxl's with in_channels 8 (the noisy latents and the image's latents side by side, as
diffusers/sdxl-instructpix2pix-768): every weight tiny-sdxl's except conv_in, which PyTorch's default Conv2d
initialisation draws under torch.manual_seed(8) (stored as in.unet8.conv_in.weight). VAE and EulerDiscreteScheduler
tiny-sdxl's (EulerAncestralDiscreteScheduler from the same config for one case). No text encoder runs: prompt and pooled
embeddings are seeded random tensors, stored here (text_encoder_2=None, so diffusers takes the pooled width, 32, as
text_encoder_projection_dim).
"""
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_instruct_pix2pix import (
    StableDiffusionXLInstructPix2PixPipeline)

root = sys.argv[1]
model = f"{root}/tiny-sdxl/model"
OUT = f"{root}/local-diffusers/sdxl-instruct-pix2pix"
os.makedirs(OUT, exist_ok=True)

unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
config = dict(unet.config)
config["in_channels"] = 8
unet8 = UNet2DConditionModel.from_config(config)
weights = unet.state_dict()
torch.manual_seed(8)
unet8.conv_in.reset_parameters()
weights["conv_in.weight"] = unet8.conv_in.weight.detach().clone()
unet8.load_state_dict(weights)
unet8.eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()


def pipeline(scheduler_class=EulerDiscreteScheduler, **kw):
    return StableDiffusionXLInstructPix2PixPipeline(
        vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet8,
        scheduler=scheduler_class.from_pretrained(model, subfolder="scheduler"), force_zeros_for_empty_prompt=True,
        add_watermarker=False, **kw)


# A 60 x 52 input: SDXL's pipeline resizes it to height x width (default: the UNet's sample_size x 8 = 64 x 64).
image = Image.open(f"{root}/tiny-sdxl/init_image.png").convert("RGB")
image.crop((2, 6, 62, 58)).save(f"{OUT}/input.png")
image = Image.open(f"{OUT}/input.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261201)
out = {"in.unet8.conv_in.weight": weights["conv_in.weight"]}
out["in.prompt_embeds"] = torch.randn((1, 77, 64), generator=g)
out["in.pooled_prompt_embeds"] = torch.randn((1, 32), generator=g)
out["in.negative_prompt_embeds"] = torch.randn((1, 77, 64), generator=g)
out["in.negative_pooled_prompt_embeds"] = torch.randn((1, 32), generator=g)


def run(name, pipe, seed, **kw):
    # This pipeline has only the legacy per-step callback (step index, timestep, latents).
    def callback(i, t, latents):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = latents.clone()
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(image=image, **kw, output_type="latent", callback=callback, callback_steps=1,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(image=image, **kw, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))


embeds = dict(prompt_embeds=out["in.prompt_embeds"], pooled_prompt_embeds=out["in.pooled_prompt_embeds"])
negative = dict(negative_prompt_embeds=out["in.negative_prompt_embeds"],
                negative_pooled_prompt_embeds=out["in.negative_pooled_prompt_embeds"])
euler = pipeline()
# The defaults (guidance 5.0, image guidance 1.5, 64 x 64) over 6 steps; negative embeddings given.
run("default", euler, 41, **embeds, **negative, num_inference_steps=6)
# Image guidance below 1: no classifier-free guidance at all (one UNet pass, no negative).
run("no_cfg", euler, 42, **embeds, num_inference_steps=5, image_guidance_scale=0.8)
# Two images per prompt, no negative given (force_zeros_for_empty_prompt: zero negative embeddings), other scales.
run("two", euler, 43, **embeds, num_inference_steps=4, guidance_scale=4.0, image_guidance_scale=2.0,
    num_images_per_prompt=2)
# A given output size (the input resized to 56 x 48) with micro-conditioning, guidance rescale and denoising_end.
run("sized", euler, 44, **embeds, **negative, num_inference_steps=6, height=48, width=56, original_size=(96, 112),
    crops_coords_top_left=(4, 8), target_size=(40, 72), guidance_rescale=0.7, denoising_end=0.6)
# CosXL Edit: the image latents scaled by the VAE's scaling factor.
run("cosxl", pipeline(is_cosxl_edit=True), 45, **embeds, **negative, num_inference_steps=4)
# Euler ancestral (noise drawn at every step).
run("euler_a", pipeline(EulerAncestralDiscreteScheduler), 46, **embeds, **negative, num_inference_steps=5,
    guidance_scale=6.0, image_guidance_scale=1.2)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors")
