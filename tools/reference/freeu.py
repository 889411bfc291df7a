"""diffusers' own FreeU (UNet2DConditionModel.enable_freeu / pipe.enable_freeu: apply_freeu and fourier_filter in the
up blocks of resolution 0 and 1) on tiny-sd15 (an UpBlock2D and a CrossAttnUpBlock2D at those resolutions) and tiny-sdxl
(two CrossAttnUpBlock2D): writes local-diffusers/freeu/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/freeu.py tests/DiffusersSharp.Tests/Fixtures

No text encoder runs: prompt embeddings are seeded random tensors, stored here.
"""
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline

root = sys.argv[1]
OUT = f"{root}/local-diffusers/freeu"
os.makedirs(OUT, exist_ok=True)
SD15 = (0.9, 0.2, 1.2, 1.4)    # FreeU's suggested SD 1.5 values (s1, s2, b1, b2)
SDXL = (0.6, 0.4, 1.1, 1.2)    # and SDXL's

g = torch.Generator("cpu").manual_seed(20261128)
out = {}
units = {name: UNet2DConditionModel.from_pretrained(f"{root}/{name}/model", subfolder="unet").eval() for name in ("tiny-sd15", "tiny-sdxl")}


def freeu(unet, values):
    s1, s2, b1, b2 = values
    unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)


# UNet forwards: power-of-two latents (16 x 16; 8 x 8, whose lowest SD 1.5 up block is 1 x 1, where the filter window's
# Python slice [-1:1] wraps to the whole map) and a non-square, non-power-of-two one (24 x 40: up blocks at 3 x 5 and
# 6 x 10, filtered in float32), with and without FreeU; and FreeU with a zero factor, which diffusers'
# `is_freeu_enabled` (a truthiness test) takes as off.
for name, values, added in (("sd15", SD15, None), ("sdxl", SDXL, 80)):
    unet = units[f"tiny-{name}"]
    cross = unet.config.cross_attention_dim
    for size in ((16, 16), (8, 8), (24, 40)):
        key = f"unet.{name}.{size[0]}x{size[1]}"
        out[f"{key}.sample"] = torch.randn((2, 4) + size, generator=g)
        out[f"{key}.encoder_hidden_states"] = torch.randn((2, 77, cross), generator=g)
        kw = {}
        if added:
            time_dim = unet.config.addition_time_embed_dim
            out[f"{key}.text_embeds"] = torch.randn((2, added - 6 * time_dim), generator=g)
            out[f"{key}.time_ids"] = torch.tensor([[64.0, 80.0, 0.0, 0.0, 64.0, 80.0]] * 2)
            kw["added_cond_kwargs"] = {"text_embeds": out[f"{key}.text_embeds"], "time_ids": out[f"{key}.time_ids"]}
        with torch.no_grad():
            unet.disable_freeu()
            out[f"{key}.plain"] = unet(out[f"{key}.sample"], torch.tensor(499), out[f"{key}.encoder_hidden_states"], **kw).sample
            freeu(unet, values)
            out[f"{key}.freeu"] = unet(out[f"{key}.sample"], torch.tensor(499), out[f"{key}.encoder_hidden_states"], **kw).sample
            freeu(unet, (values[0], 0.0, values[2], values[3]))
            out[f"{key}.freeu_zero_s2"] = unet(out[f"{key}.sample"], torch.tensor(499), out[f"{key}.encoder_hidden_states"], **kw).sample
            unet.disable_freeu()


def run(name, pipe, seed, **kw):
    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        return cb_kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**kw, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**kw, output_type="np", generator=torch.Generator("cpu").manual_seed(seed)).images)


# Pipelines with pipe.enable_freeu, given prompt embeddings.
sd_model = f"{root}/tiny-sd15/model"
sd = StableDiffusionPipeline(vae=AutoencoderKL.from_pretrained(sd_model, subfolder="vae").eval(), text_encoder=None, tokenizer=None,
                             unet=units["tiny-sd15"], scheduler=PNDMScheduler.from_pretrained(sd_model, subfolder="scheduler"),
                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
sd.enable_freeu(*SD15)
out["in.sd15.prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
out["in.sd15.negative_prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
run("sd15_t2i", sd, 41, prompt_embeds=out["in.sd15.prompt_embeds"], negative_prompt_embeds=out["in.sd15.negative_prompt_embeds"],
    num_inference_steps=3, guidance_scale=6.0, height=48, width=80)

xl_model = f"{root}/tiny-sdxl/model"
xl = StableDiffusionXLPipeline(vae=AutoencoderKL.from_pretrained(xl_model, subfolder="vae").eval(), text_encoder=None, text_encoder_2=None,
                               tokenizer=None, tokenizer_2=None, unet=units["tiny-sdxl"],
                               scheduler=EulerDiscreteScheduler.from_pretrained(xl_model, subfolder="scheduler"), add_watermarker=False)
xl.enable_freeu(*SDXL)
pooled = 80 - 6 * units["tiny-sdxl"].config.addition_time_embed_dim
for k, shape in (("prompt_embeds", (1, 77, 64)), ("negative_prompt_embeds", (1, 77, 64)),
                 ("pooled_prompt_embeds", (1, pooled)), ("negative_pooled_prompt_embeds", (1, pooled))):
    out[f"in.sdxl.{k}"] = torch.randn(shape, generator=g)
run("sdxl_t2i", xl, 42, **{k: out[f"in.sdxl.{k}"] for k in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                                               "negative_pooled_prompt_embeds")},
    num_inference_steps=3, guidance_scale=5.0, height=64, width=64)

save_file({k: v.contiguous() for k, v in out.items()}, f"{OUT}/expected.safetensors")
print(len(out), "tensors")
