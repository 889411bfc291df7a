"""diffusers' own SanaSprintPipeline on a tiny SANA-Sprint model: writes local-diffusers/sana-sprint/.

Usage (diffusers v0.39.0 source; see README.md for the environment; after sana.py, whose VAE it uses):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana_sprint.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sana-sprint/:
- transformer/: a tiny SanaTransformer2DModel shaped as SANA-Sprint's (guidance_embeds, qk_norm rms_norm_across_heads,
  sample_size 32; 2 blocks, 2 heads of 8, 24-wide captions, 8 latent channels) with diffusers' random initialisation
  after torch.manual_seed(0), then seeded biases and norm weights (as sana.py);
- scheduler/: SCMScheduler's config (sigma_data 0.5, trigflow);
- model_index.json: SanaSprintPipeline without text encoder / tokenizer (the VAE is local-diffusers/sana/vae);
- expected.safetensors: SanaSprintPipeline runs given prompt embeddings and masks drawn here: every step's latents
  (callback_on_step_end), the final latents (output_type "latent": the last denoised prediction / sigma_data) and the
  images (output_type "pt"). Cases: two (two prompts, the default 2 steps with intermediate angle 1.3, guidance 4.5),
  one (1 step, no intermediate angle, guidance 3), four (4 steps, linspace angles, two images per prompt, max_timesteps
  1.4, guidance 6); all 64 x 96 without binning (the tiny VAE is 4x, so binning's 1024 px bins would be slow).
"""
import json
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x's float32 linspace, which SCMScheduler's 4-step schedule runs)
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler

root = sys.argv[1]
here = f"{root}/local-diffusers/sana-sprint"
g = torch.Generator("cpu").manual_seed(20261129)


def save_model(model, folder):
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


torch.manual_seed(0)
model = SanaTransformer2DModel(patch_size=1, in_channels=8, out_channels=8, num_layers=2, num_attention_heads=2,
                               attention_head_dim=8, num_cross_attention_heads=2, cross_attention_head_dim=8,
                               cross_attention_dim=16, caption_channels=24, sample_size=32, mlp_ratio=2.5,
                               qk_norm="rms_norm_across_heads", guidance_embeds=True).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif "norm" in name and name.endswith("weight") and p.dim() == 1:
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
save_model(model, f"{here}/transformer")
transformer = SanaTransformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderDC.from_pretrained(f"{root}/local-diffusers/sana/vae").eval()

scheduler = SCMScheduler()
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump({"_class_name": "SCMScheduler", **{k: v for k, v in scheduler.config.items() if not k.startswith("_")}},
              f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "SanaSprintPipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "SCMScheduler"], "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "SanaTransformer2DModel"], "vae": ["diffusers", "AutoencoderDC"]},
              f, indent=2, sort_keys=True)
    f.write("\n")

pipe = SanaSprintPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
pipe.set_progress_bar_config(disable=True)
tensors = {}


def embeds(n, lengths):
    e = torch.randn(n, 12, 24, generator=g)
    m = torch.zeros(n, 12, dtype=torch.int64)
    for i, l in enumerate(lengths):
        m[i, :l] = 1
    return e, m


def run(name, **kw):
    steps = []

    def on_step(p, i, t, cb):
        steps.append(cb["latents"].clone())
        return {}

    seed = kw.pop("seed")
    latents = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent", callback_on_step_end=on_step,
                   height=64, width=96, use_resolution_binning=False, **kw).images
    images = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", height=64, width=96,
                  use_resolution_binning=False, **kw).images
    for i, s in enumerate(steps):
        tensors[f"{name}/step{i}"] = s
    tensors[f"{name}/latents"] = latents
    tensors[f"{name}/images"] = images
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            tensors[f"{name}/{k}"] = v


pe, pm = embeds(2, [9, 12])
run("two", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=4.5, seed=21)
pe, pm = embeds(1, [7])
run("one", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=3.0, num_inference_steps=1, intermediate_timesteps=None, seed=22)
pe, pm = embeds(1, [10])
run("four", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=6.0, num_inference_steps=4, intermediate_timesteps=None,
    max_timesteps=1.4, num_images_per_prompt=2, seed=23)
save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
