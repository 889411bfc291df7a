"""diffusers' own FluxFillPipeline and FluxKontextPipeline on tiny transformers drawn here.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/flux_fill_kontext.py tests/DiffusersSharp.Tests/Fixtures

Writes local-diffusers/flux-fill/{transformer/, expected.safetensors} and
local-diffusers/flux-kontext/{transformer/, kontext_input.png, expected.safetensors}. The transformers are
FluxTransformer2DModel's constructor under torch.manual_seed (Fill: in_channels 384, out_channels 64; Kontext: the
standard 64); the scheduler config is local-diffusers/flux's (FLUX.1-dev's, which Fill-dev and Kontext-dev share), the
VAE and images tiny-sd3's. Prompt embeddings are drawn (transformers does not run here), so CLIP / T5 are not checked.
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_fill import FluxFillPipeline
from diffusers.pipelines.flux.pipeline_flux_kontext import FluxKontextPipeline

root = sys.argv[1]
TINY = dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
            pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6), patch_size=1)


def tiny_transformer(folder, seed, **config):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**TINY, **config)
    # save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")
    return FluxTransformer2DModel.from_pretrained(folder).eval()  # as loaded from the saved files


vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
no_text = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")


def run(pipe, out, name, seed, args):
    def on_step_end(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent": the packed latents [1, tokens, 64]; "np": the decoded image, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)


def save(out, folder):
    save_file({k: v.contiguous().float() for k, v in out.items()}, f"{folder}/expected.safetensors")
    print(f"wrote {len(out)} tensors to {folder}/expected.safetensors")


# Prompt embeddings: 16 text tokens, from one generator (the negative pair for Kontext's true CFG).
g = torch.Generator("cpu").manual_seed(20261128)
embeds, pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
neg_embeds, neg_pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
inputs = {"in.prompt_embeds": embeds, "in.pooled": pooled, "in.neg_prompt_embeds": neg_embeds, "in.neg_pooled": neg_pooled}
prompt = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)

# Fill: 16 noise + 16 masked-image channels and the 8 x 8 pixel mask per latent, each packed 2 x 2 (64 + 64 + 256).
fill_dir = f"{root}/local-diffusers/flux-fill"
fill = FluxFillPipeline(scheduler=scheduler, vae=vae, transformer=tiny_transformer(f"{fill_dir}/transformer", 11,
                        in_channels=384, out_channels=64), **no_text)
out = dict(inputs)
run(fill, out, "fill", 42, dict(**prompt, image=image, mask_image=mask, height=64, width=64, num_inference_steps=4))
run(fill, out, "fill_strength", 123, dict(**prompt, image=image, mask_image=mask, height=48, width=64, strength=0.75,
                                          num_inference_steps=8, guidance_scale=10.0))
save(out, fill_dir)

# Kontext: the input image's latents (VAE mode, no draw) appended as tokens with ids (1, row, column).
kontext_dir = f"{root}/local-diffusers/flux-kontext"
kontext = FluxKontextPipeline(scheduler=scheduler, vae=vae, transformer=tiny_transformer(f"{kontext_dir}/transformer", 12),
                              **no_text)
# A 64 x 40 input: get_default_height_width floors it to 64 x 32 (aspect 2), so auto-resize picks 1456 x 720 (the
# unfloored aspect 1.6 would pick 1328 x 800), and the whole 64 x 40 image is Lanczos-resized to that.
wide = image.crop((0, 12, 64, 52))
wide.save(f"{kontext_dir}/kontext_input.png")
wide = Image.open(f"{kontext_dir}/kontext_input.png").convert("RGB")
out = dict(inputs)
run(kontext, out, "kontext", 42, dict(**prompt, image=wide, height=48, width=64, max_area=48 * 64, num_inference_steps=3))
run(kontext, out, "kontext_truecfg", 7, dict(**prompt, image=image, max_area=64 * 64, num_inference_steps=3,
                                             guidance_scale=2.5, true_cfg_scale=4.0, negative_prompt_embeds=neg_embeds,
                                             negative_pooled_prompt_embeds=neg_pooled, _auto_resize=False))
# max_area with a size that is no multiple of 16 (50 x 70 at 4000 pixels: 48 x 64), and the input without auto-resize
# (64 x 40 floored to 64 x 32, Lanczos-resized).
run(kontext, out, "kontext_area", 5, dict(**prompt, image=wide, height=50, width=70, max_area=4000,
                                          num_inference_steps=2, _auto_resize=False))
save(out, kontext_dir)
