"""diffusers' StableDiffusionPipeline on tiny-sd15 with the newer schedulers, given prompt embeddings: writes
local-diffusers/sd-schedulers/expected.safetensors.

Usage (see README.md for the environment):
    python3 tools/reference/sd_schedulers.py tests/DiffusersSharp.Tests/Fixtures

No text encoder runs: the prompt embeddings are seeded random tensors ([1, 77, 32], stored in the fixture), the
pipeline is built with text_encoder / tokenizer / safety checker None. Each case swaps the scheduler as a user does,
`Class.from_config(pipe.scheduler.config, **overrides)` on tiny-sd15's PNDM config, and records every step's latents
(callback_on_step_end), the final latents and the decoded image (output_type "np"). TCD runs with the pipeline's eta
(its gamma) 0.3, the others with the default eta.
"""
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd15/model"
unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
base = PNDMScheduler.from_pretrained(model, subfolder="scheduler").config

g = torch.Generator("cpu").manual_seed(2024)
out = {"prompt_embeds": torch.randn((1, 77, 32), generator=g), "negative_prompt_embeds": torch.randn((1, 77, 32), generator=g)}
cases = {  # class, overrides, steps, seed, guidance
    "unipc": ("UniPCMultistepScheduler", {}, 8, 123456, 7.5),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, 8, 42, 7.5),
    "lcm": ("LCMScheduler", {}, 4, 31337, 1.0),
    "ddpm": ("DDPMScheduler", {}, 8, 777, 7.5),
    "tcd": ("TCDScheduler", {}, 4, 2468, 1.0),
}
ETA = {"tcd": 0.3}  # the pipeline's eta (TCD's gamma), given only where set
# Cases whose scheduler is swapped in after construction, `pipe.scheduler = ...` as users swap it (and as
# StableDiffusionComponents.UseScheduler does): the constructor's fix-up of a config without clip_sample False (it
# sets clip_sample to False) then does not apply, so DDPM keeps its default clip_sample True on tiny-sd15's config.
SWAPPED_AFTER = {"ddpm", "tcd"}
for name, (cls_name, overrides, steps, seed, guidance) in cases.items():
    scheduler = getattr(diffusers, cls_name).from_config(base, **overrides)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=PNDMScheduler.from_config(base) if name in SWAPPED_AFTER else scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if name in SWAPPED_AFTER:
        pipe.scheduler = scheduler
    args = dict(prompt_embeds=out["prompt_embeds"], negative_prompt_embeds=out["negative_prompt_embeds"],
                num_inference_steps=steps, guidance_scale=guidance, height=64, width=64)
    if name in ETA:
        args["eta"] = ETA[name]

    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{root}/local-diffusers/sd-schedulers/expected.safetensors")
print(f"wrote {len(out)} tensors")
