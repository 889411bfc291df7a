"""diffusers' constructor fix-ups of outdated configs, on tiny-sd15: writes local-diffusers/legacy-configs/.

Usage (see README.md for the environment; run from the repository root):
    python3 tools/reference/legacy_configs.py tests/DiffusersSharp.Tests/Fixtures

StableDiffusionPipeline, StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline rewrite an outdated scheduler
or UNet config when they are constructed (the ControlNet and SDXL pipelines do not):
  - steps_offset != 1 (the class default 0 included) becomes 1 (all three);
  - clip_sample True (DDIM's and DDPM's default) becomes False (text-to-image and image-to-image, not inpainting);
  - skip_prk_steps False (PNDM's default) becomes True (inpainting only);
  - a UNet config written by diffusers < 0.9.0 with an int sample_size < 64 gets sample_size 64 (text-to-image,
    image-to-image; the inpainting pipeline checks it differently but the same way for these configs).
The config files of two outdated schedulers and of an outdated UNet are written into the fixture folder (JSON, the
way old hub repos have them); each case builds its pipeline from those files, as from_pretrained does (the scheduler
through from_pretrained, so keys missing from the file are listed in _use_default_values), and records the config
values after construction, every step's timestep and latents, the final latents and (except the default-size case)
the decoded image. Two cases then swap the scheduler as users do,
`pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")`: a fixed-up
key that the file did not have is dropped again by from_config (it is in _use_default_values), one the file had keeps
its fixed-up value. No text encoder runs: the prompt embeddings are seeded random tensors, stored in the fixture.
"""
import json
import os
import shutil
import sys
import tempfile

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import StableDiffusionImg2ImgPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import StableDiffusionInpaintPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd15/model"
OUT = f"{root}/local-diffusers/legacy-configs"
os.makedirs(OUT, exist_ok=True)

# Outdated configs as early hub repos had them: DDIM without steps_offset / clip_sample (class defaults 0 / True),
# PNDM with steps_offset 0 and without skip_prk_steps (default False), a UNet config of diffusers 0.8 with sample_size 8.
common = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
          "set_alpha_to_one": False, "trained_betas": None}
configs = {
    "ddim_scheduler_config.json": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", **common},
    "pndm_scheduler_config.json": {"_class_name": "PNDMScheduler", "_diffusers_version": "0.2.2", **common, "steps_offset": 0},
}
with open(f"{model}/unet/config.json") as f:
    unet_config = json.load(f)
unet_config["_diffusers_version"] = "0.8.0"
configs["unet_config.json"] = unet_config
for name, config in configs.items():
    with open(f"{OUT}/{name}", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

tmp = tempfile.mkdtemp()
def folder_with(name, config_file, target):
    path = f"{tmp}/{name}"
    os.makedirs(path)
    shutil.copy(f"{OUT}/{config_file}", f"{path}/{target}")
    return path

ddim_folder = folder_with("ddim", "ddim_scheduler_config.json", "scheduler_config.json")
pndm_folder = folder_with("pndm", "pndm_scheduler_config.json", "scheduler_config.json")
old_unet_folder = folder_with("unet", "unet_config.json", "config.json")
shutil.copy(f"{model}/unet/diffusion_pytorch_model.safetensors", old_unet_folder)

unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
controlnet = ControlNetModel.from_pretrained(f"{root}/local-diffusers/controlnet/sd15").eval()
init_image = Image.open(f"{model}/../init_image.png").convert("RGB")
mask = Image.open(f"{model}/../mask.png")
control = Image.open(f"{root}/local-diffusers/controlnet/control.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261127)
out = {"prompt_embeds": torch.randn((1, 77, 32), generator=g), "negative_prompt_embeds": torch.randn((1, 77, 32), generator=g)}
embeds = dict(prompt_embeds=out["prompt_embeds"], negative_prompt_embeds=out["negative_prompt_embeds"])

def build(cls, scheduler_folder, old_unet=False, **extra):
    scheduler_cls = DDIMScheduler if scheduler_folder == ddim_folder else PNDMScheduler
    return cls(vae=vae, text_encoder=None, tokenizer=None,
               unet=UNet2DConditionModel.from_pretrained(old_unet_folder).eval() if old_unet else unet,
               scheduler=scheduler_cls.from_pretrained(scheduler_folder), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False, **extra)

def record_config(name, pipe):
    c = pipe.scheduler.config
    out[f"{name}.config"] = torch.tensor([float(c.get("steps_offset", -1)), float(c.get("clip_sample", -1)),
                                          float(c.get("skip_prk_steps", -1)), float(pipe.unet.config.sample_size)])

def run(name, pipe, seed, decode=True, **kw):
    record_config(name, pipe)
    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        return cb_kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**embeds, **kw, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        if decode:
            out[f"{name}.image"] = torch.from_numpy(pipe(**embeds, **kw, output_type="np",
                                                         generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, "config", out[f"{name}.config"].tolist(), "timesteps",
          [out[k].item() for k in out if k.startswith(name + ".step") and k.endswith("timestep")])

small = dict(height=64, width=64)
# Text-to-image on the outdated UNet at its (fixed-up) default size: 64 x 8 = 512, latents only.
run("t2i_ddim", build(StableDiffusionPipeline, ddim_folder, old_unet=True), 101, decode=False, num_inference_steps=4)
run("t2i_pndm", build(StableDiffusionPipeline, pndm_folder), 102, num_inference_steps=5, **small)
run("img2img_pndm", build(StableDiffusionImg2ImgPipeline, pndm_folder), 103, image=init_image, num_inference_steps=10, strength=0.7)
run("inpaint_ddim", build(StableDiffusionInpaintPipeline, ddim_folder), 104, image=init_image, mask_image=mask,
    num_inference_steps=5, **small)
run("inpaint_pndm", build(StableDiffusionInpaintPipeline, pndm_folder), 105, image=init_image, mask_image=mask,
    num_inference_steps=5, strength=0.8, **small)
run("controlnet_ddim", build(StableDiffusionControlNetPipeline, ddim_folder, controlnet=controlnet), 106, image=control,
    num_inference_steps=5, **small)
for name, folder, seed in [("swap_euler_ddim", ddim_folder, 107), ("swap_euler_pndm", pndm_folder, 108)]:
    pipe = build(StableDiffusionPipeline, folder)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    run(name, pipe, seed, num_inference_steps=5, **small)

shutil.rmtree(tmp)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors")
