"""diffusers' own PixArt transformer and pipelines on tiny PixArt models: writes local-diffusers/pixart/.

Usage (see README.md for the environment):
    python3 tools/reference/pixart.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/pixart/:
- sigma/transformer, alpha/transformer: tiny PixArtTransformer2DModels (configs below) with diffusers' own random
  initialisation after torch.manual_seed (config.json by save_config, the weights as safetensors);
- scheduler/scheduler_config.json: a DPMSolverMultistepScheduler config of PixArt's shape;
- expected.safetensors: transformer forwards and pipeline runs (PixArtSigmaPipeline, PixArtAlphaPipeline) given prompt
  embeddings and attention masks drawn here (transformers does not run in this environment, so T5 is not part of this
  check). The VAE is tiny-sdxl's (4 latent channels, scaling factor 0.13025, like PixArt's SDXL VAE).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       PixArtTransformer2DModel)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import PixArtAlphaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import PixArtSigmaPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/pixart"

# Sigma: like PixArt-Sigma-XL-2 (no micro-conditions, interpolation_scale 2) at sample_size 32 (the 256 aspect-ratio bins).
sigma_config = dict(num_attention_heads=3, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
                    cross_attention_dim=48, caption_channels=96, sample_size=32, patch_size=2, interpolation_scale=2,
                    use_additional_conditions=False)
# Alpha: like PixArt-XL-2-1024-MS (sample_size 128, so micro-conditions on, interpolation_scale 2 by default).
alpha_config = dict(num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=8, num_layers=2,
                    cross_attention_dim=48, caption_channels=96, sample_size=128, patch_size=2)
scheduler_config = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
                    "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995,
                    "euler_at_final": False, "lower_order_final": True, "num_train_timesteps": 1000,
                    "prediction_type": "epsilon", "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint",
                    "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
                    "use_karras_sigmas": False, "variance_type": None}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")

models = {}
for name, config, seed in (("sigma", sigma_config, 0), ("alpha", alpha_config, 1)):
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**config).eval()
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(f"{here}/{name}/transformer")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              f"{here}/{name}/transformer/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    models[name] = PixArtTransformer2DModel.from_pretrained(f"{here}/{name}/transformer").eval()

vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sdxl/model", subfolder="vae").eval()
scheduler = DPMSolverMultistepScheduler.from_pretrained(here, subfolder="scheduler")
sigma = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=models["sigma"], scheduler=scheduler)
alpha = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=models["alpha"], scheduler=scheduler)
# Swapped schedulers, as users write it: pipe.scheduler = X.from_config(pipe.scheduler.config).
sigma_euler_a = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=models["sigma"], scheduler=scheduler)
sigma_euler_a.scheduler = EulerAncestralDiscreteScheduler.from_config(sigma_euler_a.scheduler.config)
sigma_ddim = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=models["sigma"], scheduler=scheduler)
# (clip_sample off: the random tiny transformer's predictions are in the hundreds, so clipped latents of magnitude 1 would
# be left with the float32 rounding of those terms.)
sigma_ddim.scheduler = DDIMScheduler.from_config(sigma_ddim.scheduler.config, clip_sample=False)
out = {}

# Inputs, from one generator: prompt embeddings (12 tokens, 7 kept) and negative ones (3 kept), then the forwards'.
g = torch.Generator("cpu").manual_seed(20261128)
embeds, neg_embeds = torch.randn(1, 12, 96, generator=g), torch.randn(1, 12, 96, generator=g)
mask = torch.tensor([[1] * 7 + [0] * 5])
neg_mask = torch.tensor([[1] * 3 + [0] * 9])
out.update({"in.prompt_embeds": embeds, "in.prompt_attention_mask": mask, "in.negative_prompt_embeds": neg_embeds,
            "in.negative_prompt_attention_mask": neg_mask})

# Forwards: batch 2, a 8 x 12 latent (4 x 6 tokens), two timesteps, per-sample masks.
hidden, text = torch.randn(2, 4, 8, 12, generator=g), torch.randn(2, 12, 96, generator=g)
fmask = torch.tensor([[1] * 12, [1] * 5 + [0] * 7])
timestep = torch.tensor([999, 250])
resolution, aspect = torch.tensor([[64.0, 96.0], [64.0, 96.0]]), torch.tensor([[64.0 / 96.0], [64.0 / 96.0]])
with torch.no_grad():
    out["tf_sigma.out"] = models["sigma"](hidden, encoder_hidden_states=text, timestep=timestep,
                                          encoder_attention_mask=fmask, return_dict=False)[0]
    out["tf_alpha.out"] = models["alpha"](hidden, encoder_hidden_states=text, timestep=timestep,
                                          encoder_attention_mask=fmask,
                                          added_cond_kwargs={"resolution": resolution, "aspect_ratio": aspect},
                                          return_dict=False)[0]
out.update({"tf.hidden_states": hidden, "tf.encoder_hidden_states": text, "tf.encoder_attention_mask": fmask,
            "tf.timestep": timestep, "tf.resolution": resolution, "tf.aspect_ratio": aspect})

prompt = dict(prompt_embeds=embeds, prompt_attention_mask=mask)
negative = dict(negative_prompt=None, negative_prompt_embeds=neg_embeds, negative_prompt_attention_mask=neg_mask)
cases = {
    "t2i": (sigma, dict(**prompt, **negative, height=64, width=64, num_inference_steps=5, guidance_scale=4.5,
                        use_resolution_binning=False), 42),
    "t2i_nocfg": (sigma, dict(**prompt, height=48, width=64, num_inference_steps=4, guidance_scale=1.0,
                              use_resolution_binning=False), 7),
    "t2i_two": (sigma, dict(**prompt, **negative, height=64, width=48, num_inference_steps=3, guidance_scale=3.0,
                            num_images_per_prompt=2, use_resolution_binning=False), 123456),
    "alpha_t2i": (alpha, dict(**prompt, **negative, height=48, width=64, num_inference_steps=4, guidance_scale=4.5,
                              use_resolution_binning=False), 99),
    # Resolution binning (diffusers' default) at sample_size 32: 200 x 120 (ratio 1.667) runs at the 320 x 192 bin and
    # the image is resized (bilinear) to cover 200 x 120 and center-cropped.
    "t2i_binned": (sigma, dict(**prompt, **negative, height=200, width=120, num_inference_steps=3, guidance_scale=4.5), 11),
    # EulerAncestralDiscreteScheduler.from_config(DPM-Solver++ config): its step noise comes from the call's generator.
    "t2i_euler_a": (sigma_euler_a, dict(**prompt, **negative, height=64, width=48, num_inference_steps=4, guidance_scale=4.5,
                                        use_resolution_binning=False), 5),
    # DDIMScheduler.from_config(..., clip_sample=False) with eta 0.7: prepare_extra_step_kwargs passes eta (and the generator) to its step.
    "t2i_ddim_eta": (sigma_ddim, dict(**prompt, **negative, height=48, width=64, num_inference_steps=4, guidance_scale=4.5,
                                      eta=0.7, use_resolution_binning=False), 6),
}
for name, (pipe, args, seed) in cases.items():
    def on_step(i, t, latents, name=name):
        out[f"{name}.step{i}.latents"] = latents.clone()
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback=on_step, callback_steps=1,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
