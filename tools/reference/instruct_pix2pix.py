"""diffusers' own StableDiffusionInstructPix2PixPipeline on tiny-sd15 with an 8-channel UNet: writes
local-diffusers/instruct-pix2pix/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/instruct_pix2pix.py tests/DiffusersSharp.Tests/Fixtures

The UNet is tiny-sd15's with in_channels 8 (the noisy latents and the image's latents side by side, as
timbrooks/instruct-pix2pix): every weight tiny-sd15's except conv_in, which PyTorch's default Conv2d initialisation draws
under torch.manual_seed(8) (stored as in.unet8.conv_in.weight). VAE tiny-sd15's; the scheduler is
EulerAncestralDiscreteScheduler from tiny-sd15's config (timbrooks/instruct-pix2pix's kind: it draws noise every step).
No text encoder runs: prompt embeddings are seeded random tensors, stored here.
"""
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_instruct_pix2pix import StableDiffusionInstructPix2PixPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd15/model"
OUT = f"{root}/local-diffusers/instruct-pix2pix"
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
scheduler = EulerAncestralDiscreteScheduler.from_pretrained(model, subfolder="scheduler")
pipe = StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet8, scheduler=scheduler,
                                              safety_checker=None, feature_extractor=None, requires_safety_checker=False)

# A 60 x 52 input: the output takes its size rounded down to multiples of 8 (56 x 48).
image = Image.open(f"{root}/tiny-sd15/init_image.png").convert("RGB")
image.crop((2, 6, 62, 58)).save(f"{OUT}/input.png")
image = Image.open(f"{OUT}/input.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261130)
out = {"in.unet8.conv_in.weight": weights["conv_in.weight"], "in.prompt_embeds": torch.randn((1, 77, 32), generator=g),
       "in.negative_prompt_embeds": torch.randn((1, 77, 32), generator=g)}


def run(name, seed, **kw):
    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        return cb_kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(image=image, **kw, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(image=image, **kw, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))


embeds = dict(prompt_embeds=out["in.prompt_embeds"])
negative = dict(negative_prompt_embeds=out["in.negative_prompt_embeds"])
# The defaults (guidance 7.5, image guidance 1.5) over 6 steps; negative embeddings given.
run("default", 41, **embeds, **negative, num_inference_steps=6)
# Image guidance below 1: no classifier-free guidance at all (one UNet pass, no negative).
run("no_cfg", 42, **embeds, num_inference_steps=5, image_guidance_scale=0.8)
# Two images per prompt (the image latents repeated to the batch), other scales, negative embeddings given.
run("two", 43, **embeds, **negative, num_inference_steps=4, guidance_scale=5.0, image_guidance_scale=2.0,
    num_images_per_prompt=2)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors")
