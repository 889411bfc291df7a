"""diffusers' own StableDiffusionLatentUpscalePipeline (stabilityai/sd-x2-latent-upscaler's pipeline) on a tiny K-UNet
it draws in the real repo's structure, and diffusers' UNet2DConditionModel forward of that K-UNet: writes
local-diffusers/sd-latent-upscale/.

Usage (see README.md for the environment), from the repository root:
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/sd_latent_upscale.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sd-latent-upscale/:
- model/: model_index.json (StableDiffusionLatentUpscalePipeline; text_encoder / tokenizer null: no text encoder runs
  here; the VAE is tiny-sd15's, named in the README), unet/ (the K-UNet, drawn by diffusers' constructor after
  torch.manual_seed(6): config.json by save_config, weights as safetensors), scheduler/ (EulerDiscreteScheduler with
  prediction_type "sample", as the real repo's);
- expected.safetensors: one K-UNet forward and pipeline runs given prompt and pooled embeddings;
- full-size/: the real repo's configs (written from memory: see the README) and counts.json, diffusers' (and
  transformers') parameter and tensor counts of them built with every parameter on `meta` (/tmp/reftf saved as README.md
  says, for the text encoder's count).
"""
import json
import os
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, numpy 2 promotion; see that file)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_latent_upscale import StableDiffusionLatentUpscalePipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/sd-latent-upscale"
os.makedirs(f"{here}/model", exist_ok=True)


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


# The real repo's K-UNet structure (diffusers' convert_k_upscaler_to_diffusers.py) at toy size, three levels: K-diffusion
# blocks (KDownBlock2D, then cross-attention ones; the deepest self-attends too), no mid block, fourier time embedding of
# 2 x 32 = 64 (the deepest channels: the first up block is diffusers' "first" one, the second a "middle" one), gelu, 1 x 1
# conv_in / conv_out, no output norm, 8 input channels (latents + image latents), 5 out (+ variance), time_cond_proj_dim
# 128 + 32 (the noise-level embedding and the pooled text of width 32).
unet_config = dict(act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 64, 64],
                   layers_per_block=2, time_cond_proj_dim=160, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=32,
                   down_block_types=["KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"],
                   in_channels=8, mid_block_type=None, only_cross_attention=False, out_channels=5,
                   resnet_time_scale_shift="scale_shift", time_embedding_type="fourier", timestep_post_act="gelu",
                   up_block_types=["KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"], sample_size=32)
scheduler_config = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "sample", "trained_betas": None}
write_json(f"{here}/model/model_index.json", {
    "_class_name": "StableDiffusionLatentUpscalePipeline", "_diffusers_version": "0.36.0",
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": [None, None], "tokenizer": [None, None],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
write_json(f"{here}/model/scheduler/scheduler_config.json", scheduler_config)
torch.manual_seed(6)
model = UNet2DConditionModel(**unet_config).eval()
# save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
model.save_config(f"{here}/model/unet")
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{here}/model/unet/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})

unet = UNet2DConditionModel.from_pretrained(f"{here}/model", subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd15/model", subfolder="vae").eval()
scheduler = EulerDiscreteScheduler.from_pretrained(f"{here}/model", subfolder="scheduler")
pipe = StableDiffusionLatentUpscalePipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler)

g = torch.Generator("cpu").manual_seed(20261206)
out = {"in.prompt_embeds": torch.randn((1, 77, 32), generator=g), "in.pooled_prompt_embeds": torch.randn((1, 32), generator=g),
       "in.negative_prompt_embeds": torch.randn((1, 77, 32), generator=g),
       "in.negative_pooled_prompt_embeds": torch.randn((1, 32), generator=g),
       "in.latents_image": torch.randn((1, 4, 8, 8), generator=g),
       "in.batch_prompt_embeds": torch.randn((2, 77, 32), generator=g), "in.batch_pooled_prompt_embeds": torch.randn((2, 32), generator=g),
       "in.batch_latents_image": torch.randn((2, 4, 4, 8), generator=g)}

# One K-UNet forward: batch 2 at 8 x 16 (the deepest level 2 x 4), two noise levels as the pipeline passes them (log(sigma) / 4), a timestep_cond.
out["unet.sample"] = torch.randn((2, 8, 8, 16), generator=g)
out["unet.encoder_hidden_states"] = torch.randn((2, 7, 32), generator=g)
out["unet.timestep"] = torch.tensor([0.6, -0.4])
out["unet.timestep_cond"] = torch.randn((2, 160), generator=g)
with torch.no_grad():
    out["unet.out"] = unet(out["unet.sample"], out["unet.timestep"], out["unet.encoder_hidden_states"],
                           timestep_cond=out["unet.timestep_cond"]).sample


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


embeds = dict(prompt_embeds=out["in.prompt_embeds"], pooled_prompt_embeds=out["in.pooled_prompt_embeds"])
negative = dict(negative_prompt_embeds=out["in.negative_prompt_embeds"],
                negative_pooled_prompt_embeds=out["in.negative_pooled_prompt_embeds"])
# Latents in (an SD pipeline's output_type="latent"), the defaults (guidance 9) over 4 steps, negative embeddings given.
run("latents", 61, out["in.latents_image"], **embeds, **negative, num_inference_steps=4)
# An image in: encoded by the VAE (a posterior sample from the call's generator, times scaling_factor) before the
# latents are drawn; guidance 1 (no classifier-free guidance), 3 steps.
image = Image.open(f"{root}/tiny-sd15/init_image.png").convert("RGB")
run("image", 62, image, **embeds, num_inference_steps=3, guidance_scale=1.0)
# Two prompts with two latent images of 4 x 8, guidance 5, 2 steps.
run("batch", 63, out["in.batch_latents_image"], prompt_embeds=out["in.batch_prompt_embeds"],
    pooled_prompt_embeds=out["in.batch_pooled_prompt_embeds"],
    negative_prompt_embeds=torch.zeros((2, 77, 32)), negative_pooled_prompt_embeds=torch.zeros((2, 32)),
    num_inference_steps=2, guidance_scale=5.0)
save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors")

# Full size: stabilityai/sd-x2-latent-upscaler's configs as diffusers' convert_k_upscaler_to_diffusers.py makes them from
# the k-diffusion upscaler's config (channels [384, 384, 768, 768], depths 4, mapping_cond_dim 896, cross_cond_dim 768,
# has_variance), SD's VAE and CLIP ViT-L/14, written from memory, and diffusers' (and transformers') counts of them with
# every parameter on `meta`.
import subprocess  # noqa: E402

full = f"{here}/full-size"
k_unet = dict(unet_config, _class_name="UNet2DConditionModel", _diffusers_version="0.13.0.dev0", attention_head_dim=64,
              block_out_channels=[384, 384, 768, 768], layers_per_block=4, time_cond_proj_dim=896, cross_attention_dim=768,
              down_block_types=["KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"],
              up_block_types=["KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"], sample_size=96)
sd_vae = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.8.0", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
          "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4}
clip_l = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
          "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02,
          "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
          "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
          "vocab_size": 49408}
write_json(f"{full}/model_index.json", {
    "_class_name": "StableDiffusionLatentUpscalePipeline", "_diffusers_version": "0.13.0.dev0",
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
write_json(f"{full}/unet/config.json", k_unet)
write_json(f"{full}/vae/config.json", sd_vae)
write_json(f"{full}/text_encoder/config.json", clip_l)
write_json(f"{full}/tokenizer/tokenizer_config.json", {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"})
write_json(f"{full}/scheduler/scheduler_config.json", scheduler_config)

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
