"""diffusers' own StableDiffusionUpscalePipeline (stabilityai/stable-diffusion-x4-upscaler's pipeline) on a tiny upscaler
it draws in the real repo's structure, diffusers' UNet2DConditionModel forward with class embeddings, and diffusers'
parameter counts of the full-size x4 upscaler: writes local-diffusers/sd-upscale/.

Usage (see README.md for the environment; /tmp/reftf saved as README.md says, for the text encoder's count), from the
repository root:
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/sd_upscale.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sd-upscale/:
- model/: the tiny upscaler (model_index.json naming StableDiffusionUpscalePipeline with text_encoder / tokenizer null:
  no text encoder runs here), unet/ and vae/ drawn by diffusers' own constructors after torch.manual_seed (config.json
  by save_config, the weights as safetensors), scheduler/ (DDIMScheduler, the real repo's config) and
  low_res_scheduler/ (DDPMScheduler, the real repo's config);
- input.png (16 x 16) and input_nonsquare.png (22 x 13): the low-resolution images, cut from tiny-sd15's init_image.png;
- expected.safetensors: UNet forwards (the upscaler's class embedding; class_embed_type timestep / identity / projection /
  simple_projection on the same UNet with its class embedding redrawn) and pipeline runs given prompt embeddings;
- full-size/: the x4 upscaler's configs (as the real repo's, written from memory: see the README) and counts.json,
  diffusers' (and transformers') parameter and tensor counts of those configs, built with every parameter on `meta`.
"""
import json
import os
import subprocess
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_upscale import StableDiffusionUpscalePipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/sd-upscale"
os.makedirs(f"{here}/model", exist_ok=True)


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


# The real repo's structure at toy width: DownBlock2D first, three cross-attention levels whose first attention attends
# to the text (only_cross_attention per block), linear projections, 7 input channels (4 latent + 3 image), a class
# embedding of 1000 noise levels; a 3-level VAE (x4) with scaling factor 0.08333.
unet_config = dict(sample_size=32, in_channels=7, out_channels=4, layers_per_block=2, block_out_channels=[16, 16, 32, 32],
                   norm_num_groups=8, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                        "CrossAttnDownBlock2D"],
                   up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                   cross_attention_dim=32, attention_head_dim=4, use_linear_projection=True,
                   only_cross_attention=[True, True, True, False], num_class_embeds=1000)
vae_config = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 16, 32], layers_per_block=2,
                  down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3, norm_num_groups=8,
                  sample_size=64, scaling_factor=0.08333)
scheduler_config = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
                    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
low_res_config = {"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001,
                  "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_small"}


def model_index(text_encoder, tokenizer):
    return {"_class_name": "StableDiffusionUpscalePipeline", "_diffusers_version": "0.36.0",
            "feature_extractor": [None, None], "low_res_scheduler": ["diffusers", "DDPMScheduler"], "max_noise_level": 350,
            "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": text_encoder,
            "tokenizer": tokenizer, "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "watermarker": [None, None]}


write_json(f"{here}/model/model_index.json", model_index([None, None], [None, None]))
write_json(f"{here}/model/scheduler/scheduler_config.json", scheduler_config)
write_json(f"{here}/model/low_res_scheduler/scheduler_config.json", low_res_config)
for name, cls, config, seed in (("unet", UNet2DConditionModel, unet_config, 4), ("vae", AutoencoderKL, vae_config, 5)):
    torch.manual_seed(seed)
    model = cls(**config).eval()
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(f"{here}/model/{name}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              f"{here}/model/{name}/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})

unet = UNet2DConditionModel.from_pretrained(f"{here}/model", subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(f"{here}/model", subfolder="vae").eval()
pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                      low_res_scheduler=DDPMScheduler.from_pretrained(f"{here}/model", subfolder="low_res_scheduler"),
                                      scheduler=DDIMScheduler.from_pretrained(f"{here}/model", subfolder="scheduler"),
                                      safety_checker=None, feature_extractor=None, watermarker=None, max_noise_level=350)

source = Image.open(f"{root}/tiny-sd15/init_image.png").convert("RGB")
source.crop((20, 24, 36, 40)).save(f"{here}/input.png")
# 22 x 13: the pipeline's image processor (vae_scale_factor 4, bicubic) resizes it to 20 x 12, whose sides are not
# multiples of the UNet's 8 (upsample sizes are forwarded).
source.crop((5, 40, 27, 53)).save(f"{here}/input_nonsquare.png")
image = Image.open(f"{here}/input.png").convert("RGB")
nonsquare = Image.open(f"{here}/input_nonsquare.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261205)
out = {"in.prompt_embeds": torch.randn((1, 77, 32), generator=g),
       "in.negative_prompt_embeds": torch.randn((1, 77, 32), generator=g),
       "in.batch_prompt_embeds": torch.randn((2, 77, 32), generator=g),
       "in.batch_negative_prompt_embeds": torch.randn((2, 77, 32), generator=g)}
# Two images as one tensor in [0, 1]: the 16 x 16 input and its left-right mirror.
pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
out["in.batch_image"] = torch.stack([pixels, pixels.flip(-1)])

# UNet forwards: batch 2 at 12 x 20 (not multiples of 8), two timesteps, two noise levels.
out["unet.sample"] = torch.randn((2, 7, 12, 20), generator=g)
out["unet.encoder_hidden_states"] = torch.randn((2, 9, 32), generator=g)
out["unet.timestep"] = torch.tensor([999, 251])
out["unet.class_labels"] = torch.tensor([20, 350])
with torch.no_grad():
    out["unet.out"] = unet(out["unet.sample"], out["unet.timestep"], out["unet.encoder_hidden_states"],
                           class_labels=out["unet.class_labels"]).sample
# The other class embedding types on the same UNet: its weights, the class embedding redrawn by diffusers' constructor
# under torch.manual_seed(seed) (stored as in.TYPE.class_embedding.*), fed class labels drawn here.
temb = 4 * unet_config["block_out_channels"][0]
variants = {
    "timestep": (dict(class_embed_type="timestep"), torch.tensor([20.0, 350.0]), 40),
    "identity": (dict(class_embed_type="identity"), torch.randn((2, temb), generator=g), 41),
    "projection": (dict(class_embed_type="projection", projection_class_embeddings_input_dim=12), torch.randn((2, 12), generator=g), 42),
    "simple_projection": (dict(class_embed_type="simple_projection", projection_class_embeddings_input_dim=12),
                          torch.randn((2, 12), generator=g), 43),
}
base = unet.state_dict()
for kind, (extra, labels, seed) in variants.items():
    config = dict(unet_config, num_class_embeds=None, **extra)
    torch.manual_seed(seed)
    variant = UNet2DConditionModel(**config).eval()
    weights = variant.state_dict()
    for key in weights:
        if key.startswith("class_embedding."):
            out[f"in.{kind}.{key}"] = weights[key].clone()
        else:
            weights[key] = base[key]
    variant.load_state_dict(weights)
    out[f"in.{kind}.class_labels"] = labels
    with torch.no_grad():
        out[f"unet_{kind}.out"] = variant(out["unet.sample"], out["unet.timestep"], out["unet.encoder_hidden_states"],
                                          class_labels=labels).sample


def run(name, seed, image, **kw):
    def on_step(i, t, latents):
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        out[f"{name}.step{i}.latents"] = latents.clone()
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(image=image, **kw, output_type="latent", callback=on_step, callback_steps=1,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(image=image, **kw, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))


embeds = dict(prompt_embeds=out["in.prompt_embeds"])
negative = dict(negative_prompt_embeds=out["in.negative_prompt_embeds"])
# The defaults (guidance 9, noise level 20) over 5 steps, negative embeddings given.
run("default", 51, image, **embeds, **negative, num_inference_steps=5)
# Guidance 1: no classifier-free guidance (one UNet pass), noise level 50.
run("no_cfg", 52, image, **embeds, num_inference_steps=4, guidance_scale=1.0, noise_level=50)
# Two images per prompt (the image and its noise level repeated to the batch), guidance 6.
run("two", 53, image, **embeds, **negative, num_inference_steps=3, guidance_scale=6.0, num_images_per_prompt=2)
# A 22 x 13 image (resized to 20 x 12 by the bicubic image processor), noise level 100, DDIM's eta 0.7 (its step noise
# comes from the call's generator after the image noise and the latents).
run("nonsquare", 54, nonsquare, **embeds, **negative, num_inference_steps=4, noise_level=100, eta=0.7)
# Two prompts, two images (one tensor in [0, 1]), two images per prompt: diffusers repeats the prompt embeddings per
# prompt ([p0, p0, p1, p1]) but the images as a whole ([a, b, a, b]).
run("batch", 55, out["in.batch_image"], prompt_embeds=out["in.batch_prompt_embeds"],
    negative_prompt_embeds=out["in.batch_negative_prompt_embeds"], num_inference_steps=2, guidance_scale=4.0,
    num_images_per_prompt=2, noise_level=0)
save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors")

# Full size: the x4 upscaler's configs, and diffusers' counts of them with every parameter on `meta` (the text
# encoder's by transformers' own CLIPTextModel, in a child process with pyenv-transformers).
full = f"{here}/full-size"
x4_unet = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.8.0", "act_fn": "silu", "attention_head_dim": 8,
           "block_out_channels": [256, 512, 512, 1024], "center_input_sample": False, "cross_attention_dim": 1024,
           "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
           "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 7,
           "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
           "num_class_embeds": 1000, "only_cross_attention": [True, True, True, False], "out_channels": 4,
           "sample_size": 128, "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
           "use_linear_projection": True}
x4_vae = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.8.0", "act_fn": "silu", "block_out_channels": [128, 256, 512],
          "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"], "in_channels": 3,
          "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
          "scaling_factor": 0.08333, "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}
x4_text = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
           "hidden_act": "gelu", "hidden_size": 1024, "initializer_factor": 1.0, "initializer_range": 0.02,
           "intermediate_size": 4096, "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
           "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1, "projection_dim": 512,
           "torch_dtype": "float32", "vocab_size": 49408}
write_json(f"{full}/model_index.json", model_index(["transformers", "CLIPTextModel"], ["transformers", "CLIPTokenizer"]))
write_json(f"{full}/unet/config.json", x4_unet)
write_json(f"{full}/vae/config.json", x4_vae)
write_json(f"{full}/text_encoder/config.json", x4_text)
write_json(f"{full}/tokenizer/tokenizer_config.json", {"model_max_length": 77, "pad_token": "!", "tokenizer_class": "CLIPTokenizer"})
write_json(f"{full}/scheduler/scheduler_config.json", scheduler_config)
write_json(f"{full}/low_res_scheduler/scheduler_config.json", low_res_config)

meta_prelude = """
from torch import nn
_register = nn.Module.register_parameter
def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)
nn.Module.register_parameter = _register_on_meta
"""
counts_code = meta_prelude + """
import json, sys
from diffusers import AutoencoderKL, UNet2DConditionModel
full = sys.argv[1]
counts = {}
for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
    config = json.load(open(f"{full}/{name}/config.json"))
    model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    counts[name] = {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(model.state_dict())}
print(json.dumps(counts))
"""
text_code = meta_prelude + """
import json, sys
from transformers.models.clip.configuration_clip import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPTextModel
config = json.load(open(f"{sys.argv[1]}/text_encoder/config.json"))
model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
print(json.dumps({"text_encoder": {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(model.state_dict())}}))
"""
counts = json.loads(subprocess.run([sys.executable, "-c", counts_code, full], check=True, capture_output=True, text=True).stdout)
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
counts.update(json.loads(subprocess.run([sys.executable, "-c", text_code, full], check=True, capture_output=True, text=True,
                                        env=env).stdout))
write_json(f"{full}/counts.json", counts)
print(counts)
