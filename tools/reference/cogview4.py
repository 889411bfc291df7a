"""diffusers' own CogView4Pipeline on a tiny CogView4 model: writes local-diffusers/cogview4/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/cogview4.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/cogview4/:
- transformer/: a tiny CogView4Transformer2DModel (2 blocks, 2 heads of 16, text width 32, time width 32, condition
  width 16, rotary tables of 32 x 32 positions) with diffusers' random initialisation after torch.manual_seed(0), then
  seeded values for the biases it leaves at 0, so a missing one shows;
- scheduler/: FlowMatchEulerDiscreteScheduler with dynamic shifting of the "linear" type, base_shift 0.25, max_shift
  0.75, base_image_seq_len 256: THUDM/CogView4-6B's scheduler config as we recall it (not read from the hub here, no
  network); the pipeline passes its own integer timesteps and sigmas = timesteps / 1000, shifted with
  mu = sqrt(image_seq_len / 256) * 0.75 + 0.25;
- model_index.json: CogView4Pipeline without text encoder / tokenizer. The VAE is tiny-sd3's (16 latent channels, 8x
  down; the pipeline divides by its scaling_factor and ignores its shift_factor, as diffusers does);
- expected.safetensors: CogView4Pipeline runs given prompt embeddings drawn here (the GLM prompt encoding is checked on
  its own): every step's latents (callback_on_step_end), the final latents and the images (output_type "pt"), and the
  scheduler's timesteps and sigmas. Cases below.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

root = sys.argv[1]
here = f"{root}/local-diffusers/cogview4"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


g = torch.Generator("cpu").manual_seed(20261201)

torch.manual_seed(0)
model = CogView4Transformer2DModel(patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
                                   num_attention_heads=2, text_embed_dim=32, time_embed_dim=32, condition_dim=16,
                                   pos_embed_max_size=16, sample_size=4, rope_axes_dim=(32, 32)).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
save_model(model, f"{here}/transformer")
transformer = CogView4Transformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()

SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.25,
             "invert_sigmas": False, "max_image_seq_len": 4096, "max_shift": 0.75, "num_train_timesteps": 1000,
             "shift": 1.0, "shift_terminal": None, "time_shift_type": "linear", "use_beta_sigmas": False,
             "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(SCHEDULER, f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "CogView4Pipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "CogView4Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]},
              f, indent=2, sort_keys=True)
    f.write("\n")


def pipeline(dtype=torch.float32):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
    pipe = CogView4Pipeline(tokenizer=None, text_encoder=None, vae=vae.to(dtype), transformer=transformer.to(dtype),
                            scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


tensors = {}


def embeds(n, length):
    return torch.randn(n, length, 32, generator=g)


def run(name, pipe, **kw):
    steps = []

    def on_step(p, i, t, cb):  # t is scheduler.sigmas[i] here (diffusers' CogView4 passes the sigma, not the timestep)
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
    tensors[f"{name}/sigmas"] = pipe.scheduler.sigmas.clone()
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            tensors[f"{name}/{k}"] = v


with torch.no_grad():
    pipe = pipeline()
    # CFG (the two halves as two transformer calls), negatives of another length than the prompts', a non-square size.
    run("cfg", pipe, prompt_embeds=embeds(2, 16), negative_prompt_embeds=embeds(2, 32), guidance_scale=5.0,
        num_inference_steps=4, height=32, width=48, seed=11)
    # No guidance, custom sigmas (the timesteps still the integer linspace), two images per prompt, original size and
    # crop coordinates of their own.
    run("nocfg", pipe, prompt_embeds=embeds(1, 16), guidance_scale=1.0, sigmas=[1.0, 0.7, 0.45, 0.2],
        num_images_per_prompt=2, num_inference_steps=4, height=32, width=32, original_size=(64, 96),
        crops_coords_top_left=(8, 16), seed=12)
    # Custom timesteps (sigmas = timesteps / 1000, then shifted), a taller image: another mu.
    run("timesteps", pipe, prompt_embeds=embeds(1, 16), negative_prompt_embeds=embeds(1, 16), guidance_scale=3.0,
        timesteps=[900, 650, 400, 150], height=64, width=32, seed=13)
    # The whole pipeline in bfloat16; diffusers draws the noise in float32 here (prepare_latents with torch.float32),
    # so its float32 twin (bf16_ref) starts from the same noise with the same seed.
    pe, ne = embeds(1, 16), embeds(1, 32)
    kw = dict(guidance_scale=4.0, num_inference_steps=3, height=32, width=48, seed=15)
    run("bf16_ref", pipe, prompt_embeds=pe, negative_prompt_embeds=ne, **kw)
    run("bf16", pipeline(dtype=torch.bfloat16), prompt_embeds=pe.bfloat16(), negative_prompt_embeds=ne.bfloat16(), **kw)
    tensors["bf16/noise"] = torch.randn((1, 16, 4, 6), generator=torch.Generator("cpu").manual_seed(15))

save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
for k, v in tensors.items():
    if k.endswith("/images") or k.endswith("timesteps") or k.endswith("sigmas"):
        print(k, list(v.shape), v.dtype, v.flatten()[:6].tolist() if "images" not in k else "")
