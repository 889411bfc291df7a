"""diffusers' own Z-Image transformer and pipelines on a tiny Z-Image model: writes local-diffusers/z-image/.

Usage (see README.md for the environment):
    python3 tools/reference/z_image.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/z-image/:
- transformer/: a tiny ZImageTransformer2DModel (config below: the real structure, two noise-refiner and two
  context-refiner blocks, two main blocks, three RoPE axes) with diffusers' own random initialisation after
  torch.manual_seed(0), then seeded values for what that initialisation leaves constant or undefined (below);
- scheduler/, scheduler-dynamic/: FlowMatchEulerDiscreteScheduler configs, Z-Image-Turbo's (static shift 3) and one
  with dynamic shifting (so the pipeline's mu is used);
- expected.safetensors: one transformer forward and ZImagePipeline / ZImageImg2ImgPipeline runs, given prompt embeddings
  drawn here (transformers does not run in this environment, so Qwen3 is not part of this check). The VAE is
  tiny-sd3's (16 latent channels, scaling and shift factors, 8x: Z-Image's Flux-style VAE in small);
- counts.json: state-dict tensor and element counts of the full-size Z-Image-Turbo transformer as diffusers builds it,
  without memory (each parameter moved to `meta` as it is registered, as controlnet_counts.py does; Linear's random
  initialisation skipped, which changes no shape).
"""
import json
import os
import sys

import torch
from torch import nn
from PIL import Image
from safetensors.torch import save_file

import z_image_torch_compat
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
from diffusers.pipelines.z_image.pipeline_z_image import ZImagePipeline
from diffusers.pipelines.z_image.pipeline_z_image_img2img import ZImageImg2ImgPipeline

# What transformer_z_image.py needs beyond torch 1.13 (no computation changed): z_image_torch_compat.py.
z_image_torch_compat.install()

root = sys.argv[1]
here = f"{root}/local-diffusers/z-image"

config = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=2,
              n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=48, rope_theta=256.0, t_scale=1000.0,
              axes_dims=[8, 12, 12], axes_lens=[256, 32, 32])
torch.manual_seed(0)
model = ZImageTransformer2DModel(**config).eval()
# diffusers leaves x_pad_token / cap_pad_token uninitialised (torch.empty) and every RMSNorm weight at 1: seeded
# values make them deterministic and make a swapped norm or pad token show in the outputs.
g = torch.Generator("cpu").manual_seed(20261201)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("pad_token"):
            p.copy_(torch.randn(p.shape, generator=g))
        elif "norm" in name.split(".")[-2] or name == "cap_embedder.0.weight":
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
# save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
model.save_config(f"{here}/transformer")
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{here}/transformer/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
transformer = ZImageTransformer2DModel.from_pretrained(f"{here}/transformer").eval()

for folder, scheduler_config in (
        ("scheduler", {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                       "shift": 3.0, "use_dynamic_shifting": False}),
        ("scheduler-dynamic", {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256,
                               "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                               "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True})):
    os.makedirs(f"{here}/{folder}", exist_ok=True)
    with open(f"{here}/{folder}/scheduler_config.json", "w") as f:
        json.dump(scheduler_config, f, indent=2, sort_keys=True)
        f.write("\n")

vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()


def pipeline(cls, scheduler_folder="scheduler"):
    # A fresh scheduler per pipeline: the pipelines set scheduler.sigma_min = 0.0 on it.
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder=scheduler_folder)
    return cls(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)


t2i, t2i_dynamic, i2i = pipeline(ZImagePipeline), pipeline(ZImagePipeline, "scheduler-dynamic"), pipeline(ZImageImg2ImgPipeline)
out = {}

# Inputs, from one generator: two prompts' embeddings (7 and 40 tokens, as Qwen3's unmasked tokens of each prompt), two
# negative ones (3 and 12 tokens), then the forward's inputs.
g = torch.Generator("cpu").manual_seed(20261202)
embeds = [torch.randn(7, 48, generator=g), torch.randn(40, 48, generator=g)]
negatives = [torch.randn(3, 48, generator=g), torch.randn(12, 48, generator=g)]
for i in range(2):
    out[f"in.prompt_embeds.{i}"], out[f"in.negative_prompt_embeds.{i}"] = embeds[i], negatives[i]

# One forward: two samples, an 8 x 12 latent (24 tokens, padded to 32) and a 16 x 16 one (64 tokens), captions of 7 and
# 40 tokens (padded to 32 and 64), two timesteps.
x = [torch.randn(16, 1, 8, 12, generator=g), torch.randn(16, 1, 16, 16, generator=g)]
caps = [torch.randn(7, 48, generator=g), torch.randn(40, 48, generator=g)]
t = torch.tensor([0.25, 0.875])
with torch.no_grad():
    forward = transformer(x, t, caps, return_dict=False)[0]
for i in range(2):
    out[f"tf.x.{i}"], out[f"tf.cap_feats.{i}"], out[f"tf.out.{i}"] = x[i], caps[i], forward[i]
out["tf.t"] = t

image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
cropped = image.crop((0, 0, 70, 50))  # 70 x 50: the processor resizes it (Lanczos) to 64 x 48
one = dict(prompt_embeds=embeds[:1])
one_cfg = dict(prompt_embeds=embeds[:1], negative_prompt_embeds=negatives[:1])
cases = {
    # Z-Image-Turbo's way: guidance 0 (no CFG), few steps.
    "t2i": (t2i, dict(**one, height=64, width=64, num_inference_steps=4, guidance_scale=0.0), 42),
    "t2i_cfg": (t2i, dict(**one_cfg, height=64, width=64, num_inference_steps=4, guidance_scale=4.0), 7),
    "t2i_cfg_norm": (t2i, dict(**one_cfg, height=64, width=64, num_inference_steps=3, guidance_scale=4.0,
                               cfg_normalization=True), 11),
    # Shift 3 over 6 steps: t_norm = 1 - sigma is 0, .077, .18, .33, .57, 1, so steps 3 to 5 run without CFG.
    "t2i_cfg_trunc": (t2i, dict(**one_cfg, height=64, width=64, num_inference_steps=6, guidance_scale=4.0,
                                cfg_truncation=0.3), 13),
    # Two prompts of different lengths x two images each, with CFG: eight samples of four caption lengths per forward.
    "t2i_two": (t2i, dict(prompt_embeds=embeds, negative_prompt_embeds=negatives, height=32, width=48,
                          num_inference_steps=2, guidance_scale=3.0, num_images_per_prompt=2), 123456),
    "t2i_wide": (t2i, dict(**one, height=48, width=80, num_inference_steps=3, guidance_scale=0.0), 5),
    "t2i_dynamic": (t2i_dynamic, dict(**one, height=64, width=96, num_inference_steps=3, guidance_scale=0.0), 6),
    "t2i_sigmas": (t2i, dict(**one, height=64, width=64, sigmas=[1.0, 0.7, 0.4, 0.1], guidance_scale=0.0), 8),
    "i2i": (i2i, dict(**one, image=image, strength=0.6, num_inference_steps=5, guidance_scale=0.0), 123),
    "i2i_cfg": (i2i, dict(**one_cfg, image=cropped, strength=0.85, num_inference_steps=4, guidance_scale=3.0), 99),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent" gives the latents [B, 16, H/8, W/8]; "np" the decoded images, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")

# Z-Image-Turbo's transformer/config.json (Tongyi-MAI/Z-Image-Turbo), built without memory.
turbo = dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
             n_heads=30, n_kv_heads=30, norm_eps=1e-05, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
             t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
full = ZImageTransformer2DModel(**turbo)
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
state = full.state_dict()
counts = {"transformer.z-image-turbo": {"config": turbo, "tensors": len(state),
                                        "elements": sum(v.numel() for v in state.values())}}
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"full-size transformer: {counts['transformer.z-image-turbo']['tensors']} tensors, "
      f"{counts['transformer.z-image-turbo']['elements']:,} elements")
