"""diffusers' own Lumina2Pipeline (Lumina-Image 2.0) on a tiny Lumina2 model: writes local-diffusers/lumina2/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/lumina2.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/lumina2/:
- transformer/: a tiny Lumina2Transformer2DModel (hidden 48, 4 query / 2 key-value heads of 12, rotary axes 4 + 4 + 4,
  one context-refiner and one noise-refiner block, two main blocks, 16 latent channels, captions 32 wide: the width of
  local-diffusers/sana-prompt's tiny Gemma2, so a whole tiny pipeline folder can be put together from the fixtures) with
  diffusers' random initialisation after torch.manual_seed(0), then seeded values for the norm weights that
  initialisation leaves at 1 and the biases it leaves at 0, so a missing one shows;
- scheduler/: a FlowMatchEulerDiscreteScheduler config with a static shift of 6 (what we recall of Lumina-Image-2.0's:
  the hub file was not read here, no network); scheduler-dynamic/: one with
  dynamic shifting, so the pipeline's mu (computed from latents.shape[1], the channel count, as diffusers does) is used;
- model_index.json: Lumina2Pipeline without text encoder / tokenizer. The VAE is tiny-sd3's (16 latent channels,
  scaling and shift factors, 8x down: the Flux-style AutoencoderKL of Lumina-Image 2.0 in small);
- expected.safetensors: Lumina2Pipeline runs given prompt embeddings and masks drawn here (the prompt encoding is
  checked by lumina2_prompt.py): every step's latents (callback_on_step_end), the final latents and the images
  (output_type "pt"), and the scheduler's timesteps. Cases below.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers.utils.torch_utils import randn_tensor

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

root = sys.argv[1]
here = f"{root}/local-diffusers/lumina2"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


g = torch.Generator("cpu").manual_seed(20261130)


def perturb(model):
    # Norm weights at 1 and biases at 0 would hide a missing norm scale or bias: give them seeded values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


torch.manual_seed(0)
model = Lumina2Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, hidden_size=48, num_layers=2,
                                  num_refiner_layers=1, num_attention_heads=4, num_kv_heads=2, multiple_of=16,
                                  ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=(4, 4, 4),
                                  axes_lens=(300, 512, 512), cap_feat_dim=32).eval()
perturb(model)
save_model(model, f"{here}/transformer")
transformer = Lumina2Transformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()

# A static shift of 6.0, dynamic shifting off: Lumina-Image-2.0's scheduler config as we recall it (not read from the hub).
SCHEDULERS = {
    "scheduler": {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                  "invert_sigmas": False, "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000,
                  "shift": 6.0, "shift_terminal": None, "use_beta_sigmas": False, "use_dynamic_shifting": False,
                  "use_exponential_sigmas": False, "use_karras_sigmas": False},
    "scheduler-dynamic": {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                          "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 1.0,
                          "use_dynamic_shifting": True},
}
for folder, config in SCHEDULERS.items():
    os.makedirs(f"{here}/{folder}", exist_ok=True)
    with open(f"{here}/{folder}/scheduler_config.json", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "Lumina2Pipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "Lumina2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]},
              f, indent=2, sort_keys=True)
    f.write("\n")


def pipeline(folder="scheduler", dtype=torch.float32):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder=folder)
    pipe = Lumina2Pipeline(tokenizer=None, text_encoder=None, vae=vae.to(dtype), transformer=transformer.to(dtype),
                           scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


tensors = {}
S = 10


def embeds(n, lengths, width=S):
    e = torch.randn(n, width, 32, generator=g)
    m = torch.zeros(n, width, dtype=torch.int64)
    for i, l in enumerate(lengths):
        m[i, :l] = 1
    return e, m


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
    # CFG with diffusers' defaults (normalisation on, no truncation), two prompts with padded masks of different lengths,
    # negatives of their own lengths, a non-square size.
    pe, pm = embeds(2, [7, 10])
    ne, nm = embeds(2, [2, 4])
    run("cfg", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, guidance_scale=4.0, num_inference_steps=4, height=32, width=48, seed=11)
    # CFG cut off after half the steps (cfg_trunc_ratio 0.5), no normalisation. (diffusers does not repeat GIVEN
    # negative embeddings per image, so num_images_per_prompt > 1 with them fails there: not a case here.)
    pe, pm = embeds(2, [6, 10])
    ne, nm = embeds(2, [3, 1])
    run("trunc", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, guidance_scale=5.0, cfg_trunc_ratio=0.5, cfg_normalization=False,
        num_inference_steps=4, height=48, width=32, seed=12)
    # No guidance, custom sigmas, two images per prompt, a prompt that fills its width.
    pe, pm = embeds(1, [S])
    run("nocfg", pipe, prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=1.0, sigmas=[1.0, 0.7, 0.45, 0.2],
        num_images_per_prompt=2, num_inference_steps=4, height=32, width=32, seed=13)
    # Dynamic shifting: mu from calculate_shift(latents.shape[1]) = the 16 channels.
    pe, pm = embeds(1, [8])
    ne, nm = embeds(1, [5])
    run("dynamic", pipeline("scheduler-dynamic"), prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, guidance_scale=3.0, num_inference_steps=3, height=32, width=32, seed=14)
    # The whole pipeline in bfloat16 (embeddings, noise drawn in bfloat16 as diffusers draws it in prompt_embeds.dtype).
    pe, pm = embeds(1, [9])
    ne, nm = embeds(1, [4])
    kw = dict(guidance_scale=4.0, num_inference_steps=3, height=32, width=48, seed=15)
    # diffusers draws that noise in bfloat16 (randn_tensor with prompt_embeds' dtype), which is other numbers than a
    # float32 draw from the same seed: the float32 twin (bf16_ref) starts from exactly that noise, given as latents.
    noise = randn_tensor((1, 16, 4, 6), generator=torch.Generator("cpu").manual_seed(15), dtype=torch.bfloat16)
    tensors["bf16/noise"] = noise
    run("bf16_ref", pipe, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm, latents=noise.float(), **kw)
    run("bf16", pipeline(dtype=torch.bfloat16), prompt_embeds=pe.bfloat16(), prompt_attention_mask=pm,
        negative_prompt_embeds=ne.bfloat16(), negative_prompt_attention_mask=nm, **kw)

save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
for k, v in tensors.items():
    if k.endswith("/images"):
        print(k, list(v.shape), v.dtype)
