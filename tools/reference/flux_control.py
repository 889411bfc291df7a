"""diffusers' own FluxControlPipeline, FluxControlImg2ImgPipeline and FluxControlInpaintPipeline (FLUX.1-Canny-dev /
Depth-dev's structural conditioning) on a tiny transformer drawn here.

Usage (see README.md for the environment), from the repository root:
    python3 tools/reference/flux_control.py tests/DiffusersSharp.Tests/Fixtures

Writes local-diffusers/flux-control/{transformer/, expected.safetensors}. The transformer is FluxTransformer2DModel's
constructor under torch.manual_seed(13) with flux_fill_kontext.py's tiny sizes, in_channels 128 (the packed noise and
the packed control-image latents, 64 each) and out_channels 64; the scheduler config is local-diffusers/flux's
(FLUX.1-dev's, which Canny-dev and Depth-dev share), the VAE and images tiny-sd3's, the control image
local-diffusers/controlnet's edge map. Prompt embeddings are drawn (transformers does not run here).
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_control import FluxControlPipeline
from diffusers.pipelines.flux.pipeline_flux_control_img2img import FluxControlImg2ImgPipeline
from diffusers.pipelines.flux.pipeline_flux_control_inpaint import FluxControlInpaintPipeline

root = sys.argv[1]
TINY = dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
            pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6), patch_size=1)
folder = f"{root}/local-diffusers/flux-control"

torch.manual_seed(13)
model = FluxTransformer2DModel(**TINY, in_channels=128, out_channels=64)
os.makedirs(f"{folder}/transformer", exist_ok=True)
model.save_config(f"{folder}/transformer")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/transformer/diffusion_pytorch_model.safetensors")
transformer = FluxTransformer2DModel.from_pretrained(f"{folder}/transformer").eval()  # as loaded from the saved files

vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
parts = dict(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None, text_encoder_2=None,
             tokenizer_2=None)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
control = Image.open(f"{root}/local-diffusers/controlnet/control.png").convert("RGB")  # 80 x 64: resized to the output

g = torch.Generator("cpu").manual_seed(20261129)
embeds, pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
out = {"in.prompt_embeds": embeds, "in.pooled": pooled}
prompt = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)


def run(pipe, name, seed, args):
    def on_step_end(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent": the packed latents; "np": the decoded image, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)


t2i = FluxControlPipeline(**parts)
run(t2i, "t2i", 42, dict(**prompt, control_image=control, height=64, width=64, num_inference_steps=4))
# Two images per prompt: the control image is repeated to the batch before the VAE samples it (one draw for both).
run(t2i, "t2i_two", 7, dict(**prompt, control_image=control, height=48, width=64, num_inference_steps=3,
                            guidance_scale=10.0, num_images_per_prompt=2))
img2img = FluxControlImg2ImgPipeline(**parts)
run(img2img, "img2img", 123, dict(**prompt, image=image, control_image=control, height=64, width=64, num_inference_steps=6))
run(img2img, "img2img_strength", 5, dict(**prompt, image=image, control_image=control, height=48, width=64,
                                         num_inference_steps=8, strength=0.9, guidance_scale=30.0))
inpaint = FluxControlInpaintPipeline(**parts)
run(inpaint, "inpaint", 77, dict(**prompt, image=image, mask_image=mask, control_image=control, height=64, width=64,
                                 num_inference_steps=6))
run(inpaint, "inpaint_full", 78, dict(**prompt, image=image, mask_image=mask, control_image=control, height=64, width=64,
                                      num_inference_steps=4, strength=1.0, guidance_scale=30.0))
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{folder}/expected.safetensors")
print(f"wrote {len(out)} tensors to {folder}/expected.safetensors")
