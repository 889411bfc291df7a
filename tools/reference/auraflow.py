"""diffusers' own AuraFlowPipeline on a tiny AuraFlow model: writes local-diffusers/auraflow/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/auraflow.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/auraflow/:
- transformer/: a tiny AuraFlowTransformer2DModel (one MMDiT and two single DiT layers, 2 heads of 8, 4 latent
  channels, captions 32 wide, 8 register tokens, a learned position table of 64 patches = 8 x 8, larger than every
  patch grid below so that the centred crop matters) with diffusers' random initialisation after torch.manual_seed(0),
  then seeded values for the norm weights that initialisation leaves at 1 and the biases it leaves at 0 and for the
  register tokens and position table, so a missing one shows;
- scheduler/: a FlowMatchEulerDiscreteScheduler config with a static shift (1.73) and no dynamic shifting;
- model_index.json: AuraFlowPipeline without text encoder / tokenizer. The VAE is tiny-sdxl's (4 latent channels,
  scaling 0.13025, 8x down: AuraFlow uses SDXL's VAE);
- expected.safetensors: AuraFlowPipeline runs given prompt embeddings and masks drawn here (the prompt encoding is checked
  on its own): every step's latents (callback_on_step_end), the final latents, the images (output_type "pt") and the
  scheduler's timesteps. Cases below.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers.utils.torch_utils import randn_tensor

from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler

root = sys.argv[1]
here = f"{root}/local-diffusers/auraflow"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


g = torch.Generator("cpu").manual_seed(20261131)


def perturb(model):
    # Norm weights at 1 and biases at 0 would hide a missing norm scale or bias; the register tokens and the position
    # table get seeded values of their own scale.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name in ("register_tokens", "pos_embed.pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


torch.manual_seed(0)
model = AuraFlowTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1,
                                   num_single_dit_layers=2, attention_head_dim=8, num_attention_heads=2,
                                   joint_attention_dim=32, caption_projection_dim=16, out_channels=4,
                                   pos_embed_max_size=64).eval()
perturb(model)
save_model(model, f"{here}/transformer")
transformer = AuraFlowTransformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sdxl/model", subfolder="vae").eval()

scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.73,
                    "use_dynamic_shifting": False}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "AuraFlowPipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "AuraFlowTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]},
              f, indent=2, sort_keys=True)
    f.write("\n")


def pipeline(dtype=torch.float32):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
    pipe = AuraFlowPipeline(tokenizer=None, text_encoder=None, vae=vae.to(dtype), transformer=transformer.to(dtype),
                            scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


tensors = {}
S = 10


def embeds(n, lengths):
    # As encode_prompt makes them: the encoder output zeroed at the padding, and the mask it returns ([B, S * D]: the
    # [B, S] mask expanded over the width, flattened; the transformer never reads it).
    e = torch.randn(n, S, 32, generator=g)
    m = torch.zeros(n, S, dtype=torch.int64)
    for i, l in enumerate(lengths):
        m[i, :l] = 1
    full = m.unsqueeze(-1).expand(e.shape)
    return e * full, full.reshape(n, -1)


def run(name, pipe, **kw):
    steps = []

    def on_step(p, i, t, cb):
        steps.append(cb["latents"].clone())
        return {}

    seed = kw.pop("seed")
    latents = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                   callback_on_step_end=on_step, **kw).images
    images = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", **kw).images
    for i, s in enumerate(steps):
        tensors[f"{name}/step{i}"] = s
    tensors[f"{name}/latents"] = latents
    tensors[f"{name}/images"] = images
    tensors[f"{name}/timesteps"] = pipe.scheduler.timesteps.clone()
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            tensors[f"{name}/{'initial_latents' if k == 'latents' else k}"] = v


with torch.no_grad():
    pipe = pipeline()
    # CFG (diffusers' default 3.5), two prompts with padded masks and negatives, a non-square size.
    pe, pm = embeds(2, [7, 10])
    ne, nm = embeds(2, [2, 4])
    run("cfg", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, guidance_scale=3.5, num_inference_steps=4, height=32, width=48, seed=21)
    # Given negatives with two images per prompt (AuraFlow repeats them), another size.
    pe, pm = embeds(1, [6])
    ne, nm = embeds(1, [3])
    run("images_per_prompt", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, guidance_scale=5.0, num_images_per_prompt=2, num_inference_steps=3,
        height=48, width=32, seed=22)
    # No guidance, custom sigmas.
    pe, pm = embeds(1, [S])
    run("nocfg", pipe, prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=1.0, sigmas=[1.0, 0.6, 0.3],
        num_inference_steps=3, height=32, width=32, seed=23)
    # The whole pipeline in bfloat16 (noise drawn in bfloat16: prompt_embeds' dtype) beside its float32 twin.
    pe, pm = embeds(1, [9])
    ne, nm = embeds(1, [4])
    kw = dict(guidance_scale=3.5, num_inference_steps=3, height=32, width=48, seed=24)
    # diffusers draws that noise in bfloat16 (randn_tensor with prompt_embeds' dtype), which is other numbers than a
    # float32 draw from the same seed: the float32 twin (bf16_ref) starts from exactly that noise, given as latents.
    noise = randn_tensor((1, 4, 4, 6), generator=torch.Generator("cpu").manual_seed(24), dtype=torch.bfloat16)
    tensors["bf16/noise"] = noise
    run("bf16_ref", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, latents=noise.float(), **kw)
    run("bf16", pipeline(dtype=torch.bfloat16), prompt_embeds=pe.bfloat16(), prompt_attention_mask=pm,
        negative_prompt_embeds=ne.bfloat16(), negative_prompt_attention_mask=nm, **kw)

save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
for k, v in tensors.items():
    if k.endswith("/images"):
        print(k, list(v.shape), v.dtype, f"{v.float().std().item():.4f}")
