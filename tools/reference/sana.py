"""diffusers' own SanaPipeline on a tiny Sana model: writes local-diffusers/sana/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sana/:
- transformer/: a tiny SanaTransformer2DModel (2 blocks, 2 linear-attention heads of 8, 2 cross-attention heads of 8,
  24-wide captions, 8 latent channels, sample_size 16 so that resolution binning uses ASPECT_RATIO_512_BIN) with
  diffusers' random initialisation after torch.manual_seed(0), then seeded values for the norm weights that
  initialisation leaves at 1 and for the biases it leaves at 0, so a missing one shows;
- vae/: a tiny AutoencoderDC (8 / 16 / 16 channels: 4x down, 8 latent channels; ResBlock, ResBlock, EfficientViTBlock
  with qkv multiscale 5; conv downsampling, interpolate upsampling, rms_norm / silu decoder: the layout of Sana's
  dc-ae-f32c32-sana-1.0) with scaling_factor 0.41407, as Sana's;
- scheduler/: Sana's DPMSolverMultistepScheduler config (flow sigmas, shift 3, flow_prediction);
- model_index.json: SanaPipeline without text encoder / tokenizer;
- expected.safetensors: SanaPipeline runs given prompt embeddings and masks drawn here (the text encoder is checked on
  its own): every step's latents (callback_on_step_end), the final latents and the images (output_type "pt"). Cases:
  cfg (guidance 4.5, two prompts with padded masks, 64x96, no binning, 5 steps), nocfg (guidance 1, two images per
  prompt, 4 steps), binning (a 200x120 request binned to 640x384 and resized / cropped back, 2 steps), euler
  (FlowMatchEulerDiscreteScheduler, shift 3, as diffusers' own Sana tests run, 3 steps).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

root = sys.argv[1]
here = f"{root}/local-diffusers/sana"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


g = torch.Generator("cpu").manual_seed(20261128)


def perturb(model):
    # Norm weights at 1 and biases at 0 would hide a missing norm scale or bias: give them seeded values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


torch.manual_seed(0)
model = SanaTransformer2DModel(patch_size=1, in_channels=8, out_channels=8, num_layers=2, num_attention_heads=2,
                               attention_head_dim=8, num_cross_attention_heads=2, cross_attention_head_dim=8,
                               cross_attention_dim=16, caption_channels=24, sample_size=16, mlp_ratio=2.5).eval()
perturb(model)
save_model(model, f"{here}/transformer")
transformer = SanaTransformer2DModel.from_pretrained(f"{here}/transformer").eval()

torch.manual_seed(0)
vae_model = AutoencoderDC(in_channels=3, latent_channels=8, attention_head_dim=4,
                          encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
                          decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
                          encoder_block_out_channels=(8, 16, 16), decoder_block_out_channels=(8, 16, 16),
                          encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
                          encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)),
                          downsample_block_type="Conv", upsample_block_type="interpolate",
                          decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407).eval()
perturb(vae_model)
save_model(vae_model, f"{here}/vae")
vae = AutoencoderDC.from_pretrained(f"{here}/vae").eval()

scheduler_config = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
                    "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995,
                    "euler_at_final": False, "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True,
                    "num_train_timesteps": 1000, "prediction_type": "flow_prediction", "sample_max_value": 1.0,
                    "solver_order": 2, "solver_type": "midpoint", "steps_offset": 0, "thresholding": False,
                    "timestep_spacing": "linspace", "use_flow_sigmas": True, "use_karras_sigmas": False,
                    "use_lu_lambdas": False, "variance_type": None}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "SanaPipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "SanaTransformer2DModel"], "vae": ["diffusers", "AutoencoderDC"]},
              f, indent=2, sort_keys=True)
    f.write("\n")

dpm = DPMSolverMultistepScheduler.from_config(scheduler_config)
pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=dpm)
pipe.set_progress_bar_config(disable=True)

tensors = {}
S = 12


def embeds(n, lengths):
    e = torch.randn(n, S, 24, generator=g)
    m = torch.zeros(n, S, dtype=torch.int64)
    for i, l in enumerate(lengths):
        m[i, :l] = 1
    return e, m


def run(name, pipeline, **kw):
    steps = []

    def on_step(p, i, t, cb):
        steps.append(cb["latents"].clone())
        return {}

    seed = kw.pop("seed")
    latents = pipeline(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                       callback_on_step_end=on_step, **kw).images
    images = pipeline(generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", **kw).images
    for i, s in enumerate(steps):
        tensors[f"{name}/step{i}"] = s
    tensors[f"{name}/latents"] = latents
    tensors[f"{name}/images"] = images
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            tensors[f"{name}/{k}"] = v


pe, pm = embeds(2, [9, 12])
ne, nm = embeds(2, [3, 5])
run("cfg", pipe, negative_prompt=None, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne, negative_prompt_attention_mask=nm,
    guidance_scale=4.5, num_inference_steps=5, height=64, width=96, use_resolution_binning=False, seed=7)
pe, pm = embeds(1, [7])
run("nocfg", pipe, prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=1.0, num_images_per_prompt=2,
    num_inference_steps=4, height=96, width=64, use_resolution_binning=False, seed=8)
pe, pm = embeds(1, [10])
ne, nm = embeds(1, [4])
run("binning", pipe, negative_prompt=None, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne, negative_prompt_attention_mask=nm,
    guidance_scale=3.0, num_inference_steps=2, height=200, width=120, seed=9)
# The binned case's decode and resize back in float64 (the VAE cast to float64, the run's final float32 latents): the
# float32 bilinear resize of torch 1.13 and of PyTorch 2.x / libtorch round differently (see README.md).
vae64 = AutoencoderDC.from_pretrained(f"{here}/vae").eval().double()
with torch.no_grad():
    decoded64 = vae64.decode(tensors["binning/latents"].double() / vae64.config.scaling_factor, return_dict=False)[0]
    resized64 = pipe.image_processor.resize_and_crop_tensor(decoded64, 120, 200)
    tensors["binning/images_float64"] = pipe.image_processor.postprocess(resized64, output_type="pt")
euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
pipe_euler = SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=euler)
pipe_euler.set_progress_bar_config(disable=True)
pe, pm = embeds(1, [12])
ne, nm = embeds(1, [2])
run("euler", pipe_euler, negative_prompt=None, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
    negative_prompt_attention_mask=nm, guidance_scale=5.0, num_inference_steps=3, height=64, width=64,
    use_resolution_binning=False, seed=10)
with open(f"{here}/euler_scheduler_config.json", "w") as f:
    json.dump({"_class_name": "FlowMatchEulerDiscreteScheduler",
               **{k: v for k, v in euler.config.items() if not k.startswith("_")}}, f, indent=2, sort_keys=True)
    f.write("\n")

save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
