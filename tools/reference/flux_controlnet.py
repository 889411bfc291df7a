"""diffusers' Flux ControlNet on the tiny Flux model, given prompt embeddings: writes local-diffusers/flux-controlnet/.

Usage (see README.md for the environment; run from the repository root):
    python3 tools/reference/flux_controlnet.py tests/DiffusersSharp.Tests/Fixtures

controlnet/: FluxControlNetModel.from_transformer(local-diffusers/flux's transformer, 1 double + 1 single block, the
transformer's head count and width), its zero-initialised parts (controlnet_blocks, controlnet_single_blocks,
controlnet_x_embedder) re-drawn under fixed seeds so they matter. The pipeline (FluxControlNetPipeline, text encoders
None) VAE-encodes the control image with the call's generator (a posterior sample drawn before the noise).
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.models.controlnets.controlnet_flux import FluxControlNetModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux_controlnet import FluxControlNetPipeline

root = sys.argv[1]
flux = f"{root}/local-diffusers/flux"
dest = f"{root}/local-diffusers/flux-controlnet"
os.makedirs(dest, exist_ok=True)
torch.set_grad_enabled(False)

transformer = FluxTransformer2DModel.from_pretrained(flux, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(flux, subfolder="scheduler")


def redraw(module, seed, std):
    """Draws every parameter of module from N(0, std) under a fixed seed (in named_parameters order)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in module.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)


cn = FluxControlNetModel.from_transformer(transformer, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                          num_attention_heads=2).eval()
redraw(cn.controlnet_blocks, 21, 0.2)
redraw(cn.controlnet_single_blocks, 22, 0.2)
redraw(cn.controlnet_x_embedder, 23, 0.2)
# save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
cn.save_config(f"{dest}/controlnet")
save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, f"{dest}/controlnet/diffusion_pytorch_model.safetensors")
cn = FluxControlNetModel.from_pretrained(f"{dest}/controlnet").eval()

out = {}
# One ControlNet forward (batch 2, 4 x 5 tokens), then the transformer given its residuals.
g = torch.Generator().manual_seed(31)
hidden, cond = torch.randn(2, 20, 64, generator=g), torch.randn(2, 20, 64, generator=g)
text, pool = torch.randn(2, 16, 96, generator=g), torch.randn(2, 32, generator=g)
timestep, guidance = torch.tensor([1.0, 0.3125]), torch.tensor([3.5, 7.0])
img_ids, txt_ids = FluxPipeline._prepare_latent_image_ids(1, 4, 5, "cpu", torch.float32), torch.zeros(16, 3)
blocks, singles = cn(hidden_states=hidden, controlnet_cond=cond, conditioning_scale=0.7, encoder_hidden_states=text,
                     pooled_projections=pool, timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                     return_dict=False)
out.update({"forward.hidden_states": hidden, "forward.controlnet_cond": cond, "forward.encoder_hidden_states": text,
            "forward.pooled_projections": pool, "forward.timestep": timestep, "forward.guidance": guidance,
            "forward.img_ids": img_ids, "forward.txt_ids": txt_ids})
for i, r in enumerate(blocks):
    out[f"forward.controlnet.block{i}"] = r
for i, r in enumerate(singles):
    out[f"forward.controlnet.single{i}"] = r
out["forward.transformer"] = transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pool,
                                         timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                                         controlnet_block_samples=blocks, controlnet_single_block_samples=singles,
                                         return_dict=False)[0]

embeds = load_file(f"{flux}/expected.safetensors")
prompt = dict(prompt_embeds=embeds["in.prompt_embeds"], pooled_prompt_embeds=embeds["in.pooled"])
pipe = FluxControlNetPipeline(scheduler=scheduler, vae=vae, transformer=transformer, controlnet=cn, text_encoder=None,
                              tokenizer=None, text_encoder_2=None, tokenizer_2=None)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
cases = {
    # 64 high x 80 wide (the 64 x 64 control image resized), scale 0.6, ControlNet on steps 1 and 2 of 4 only.
    "window": (dict(control_image=image, height=64, width=80, num_inference_steps=4, guidance_scale=3.5,
                    controlnet_conditioning_scale=0.6, control_guidance_start=0.25, control_guidance_end=0.75), 42),
}
for name, (args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    out[f"{name}.latents"] = pipe(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                  generator=torch.Generator("cpu").manual_seed(seed)).images
    out[f"{name}.image"] = torch.from_numpy(pipe(**prompt, **args, output_type="np",
                                                 generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{dest}/expected.safetensors")
print(f"wrote {len(out)} tensors")
