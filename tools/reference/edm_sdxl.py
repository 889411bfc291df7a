"""diffusers' own SDXL pipelines with the EDM schedulers, as Playground v2.5 and CosXL run them, on tiny-sdxl: writes
local-diffusers/edm-sdxl/expected.safetensors.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/edm_sdxl.py tests/DiffusersSharp.Tests/Fixtures

Playground-v2.5-like: tiny-sdxl's UNet, its VAE with Playground v2.5's VAE config values latents_mean
[-1.6574, 1.886, -1.383, 2.5155], latents_std [8.4927, 5.9022, 6.5498, 5.2299] and scaling_factor 0.5 (from_pretrained
keyword overrides), and EDMDPMSolverMultistepScheduler with Playground v2.5's scheduler config (the class defaults),
through StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline and StableDiffusionXLInpaintPipeline.
CosXL-like: tiny-sdxl's UNet and unchanged VAE with EDMEulerScheduler(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0,
prediction_type="v_prediction", sigma_schedule="exponential") through StableDiffusionXLPipeline, and through
StableDiffusionXLInstructPix2PixPipeline(is_cosxl_edit=True) with the 8-channel UNet of local-diffusers/sdxl-instruct-pix2pix
(its stored conv_in weight). No text encoder runs: prompt and pooled embeddings are seeded random tensors, stored here.
"""
import sys

import modern_float32  # PyTorch 2.x linspace, correctly rounded exp / log in set_timesteps (see edm_schedulers.py)
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, EDMDPMSolverMultistepScheduler, EDMEulerScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import StableDiffusionXLImg2ImgPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint import StableDiffusionXLInpaintPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_instruct_pix2pix import (
    StableDiffusionXLInstructPix2PixPipeline)

root = sys.argv[1]
model = f"{root}/tiny-sdxl/model"
OUT = f"{root}/local-diffusers/edm-sdxl"

# set_timesteps with correctly rounded float32 exp / log, as edm_schedulers.py (and DiffusersSharp) compute them.
_log = torch.log


def _set_timesteps(original):
    def wrapped(self, *args, **kwargs):
        torch.log = lambda t: _log(t.double()).float() if t.dtype == torch.float32 else _log(t)
        try:
            with modern_float32.correctly_rounded_exp_log():
                return original(self, *args, **kwargs)
        finally:
            torch.log = _log
    return wrapped


for cls in (EDMDPMSolverMultistepScheduler, EDMEulerScheduler):
    cls.set_timesteps = _set_timesteps(cls.set_timesteps)

PLAYGROUND_VAE = dict(latents_mean=[-1.6574, 1.886, -1.383, 2.5155], latents_std=[8.4927, 5.9022, 6.5498, 5.2299],
                      scaling_factor=0.5)
PLAYGROUND_SCHEDULER = {"algorithm_type": "dpmsolver++", "dynamic_thresholding_ratio": 0.995, "euler_at_final": False,
                        "final_sigmas_type": "zero", "lower_order_final": True, "num_train_timesteps": 1000,
                        "prediction_type": "epsilon", "rho": 7.0, "sample_max_value": 1.0, "sigma_data": 0.5,
                        "sigma_max": 80.0, "sigma_min": 0.002, "sigma_schedule": "karras", "solver_order": 2,
                        "solver_type": "midpoint", "thresholding": False}
COSXL_SCHEDULER = dict(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0, prediction_type="v_prediction",
                       sigma_schedule="exponential")

unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
vae_playground = AutoencoderKL.from_pretrained(model, subfolder="vae", **PLAYGROUND_VAE).eval()
vae_plain = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
config = dict(unet.config)
config["in_channels"] = 8
unet8 = UNet2DConditionModel.from_config(config)
weights = unet.state_dict()
weights["conv_in.weight"] = load_file(f"{root}/local-diffusers/sdxl-instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"]
unet8.load_state_dict(weights)
unet8.eval()

g = torch.Generator("cpu").manual_seed(20261202)
out = {}
out["in.prompt_embeds"] = torch.randn((1, 77, 64), generator=g)
out["in.pooled_prompt_embeds"] = torch.randn((1, 32), generator=g)
out["in.negative_prompt_embeds"] = torch.randn((1, 77, 64), generator=g)
out["in.negative_pooled_prompt_embeds"] = torch.randn((1, 32), generator=g)
embeds = dict(prompt_embeds=out["in.prompt_embeds"], pooled_prompt_embeds=out["in.pooled_prompt_embeds"],
              negative_prompt_embeds=out["in.negative_prompt_embeds"],
              negative_pooled_prompt_embeds=out["in.negative_pooled_prompt_embeds"])
image = Image.open(f"{root}/tiny-sdxl/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sdxl/mask.png")
edit_input = Image.open(f"{root}/local-diffusers/sdxl-instruct-pix2pix/input.png").convert("RGB")

common = dict(text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, force_zeros_for_empty_prompt=True,
              add_watermarker=False)


def playground(cls, **overrides):
    return cls(vae=vae_playground, unet=unet, scheduler=EDMDPMSolverMultistepScheduler.from_config(PLAYGROUND_SCHEDULER, **overrides),
               **common)


def run(name, pipe, seed, legacy_callback=False, **kw):
    def on_step_end(p, i, t, k):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = k["latents"].clone()
        return k

    def callback(i, t, latents):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = latents.clone()
    hook = dict(callback=callback, callback_steps=1) if legacy_callback else dict(callback_on_step_end=on_step_end)
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**kw, output_type="latent", generator=torch.Generator("cpu").manual_seed(seed),
                                      **hook).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**kw, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))


# Playground v2.5 text-to-image (guidance 3, its recommended value), 6 steps, 64 x 64.
run("t2i", playground(StableDiffusionXLPipeline), 51, **embeds, num_inference_steps=6, guidance_scale=3.0)
# The SDE variant: noise drawn from the generator at every step.
run("t2i_sde", playground(StableDiffusionXLPipeline, algorithm_type="sde-dpmsolver++"), 52, **embeds,
    num_inference_steps=5, guidance_scale=3.0)
# Image-to-image: the image latents normalized with latents_mean / latents_std, noised to the first kept sigma.
run("img2img", playground(StableDiffusionXLImg2ImgPipeline), 53, **embeds, image=image, strength=0.6,
    num_inference_steps=8, guidance_scale=3.0)
# Inpainting (4-channel UNet): the image latents scaled by scaling_factor only (diffusers' _encode_vae_image), the blend
# noised with add_noise at each next sigma, the decode with latents_mean / latents_std.
run("inpaint", playground(StableDiffusionXLInpaintPipeline), 54, **embeds, image=image, mask_image=mask, strength=0.75,
    num_inference_steps=6, guidance_scale=3.0)
# CosXL: EDM Euler with v_prediction, sigma_data 1, the exponential schedule; the plain SDXL VAE.
cosxl = StableDiffusionXLPipeline(vae=vae_plain, unet=unet, scheduler=EDMEulerScheduler(**COSXL_SCHEDULER), **common)
run("cosxl", cosxl, 55, **embeds, num_inference_steps=5)
# CosXL Edit: InstructPix2Pix with is_cosxl_edit (image latents x scaling_factor) and the same EDM Euler scheduler.
edit = StableDiffusionXLInstructPix2PixPipeline(vae=vae_plain, unet=unet8, scheduler=EDMEulerScheduler(**COSXL_SCHEDULER),
                                                is_cosxl_edit=True, **common)
run("cosxl_edit", edit, 56, legacy_callback=True, **embeds, image=edit_input, num_inference_steps=4)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors")
