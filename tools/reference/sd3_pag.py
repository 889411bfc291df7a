"""diffusers' own Perturbed-Attention Guidance for SD3 (StableDiffusion3PAGPipeline: PAGMixin's _set_pag_attn_processor,
PAGCFGJointAttnProcessor2_0 / PAGJointAttnProcessor2_0, _apply_perturbed_attention_guidance) on tiny-sd3, given prompt
embeddings: writes local-diffusers/sd3-pag/.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/sd3_pag.py tests/DiffusersSharp.Tests/Fixtures

No text encoder runs (tiny-sd3's T5 ran with dropout; see tools/reference/sd3.py): every case takes the shared tiny-sd3
fixture's stored prompt embeddings. layers.json lists, for each case, the attention layers diffusers'
_set_pag_attn_processor resolves its layer selection to (pipe.pag_attn_processors).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.pipelines.pag.pipeline_pag_sd_3 import StableDiffusion3PAGPipeline
from diffusers.pipelines.pag.pipeline_pag_sd_3_img2img import StableDiffusion3PAGImg2ImgPipeline
from PIL import Image

root = sys.argv[1]
OUT = f"{root}/local-diffusers/sd3-pag"
os.makedirs(OUT, exist_ok=True)
model = f"{root}/tiny-sd3/model"
parts = dict(transformer=SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval(),
             scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler"),
             vae=AutoencoderKL.from_pretrained(model, subfolder="vae").eval(),
             text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
shared = load_file(f"{root}/tiny-sd3/expected.safetensors")
out = {}
layers = {}


def embeds(*cases, zero_tail=0):
    """The cases' stored embeddings, concatenated along the batch (one prompt per case)."""
    e = {k: torch.cat([shared[f"{case}.{k}"] for case in cases]) for k in
         ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")}
    if zero_tail:
        # As SD3 without T5: the sequences end in identical zero rows (DiffusersSharp runs them collapsed on the CPU).
        for k in ("prompt_embeds", "negative_prompt_embeds"):
            e[k][:, -zero_tail:] = 0
            out[f"in.zero_tail.{k}"] = e[k]
    return e


def run(name, seed, applied, pipeline=StableDiffusion3PAGPipeline, **kw):
    # The constructor's pag_applied_layers (set_pag_applied_layers alone would install the UNet's PAG processors).
    pipe = pipeline(**parts, pag_applied_layers=applied)

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


# The default layers "blocks.1": the second (last, context_pre_only) block's joint attention.
run("cfg_default", 11, "blocks.1", **embeds("t2i"), num_inference_steps=3, guidance_scale=5.0, pag_scale=3.0, height=64, width=64)
run("nocfg_default", 12, "blocks.1", **embeds("t2i_nocfg"), num_inference_steps=3, guidance_scale=1.0, pag_scale=2.5,
    height=64, width=80)
# The first block's joint attention (that block also has the SD3.5 attn2, which "$" leaves out); two prompts (the t2i and
# t2i_nocfg embeddings) whose embeddings end in 100 zero rows; pag_adaptive_scale 0.006: the scale 4 - 0.006 x (1000 - t)
# clamps to 0 at the last step.
run("cfg_block0_adaptive", 13, ["transformer_blocks.0.attn$"], **embeds("t2i", "t2i_nocfg", zero_tail=100), num_inference_steps=3,
    guidance_scale=4.0, pag_scale=4.0, pag_adaptive_scale=0.006, height=64, width=64)

# Image-to-image: tiny-sd3's init_image.png (64 x 64, no resize); strength 0.7 of 5 steps runs 4, 0.9 of 4 runs 4.
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
run("i2i_cfg_default", 21, "blocks.1", StableDiffusion3PAGImg2ImgPipeline, **embeds("t2i"), image=image, strength=0.7,
    num_inference_steps=5, guidance_scale=5.0, pag_scale=3.0, height=64, width=64)
run("i2i_nocfg_layers", 22, ["transformer_blocks.0.attn$", "blocks.1"], StableDiffusion3PAGImg2ImgPipeline, **embeds("t2i_nocfg"),
    image=image, strength=0.9, num_inference_steps=4, guidance_scale=1.0, pag_scale=2.0, pag_adaptive_scale=0.002, height=64, width=64)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{OUT}/expected.safetensors")
with open(f"{OUT}/layers.json", "w") as f:
    json.dump(layers, f, indent=1, sort_keys=True)
    f.write("\n")
print(len(out), "tensors")
for k, v in out.items():
    if k.endswith("timestep"):
        print(k, float(v))
