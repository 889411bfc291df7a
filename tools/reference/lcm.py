"""diffusers' own LatentConsistencyModelPipeline / LatentConsistencyModelImg2ImgPipeline, and StableDiffusionPipeline's
timestep_cond path, on tiny-sd15 with a guidance-distilled UNet (time_cond_proj_dim 32): writes local-diffusers/lcm/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/lcm.py tests/DiffusersSharp.Tests/Fixtures

The UNet is tiny-sd15's config with time_cond_proj_dim 32: every weight tiny-sd15's, plus time_embedding.cond_proj
(Linear(32, 32, bias=False)), which PyTorch's default Linear initialisation draws under torch.manual_seed(32) (stored as
in.cond_proj.weight). VAE tiny-sd15's; the scheduler LCMScheduler.from_config of tiny-sd15's PNDM config (as a user swaps
it). No text encoder runs: prompt embeddings are seeded random tensors, stored here.
"""
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, LCMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_img2img import LatentConsistencyModelImg2ImgPipeline
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img import LatentConsistencyModelPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import StableDiffusionXLImg2ImgPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd15/model"
OUT = f"{root}/local-diffusers/lcm"
os.makedirs(OUT, exist_ok=True)

base_unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
config = dict(base_unet.config)
config["time_cond_proj_dim"] = 32
unet = UNet2DConditionModel.from_config(config)
weights = base_unet.state_dict()
torch.manual_seed(32)
unet.time_embedding.cond_proj.reset_parameters()
weights["time_embedding.cond_proj.weight"] = unet.time_embedding.cond_proj.weight.detach().clone()
unet.load_state_dict(weights)
unet.eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
scheduler_config = PNDMScheduler.from_pretrained(model, subfolder="scheduler").config
parts = dict(vae=vae, text_encoder=None, tokenizer=None, unet=unet, safety_checker=None, feature_extractor=None,
             requires_safety_checker=False)
t2i = LatentConsistencyModelPipeline(scheduler=LCMScheduler.from_config(scheduler_config), **parts)
i2i = LatentConsistencyModelImg2ImgPipeline(scheduler=LCMScheduler.from_config(scheduler_config), **parts)
sd = StableDiffusionPipeline(scheduler=LCMScheduler.from_config(scheduler_config), **parts)
image = Image.open(f"{root}/tiny-sd15/init_image.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261201)
out = {"in.cond_proj.weight": weights["time_embedding.cond_proj.weight"],
       "in.prompt_embeds": torch.randn((1, 77, 32), generator=g),
       "in.negative_prompt_embeds": torch.randn((1, 77, 32), generator=g)}

# One UNet forward with timestep_cond (and the same without it: diffusers then adds nothing).
out["unet.sample"] = torch.randn((2, 4, 8, 8), generator=g)
out["unet.encoder_hidden_states"] = torch.randn((2, 77, 32), generator=g)
out["unet.timestep_cond"] = torch.randn((2, 32), generator=g)
with torch.no_grad():
    out["unet.out"] = unet(out["unet.sample"], torch.tensor(499), out["unet.encoder_hidden_states"],
                           timestep_cond=out["unet.timestep_cond"]).sample
    out["unet.out_no_cond"] = unet(out["unet.sample"], torch.tensor(499), out["unet.encoder_hidden_states"]).sample
    # The pipelines' guidance embedding (get_guidance_scale_embedding(w = 8.5 - 1), width 32), on its own.
    out["embedding.w7_5"] = t2i.get_guidance_scale_embedding(torch.tensor(8.5 - 1).repeat(2), embedding_dim=32)


def run(name, pipe, seed, **kw):
    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        if "denoised" in cb_kw:
            out[f"{name}.step{i}.denoised"] = cb_kw["denoised"].clone()
        return cb_kw
    inputs = ["latents", "denoised"] if pipe in (t2i, i2i) else ["latents"]
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**kw, output_type="latent", callback_on_step_end=on_step_end,
                                      callback_on_step_end_tensor_inputs=inputs,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**kw, output_type="np", generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))


embeds = dict(prompt_embeds=out["in.prompt_embeds"])
# LCM text-to-image with its defaults (4 steps, guidance 8.5), 64 x 64.
run("t2i", t2i, 11, **embeds, height=64, width=64)
# Two images per prompt, 3 steps from a 20-entry distillation schedule, guidance 4, 48 x 56.
run("t2i_two", t2i, 12, **embeds, num_inference_steps=3, original_inference_steps=20, guidance_scale=4.0,
    num_images_per_prompt=2, height=48, width=56)
# LCM image-to-image with its defaults (4 steps, strength 0.8, guidance 8.5).
run("i2i", i2i, 13, **embeds, image=image)
# Strength 0.5 (a 25-entry schedule), 3 steps, guidance 2.
run("i2i_half", i2i, 14, **embeds, image=image, strength=0.5, num_inference_steps=3, guidance_scale=2.0)
# StableDiffusionPipeline on the same UNet: timestep_cond from guidance 7.5, no classifier-free guidance (the negative
# embeddings given are not used), the LCMScheduler's prev_sample as the latents.
run("sd", sd, 15, **embeds, negative_prompt_embeds=out["in.negative_prompt_embeds"], num_inference_steps=4, height=64, width=64)

# SDXL (latent-consistency/lcm-sdxl style): tiny-sdxl's UNet with time_cond_proj_dim 32, cond_proj drawn under
# torch.manual_seed(33) (in.xl.cond_proj.weight); the SDXL pipelines compute timestep_cond as the SD ones do.
xl_model = f"{root}/tiny-sdxl/model"
xl_base = UNet2DConditionModel.from_pretrained(xl_model, subfolder="unet").eval()
xl_config = dict(xl_base.config)
xl_config["time_cond_proj_dim"] = 32
xl_unet = UNet2DConditionModel.from_config(xl_config)
xl_weights = xl_base.state_dict()
torch.manual_seed(33)
xl_unet.time_embedding.cond_proj.reset_parameters()
xl_weights["time_embedding.cond_proj.weight"] = xl_unet.time_embedding.cond_proj.weight.detach().clone()
xl_unet.load_state_dict(xl_weights)
xl_unet.eval()
xl_vae = AutoencoderKL.from_pretrained(xl_model, subfolder="vae").eval()
xl_scheduler_config = PNDMScheduler.from_pretrained(xl_model, subfolder="scheduler").config
xl_parts = dict(vae=xl_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=xl_unet,
                force_zeros_for_empty_prompt=True, add_watermarker=False)
xl_t2i = StableDiffusionXLPipeline(scheduler=LCMScheduler.from_config(xl_scheduler_config), **xl_parts)
xl_i2i = StableDiffusionXLImg2ImgPipeline(scheduler=LCMScheduler.from_config(xl_scheduler_config), **xl_parts)
out["in.xl.cond_proj.weight"] = xl_weights["time_embedding.cond_proj.weight"]
out["in.xl.prompt_embeds"] = torch.randn((1, 77, 64), generator=g)
out["in.xl.pooled_prompt_embeds"] = torch.randn((1, 32), generator=g)
xl_embeds = dict(prompt_embeds=out["in.xl.prompt_embeds"], pooled_prompt_embeds=out["in.xl.pooled_prompt_embeds"])
# Two images per prompt (the guidance embedding repeated to 2), 4 steps, guidance 3, 64 x 64.
run("xl", xl_t2i, 16, **xl_embeds, num_inference_steps=4, guidance_scale=3.0, num_images_per_prompt=2, height=64, width=64)
# Image-to-image: strength 0.6 keeps int(5 x 0.6) = 3 of 5 steps; guidance 6.
run("xl_i2i", xl_i2i, 17, **xl_embeds, image=image, strength=0.6, num_inference_steps=5, guidance_scale=6.0)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors")
