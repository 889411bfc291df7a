"""diffusers' SD3 ControlNet on tiny-sd3, given prompt embeddings: writes local-diffusers/sd3-controlnet/.

Usage (see README.md for the environment; run from the repository root):
    python3 tools/reference/sd3_controlnet.py tests/DiffusersSharp.Tests/Fixtures

Two tiny ControlNets are made and saved (diffusers layout) beside the expected values:
- controlnet/: SD3ControlNetModel.from_transformer(tiny-sd3's transformer, num_layers=1, no extra channels): one joint
  block (dual attention, as tiny-sd3's block 0), force_zeros_for_pooled_projection (the InstantX kind);
- controlnet-sd35/: an SD3.5-kind ControlNet built from a config (joint_attention_dim None: no context_embedder, two
  single-stream SD3SingleTransformerBlock blocks; force_zeros_for_pooled_projection False), drawn under a fixed seed.
In both the zero-initialised parts (controlnet_blocks, pos_embed_input) are re-drawn under a fixed seed so they matter.
diffusers' pipeline samples the control image's VAE posterior from torch's global generator, so every call is preceded by
torch.manual_seed(CONTROL_SEED).
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.models.controlnets.controlnet_sd3 import SD3ControlNetModel, SD3MultiControlNetModel
from diffusers.pipelines.controlnet_sd3.pipeline_stable_diffusion_3_controlnet import StableDiffusion3ControlNetPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd3/model"
dest = f"{root}/local-diffusers/sd3-controlnet"
os.makedirs(dest, exist_ok=True)
torch.set_grad_enabled(False)

transformer = SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")


def save(net, folder):
    # save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
    net.save_config(folder)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")


def redraw(module, seed, std):
    """Draws every parameter of module from N(0, std) under a fixed seed (in named_parameters order)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in module.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)


cn = SD3ControlNetModel.from_transformer(transformer, num_layers=1, num_extra_conditioning_channels=0).eval()
redraw(cn.controlnet_blocks, 11, 0.2)
redraw(cn.pos_embed_input, 12, 0.2)
save(cn, f"{dest}/controlnet")

torch.manual_seed(2024)  # the default init of the SD3.5-kind ControlNet's layers
cn35 = SD3ControlNetModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                          num_attention_heads=4, joint_attention_dim=None, caption_projection_dim=32,
                          pooled_projection_dim=64, out_channels=16, pos_embed_max_size=32,
                          force_zeros_for_pooled_projection=False).eval()
redraw(cn35.controlnet_blocks, 13, 0.2)
redraw(cn35.pos_embed_input, 14, 0.2)
save(cn35, f"{dest}/controlnet-sd35")

# Reload, so that what is recorded comes from the saved files.
cn = SD3ControlNetModel.from_pretrained(f"{dest}/controlnet").eval()
cn35 = SD3ControlNetModel.from_pretrained(f"{dest}/controlnet-sd35").eval()

out = {}
# One forward of each ControlNet, then the transformer given the first one's residuals.
g = torch.Generator().manual_seed(5)
x = torch.randn(2, 16, 8, 8, generator=g)
cond = torch.randn(2, 16, 8, 8, generator=g)
ctx = torch.randn(2, 10, 96, generator=g)
pooled = torch.randn(2, 64, generator=g)
t = torch.tensor([500.0, 20.0])
out.update({"forward.hidden_states": x, "forward.controlnet_cond": cond, "forward.encoder_hidden_states": ctx,
            "forward.pooled_projections": pooled, "forward.timestep": t})
res = cn(hidden_states=x, controlnet_cond=cond, conditioning_scale=0.7, encoder_hidden_states=ctx,
         pooled_projections=pooled, timestep=t, return_dict=False)[0]
for i, r in enumerate(res):
    out[f"forward.controlnet.block{i}"] = r
out["forward.transformer"] = transformer(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                                         timestep=t, block_controlnet_hidden_states=res, return_dict=False)[0]
res35 = cn35(hidden_states=x, controlnet_cond=cond, conditioning_scale=1.3, pooled_projections=pooled, timestep=t,
             return_dict=False)[0]
for i, r in enumerate(res35):
    out[f"forward.controlnet_sd35.block{i}"] = r

shared = load_file(f"{root}/tiny-sd3/expected.safetensors")


def embeds(case):
    return dict(prompt_embeds=shared[f"{case}.prompt_embeds"], negative_prompt_embeds=shared[f"{case}.negative_prompt_embeds"],
                pooled_prompt_embeds=shared[f"{case}.pooled_prompt_embeds"],
                negative_pooled_prompt_embeds=shared[f"{case}.negative_pooled_prompt_embeds"])


def pipe(controlnet):
    return StableDiffusion3ControlNetPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None,
                                              tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                              tokenizer_3=None, controlnet=controlnet)


image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask_rgb = Image.open(f"{root}/tiny-sd3/mask.png").convert("RGB")
single, single35 = pipe(cn), pipe(cn35)
multi = pipe(SD3MultiControlNetModel([cn, cn]))
# (pipeline, arguments, generator seed, global seed for the control image's VAE sample)
cases = {
    "plain": (single, dict(**embeds("t2i"), control_image=image, num_inference_steps=4, guidance_scale=4.5,
                           height=64, width=64), 123456, 1),
    # No CFG, 64 x 80 (the control image resized), scale 0.6, ControlNet on steps 1 and 2 of 4 only.
    "window": (single, dict(**embeds("t2i_nocfg"), control_image=image, num_inference_steps=4, guidance_scale=1.0,
                            height=64, width=80, controlnet_conditioning_scale=0.6, control_guidance_start=0.25,
                            control_guidance_end=0.75), 7, 2),
    # SD3.5 kind: no text into the ControlNet, the pooled embeddings (not zeros), the VAE shift on the control latents.
    "sd35": (single35, dict(**embeds("t2i"), control_image=image, num_inference_steps=3, guidance_scale=4.5,
                            height=64, width=64, controlnet_conditioning_scale=0.8), 99, 3),
    # Two ControlNets (the same one twice, other images, scales and windows).
    "multi": (multi, dict(**embeds("t2i"), control_image=[image, mask_rgb], num_inference_steps=4, guidance_scale=4.5,
                          height=64, width=64, controlnet_conditioning_scale=[0.5, 1.2],
                          control_guidance_start=[0.0, 0.5], control_guidance_end=[0.5, 1.0]), 42, 4),
    # The CLI's generate --seed 5 (one seed for the generator and the global generator), no CFG, scale 0.9.
    "cli": (single, dict(**embeds("t2i_nocfg"), control_image=image, num_inference_steps=2, guidance_scale=1.0, height=64,
                         width=64, controlnet_conditioning_scale=0.9), 5, 5),
}
for name, (p, args, seed, control_seed) in cases.items():
    def on_step_end(pp, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    torch.manual_seed(control_seed)
    out[f"{name}.latents"] = p(**args, output_type="latent", callback_on_step_end=on_step_end,
                               generator=torch.Generator("cpu").manual_seed(seed)).images
    torch.manual_seed(control_seed)
    out[f"{name}.image"] = torch.from_numpy(p(**args, output_type="np",
                                              generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{dest}/expected.safetensors")
print(f"wrote {len(out)} tensors")
