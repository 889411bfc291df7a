"""diffusers' own Perturbed-Attention Guidance (StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline: PAGMixin's
_set_pag_attn_processor, PAGCFGIdentitySelfAttnProcessor2_0 / PAGIdentitySelfAttnProcessor2_0, _apply_perturbed_attention_guidance)
on tiny-sd15 and tiny-sdxl: writes local-diffusers/pag/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/pag.py tests/DiffusersSharp.Tests/Fixtures

No text encoder runs: prompt embeddings are seeded random tensors, stored here. layers.json lists, for each layer
selection, the self-attention layers diffusers' _set_pag_attn_processor resolves it to (pipe.pag_attn_processors).
"""
import json
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.pag.pipeline_pag_sd import StableDiffusionPAGPipeline
from diffusers.pipelines.pag.pipeline_pag_sd_xl import StableDiffusionXLPAGPipeline

root = sys.argv[1]
OUT = f"{root}/local-diffusers/pag"
os.makedirs(OUT, exist_ok=True)

g = torch.Generator("cpu").manual_seed(20261128)
out = {}
layers = {}


def run(name, pipe, seed, applied, **kw):
    pipe.set_pag_applied_layers(applied)

    def on_step_end(p, i, t, cb_kw):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = cb_kw["latents"].clone()
        if i == 0:
            layers[name] = sorted(k[: -len(".processor")] for k in p.pag_attn_processors)
        return cb_kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**kw, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**kw, output_type="np", generator=torch.Generator("cpu").manual_seed(seed)).images)


sd_model = f"{root}/tiny-sd15/model"
sd = StableDiffusionPAGPipeline(vae=AutoencoderKL.from_pretrained(sd_model, subfolder="vae").eval(), text_encoder=None, tokenizer=None,
                                unet=UNet2DConditionModel.from_pretrained(sd_model, subfolder="unet").eval(),
                                scheduler=PNDMScheduler.from_pretrained(sd_model, subfolder="scheduler"),
                                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
out["in.sd15.prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
out["in.sd15.negative_prompt_embeds"] = torch.randn((1, 77, 32), generator=g)
sd_in = dict(prompt_embeds=out["in.sd15.prompt_embeds"], negative_prompt_embeds=out["in.sd15.negative_prompt_embeds"],
             num_inference_steps=3, height=48, width=80)
run("sd15_cfg_mid", sd, 41, ["mid"], **sd_in, guidance_scale=6.0, pag_scale=3.0)
run("sd15_nocfg_mid", sd, 42, ["mid"], **sd_in, guidance_scale=1.0, pag_scale=2.5)
run("sd15_cfg_layers", sd, 43, ["down_blocks.1", "up_blocks.2.attentions.0"], **sd_in, guidance_scale=6.0, pag_scale=3.0)
# pag_adaptive_scale 0.009: the scale at the last step, 5 - 0.009 x (1000 - t), is below 0 and clamped to 0.
run("sd15_adaptive", sd, 44, ["mid", "up_blocks.(1|3)"], **sd_in, guidance_scale=6.0, pag_scale=5.0, pag_adaptive_scale=0.009,
    num_images_per_prompt=2)

xl_model = f"{root}/tiny-sdxl/model"
xl = StableDiffusionXLPAGPipeline(vae=AutoencoderKL.from_pretrained(xl_model, subfolder="vae").eval(), text_encoder=None, text_encoder_2=None,
                                  tokenizer=None, tokenizer_2=None, unet=UNet2DConditionModel.from_pretrained(xl_model, subfolder="unet").eval(),
                                  scheduler=EulerDiscreteScheduler.from_pretrained(xl_model, subfolder="scheduler"), add_watermarker=False)
pooled = 80 - 6 * xl.unet.config.addition_time_embed_dim
for k, shape in (("prompt_embeds", (1, 77, 64)), ("negative_prompt_embeds", (1, 77, 64)),
                 ("pooled_prompt_embeds", (1, pooled)), ("negative_pooled_prompt_embeds", (1, pooled))):
    out[f"in.sdxl.{k}"] = torch.randn(shape, generator=g)
xl_in = dict(num_inference_steps=3, height=64, width=64,
             **{k: out[f"in.sdxl.{k}"] for k in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")})
run("sdxl_cfg_mid", xl, 51, ["mid"], **xl_in, guidance_scale=5.0, pag_scale=3.0)
run("sdxl_nocfg_layers", xl, 52, ["down_blocks.2.attentions.1", "up_blocks.0"], **xl_in, guidance_scale=1.0, pag_scale=3.0)
run("sdxl_adaptive", xl, 53, ["mid", "down_blocks.1"], **xl_in, guidance_scale=5.0, pag_scale=4.0, pag_adaptive_scale=0.003)

save_file({k: v.contiguous() for k, v in out.items()}, f"{OUT}/expected.safetensors")
with open(f"{OUT}/layers.json", "w") as f:
    json.dump(layers, f, indent=1, sort_keys=True)
    f.write("\n")
print(len(out), "tensors")
