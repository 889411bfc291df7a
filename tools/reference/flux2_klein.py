"""diffusers' own Flux2KleinPipeline on a tiny FLUX.2 [klein] model: writes local-diffusers/flux2-klein/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/flux2_klein.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/flux2-klein/:
- transformer/: a tiny Flux2Transformer2DModel (2 double-stream and 2 single-stream blocks, 2 heads of 16, rotary axes
  4 / 4 / 4 / 4, 24-wide text, 16 input channels, no guidance embedding: FLUX.2 [klein]'s shape) with diffusers' random
  initialisation after torch.manual_seed(0), then seeded values for what that initialisation leaves at 1 (the q / k
  RMSNorm weights), so a missing norm shows;
- vae/: a tiny AutoencoderKLFlux2 (8 / 16 / 16 channels: 4x down, 4 latent channels, so 16 patchified channels) with
  seeded batch-norm running statistics, so the pipeline's (de)normalisation shows;
- scheduler/: a FlowMatchEulerDiscreteScheduler config with dynamic (exponential) shifting, as FLUX.1's: the pipeline
  passes its own mu (compute_empirical_mu), so only use_dynamic_shifting and the shift type matter;
- model_index.json: Flux2KleinPipeline with is_distilled false (the "base" checkpoints; the distilled ones ignore the
  guidance scale), no text encoder;
- expected.safetensors: Flux2KleinPipeline runs given prompt embeddings drawn here (the prompt encoder is checked on its
  own), every step's latents, the final latents (output_type "latent": de-normalised and unpatchified, as diffusers
  returns them) and the decoded images; the reference-image resize to a target area (Flux2ImageProcessor).
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-klein"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


config = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
              joint_attention_dim=24, timestep_guidance_channels=32, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4),
              guidance_embeds=False)
torch.manual_seed(0)
model = Flux2Transformer2DModel(**config).eval()
g = torch.Generator("cpu").manual_seed(20261128)
with torch.no_grad():
    for name, p in model.named_parameters():
        if ".norm_" in name:
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
save_model(model, f"{here}/transformer")
transformer = Flux2Transformer2DModel.from_pretrained(f"{here}/transformer").eval()

torch.manual_seed(0)
vae_model = AutoencoderKLFlux2(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                               up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                               norm_num_groups=4, sample_size=32).eval()
with torch.no_grad():
    vae_model.bn.running_mean.copy_(0.3 * torch.randn(16, generator=g))
    vae_model.bn.running_var.copy_(0.5 + torch.rand(16, generator=g))
save_model(vae_model, f"{here}/vae")
vae = AutoencoderKLFlux2.from_pretrained(f"{here}/vae").eval()

scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                    "invert_sigmas": False, "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000,
                    "shift": 3.0, "shift_terminal": None, "stochastic_sampling": False,
                    "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
                    "use_exponential_sigmas": False, "use_karras_sigmas": False}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "Flux2KleinPipeline", "_diffusers_version": "0.39.0", "is_distilled": False,
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "Flux2Transformer2DModel"],
               "vae": ["diffusers", "AutoencoderKLFlux2"]}, f, indent=2)
    f.write("\n")


def pipeline(is_distilled):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer,
                              is_distilled=is_distilled)


base, distilled = pipeline(False), pipeline(True)
out = {}
g = torch.Generator("cpu").manual_seed(20261129)
# Prompt embeddings as the encoder gives them ([B, max_sequence_length, 3 x hidden]; nothing masked afterwards): two
# prompts and two negative ones ("" in diffusers), 12 tokens each.
embeds = torch.randn(2, 12, 24, generator=g)
negatives = torch.randn(2, 12, 24, generator=g)
out["in.prompt_embeds"], out["in.negative_prompt_embeds"] = embeds, negatives

image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")  # 64 x 64
wide = image.resize((96, 72), Image.BICUBIC)  # an input image; its size is a multiple of 8 already
odd = wide.crop((3, 1, 93, 71))  # 90 x 70: floored to 88 x 64 and centre-cropped by the pipeline
out["in.wide"] = torch.from_numpy(np.array(wide))
out["in.odd"] = torch.from_numpy(np.array(odd))
cases = {
    # The distilled model: guidance_scale is ignored (no CFG).
    "t2i": (distilled, dict(prompt_embeds=embeds[:1], height=64, width=80, num_inference_steps=3, guidance_scale=4.0), 42),
    # The base model with CFG (a second transformer pass on the negative embeddings), two prompts x two images.
    "t2i_cfg": (base, dict(prompt_embeds=embeds, negative_prompt_embeds=negatives, height=48, width=64,
                           num_inference_steps=2, guidance_scale=3.5, num_images_per_prompt=2), 7),
    "t2i_sigmas": (distilled, dict(prompt_embeds=embeds[1:], height=32, width=64, sigmas=[1.0, 0.7, 0.45, 0.2]), 8),
    # A reference image (multi-reference editing): its latents join the sequence at t = 10; the output size is the
    # image's floored to a multiple of 8 (88 x 64, centre-cropped).
    "ref": (base, dict(image=odd, prompt_embeds=embeds[:1], negative_prompt_embeds=negatives[:1], num_inference_steps=3,
                       guidance_scale=4.0), 123),
    # Two reference images (t = 10 and 20) of different sizes, a given output size, two images per prompt.
    "ref_two": (distilled, dict(image=[image, wide], prompt_embeds=embeds[1:], height=48, width=48, num_inference_steps=2,
                                num_images_per_prompt=2), 99),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

# The pipeline's resize of a reference image above 1024 x 1024 pixels, at a small target area: LANCZOS to
# int(w x s) x int(h x s), s = sqrt(area / (w h)).
out["area.odd_4096"] = torch.from_numpy(np.array(Flux2ImageProcessor._resize_to_target_area(odd, 64 * 64)))
out["area.wide_3000"] = torch.from_numpy(np.array(Flux2ImageProcessor._resize_to_target_area(wide, 3000)))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
