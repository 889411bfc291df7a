"""diffusers' own Flux pipelines on the tiny Flux model: writes local-diffusers/flux/expected.safetensors.

Usage (see README.md for the environment):
    python3 tools/reference/flux.py tests/DiffusersSharp.Tests/Fixtures

Inputs: local-diffusers/flux/{transformer,scheduler} (a 2 + 2 block FluxTransformer2DModel with random weights and
FLUX.1-dev's scheduler config) and tiny-sd3's VAE and images. Prompt embeddings are drawn here (transformers does not
run in this environment), so CLIP / T5 are not part of this check.
"""
import sys

import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux_img2img import FluxImg2ImgPipeline
from diffusers.pipelines.flux.pipeline_flux_inpaint import FluxInpaintPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux"
transformer = FluxTransformer2DModel.from_pretrained(here, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
parts = dict(scheduler=scheduler, vae=vae, transformer=transformer,
             text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
t2i, i2i, inpaint = FluxPipeline(**parts), FluxImg2ImgPipeline(**parts), FluxInpaintPipeline(**parts)
out = {}

# Inputs, from one generator: prompt embeddings (16 text tokens), then one transformer forward's.
g = torch.Generator("cpu").manual_seed(20261127)
embeds, pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
neg_embeds, neg_pooled = torch.randn(1, 16, 96, generator=g), torch.randn(1, 32, generator=g)
out.update({"in.prompt_embeds": embeds, "in.pooled": pooled, "in.neg_prompt_embeds": neg_embeds, "in.neg_pooled": neg_pooled})

# One forward: batch 2, a 4 x 5 token latent (8 x 10 unpacked), two timesteps and two guidance values.
hidden, text, pool = torch.randn(2, 20, 64, generator=g), torch.randn(2, 16, 96, generator=g), torch.randn(2, 32, generator=g)
timestep, guidance = torch.tensor([1.0, 0.3125]), torch.tensor([3.5, 7.0])
img_ids, txt_ids = FluxPipeline._prepare_latent_image_ids(1, 4, 5, "cpu", torch.float32), torch.zeros(16, 3)
with torch.no_grad():
    forward = transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pool, timestep=timestep,
                          img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
out.update({"tf.hidden_states": hidden, "tf.encoder_hidden_states": text, "tf.pooled": pool, "tf.timestep": timestep,
            "tf.guidance": guidance, "tf.img_ids": img_ids, "tf.txt_ids": txt_ids, "tf.out": forward})

image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
prompt = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
cases = {
    "t2i": (t2i, dict(height=64, width=80, num_inference_steps=4, guidance_scale=3.5), 42),
    "t2i_truecfg": (t2i, dict(height=48, width=64, num_inference_steps=3, guidance_scale=3.5, true_cfg_scale=4.0,
                              negative_prompt_embeds=neg_embeds, negative_pooled_prompt_embeds=neg_pooled), 7),
    "i2i": (i2i, dict(image=image, strength=0.6, num_inference_steps=10, guidance_scale=7.0, height=64, width=64), 123456),
    "inpaint": (inpaint, dict(image=image, mask_image=mask, strength=0.8, num_inference_steps=5, guidance_scale=7.0,
                              height=64, width=64), 42),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent" gives the packed latents [1, tokens, 64]; "np" the decoded image, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**prompt, **args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
