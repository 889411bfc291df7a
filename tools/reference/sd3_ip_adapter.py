# Our own script (DiffusersSharp): runs diffusers' OWN SD3 IP-Adapter code to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/sd3-ip-adapter (see its README.md).
#   1. a tiny SD3 IP-Adapter for the shared tiny-sd3 transformer in InstantX/SD3.5-Large-IP-Adapter's layout
#      (image_proj.* in the original Resampler names: layers.i.0.norm1 / .0.to_q / .1.1 / .2.1 ...; ip_adapter.N.* for the
#      N-th attention processor in diffusers' attn_processors order), drawn from one seeded generator: diffusers'
#      IPAdapterTimeImageProjection and SD3IPAdapterJointAttnProcessor2_0 are built for the sizes, their state-dict
#      entries drawn, and the Resampler's names mapped back to InstantX's;
#   2. loaded by StableDiffusion3Pipeline's own load_ip_adapter(folder, weight_name=..., image_encoder_folder=None);
#   3. one transformer forward with image embeddings (scale 0.5, diffusers' default after loading, 1.0 and 0), the
#      Resampler's own outputs, and pipeline runs given the shared tiny-sd3 fixture's stored prompt embeddings and
#      ip_adapter_image_embeds: text-to-image with CFG at scale 0.5 and 1.0, without CFG (2 images per prompt), with
#      skip-layer guidance, image-to-image, inpainting, and StableDiffusion3ControlNetPipeline with
#      local-diffusers/sd3-controlnet's tiny ControlNet (no image encoder runs: transformers is a stub here, so the
#      embeddings stand for the SigLIP encoder's penultimate hidden states).
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/sd3_ip_adapter.py tests/DiffusersSharp.Tests/Fixtures
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3ControlNetModel, SD3Transformer2DModel
from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterTimeImageProjection
from diffusers.pipelines.controlnet_sd3.pipeline_stable_diffusion_3_controlnet import StableDiffusion3ControlNetPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import StableDiffusion3Img2ImgPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_inpaint import StableDiffusion3InpaintPipeline

root = sys.argv[1]
model = f"{root}/tiny-sd3/model"
out_dir = f"{root}/local-diffusers/sd3-ip-adapter"
os.makedirs(out_dir, exist_ok=True)

# Sizes: the image features are 32 wide (local-diffusers/siglip-vision's image_encoder, 16 patches); the Resampler is
# 40 wide with one 64-wide head, 4 queries, 16 timestep features (InstantX: 1152, 1280, 20 heads, 64 queries, 320).
EMBED_DIM, HIDDEN_DIM, HEADS, QUERIES, TIME_IN, PATCHES = 32, 40, 1, 4, 16, 16
g = torch.Generator("cpu").manual_seed(20261201)


def draw(key, shape):
    if key.endswith("weight") and len(shape) == 1:  # LayerNorm / RMSNorm scales
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if key.endswith("bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if key == "latents":
        return torch.randn(shape, generator=g) / shape[-1] ** 0.5
    return torch.randn(shape, generator=g) / shape[-1] ** 0.5  # linears: randn / sqrt(fan-in)


def instantx_name(key):
    # The inverse of diffusers' _convert_ip_adapter_image_proj_to_diffusers renames.
    if not key.startswith("layers."):
        return key
    _, idx, rest = key.split(".", 2)
    for new, old in [("ln0.", "0.norm1."), ("ln1.", "0.norm2."), ("attn.to_q.", "0.to_q."), ("attn.to_kv.", "0.to_kv."),
                     ("attn.to_out.0.", "0.to_out."), ("adaln_norm.", "1.0."), ("ff.net.0.proj.", "1.1."),
                     ("ff.net.2.", "1.3."), ("adaln_proj.", "2.1.")]:
        if rest.startswith(new):
            return f"layers.{idx}.{old}{rest[len(new):]}"
    raise KeyError(key)


transformer = SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")
width = transformer.config.attention_head_dim * transformer.config.num_attention_heads
file = {}
shell = IPAdapterTimeImageProjection(embed_dim=EMBED_DIM, output_dim=width, hidden_dim=HIDDEN_DIM, heads=HEADS,
                                     num_queries=QUERIES, timestep_in_dim=TIME_IN)
for key, value in shell.state_dict().items():
    file["image_proj." + instantx_name(key)] = draw(key, value.shape)
for n, name in enumerate(transformer.attn_processors.keys()):  # transformer_blocks.0.attn, .0.attn2, .1.attn
    proc = SD3IPAdapterJointAttnProcessor2_0(hidden_size=width, ip_hidden_states_dim=width,
                                             head_dim=transformer.config.attention_head_dim, timesteps_emb_dim=HIDDEN_DIM)
    for key, value in proc.state_dict().items():
        file[f"ip_adapter.{n}.{key}"] = draw(key, value.shape)
save_file(file, f"{out_dir}/ip-adapter.safetensors")

parts = dict(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
             text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
t2i = StableDiffusion3Pipeline(**parts)
t2i.load_ip_adapter(out_dir, weight_name="ip-adapter.safetensors", image_encoder_folder=None)
i2i = StableDiffusion3Img2ImgPipeline(**parts)
inpaint = StableDiffusion3InpaintPipeline(**parts)
controlnet = StableDiffusion3ControlNetPipeline(**parts, controlnet=SD3ControlNetModel.from_pretrained(
    f"{root}/local-diffusers/sd3-controlnet/controlnet").eval())
out = {}

# Image features: [negative, positive] under CFG; the negative half zeros, as encode_image's torch.zeros_like.
positive = torch.randn(1, PATCHES, EMBED_DIM, generator=g)
out["ip_adapter_image_embeds"] = torch.cat([torch.zeros_like(positive), positive])

# 1. One transformer forward: CFG-batched tiny-sd3 embeddings, two timesteps, random latents and image features.
shared = load_file(f"{root}/tiny-sd3/expected.safetensors")
latents = torch.randn(2, 16, 8, 8, generator=g)
features = torch.randn(2, PATCHES, EMBED_DIM, generator=g)
timestep = torch.tensor([937.5, 250.0])
text = torch.cat([shared["t2i.negative_prompt_embeds"], shared["t2i.prompt_embeds"]])
pooled = torch.cat([shared["t2i.negative_pooled_prompt_embeds"], shared["t2i.pooled_prompt_embeds"]])
out.update({"forward.hidden_states": latents, "forward.ip_adapter_image_embeds": features, "forward.timestep": timestep})
with torch.no_grad():
    tokens, temb = transformer.image_proj(features, timestep)
    out["forward.image_proj.tokens"], out["forward.image_proj.timestep_emb"] = tokens, temb
    for scale in (0.5, 1.0, 0.0):
        t2i.set_ip_adapter_scale(scale)
        out[f"forward.scale{scale}"] = transformer(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                                                   timestep=timestep, return_dict=False,
                                                   joint_attention_kwargs={"ip_adapter_image_embeds": features})[0]
    out["forward.no_ip"] = transformer(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                                       timestep=timestep, return_dict=False)[0]
t2i.set_ip_adapter_scale(0.5)


def embeds(case):
    return dict(prompt_embeds=shared[f"{case}.prompt_embeds"], negative_prompt_embeds=shared[f"{case}.negative_prompt_embeds"],
                pooled_prompt_embeds=shared[f"{case}.pooled_prompt_embeds"],
                negative_pooled_prompt_embeds=shared[f"{case}.negative_pooled_prompt_embeds"])


image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
ip = out["ip_adapter_image_embeds"]
cases = {
    "t2i": (t2i, 0.5, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, num_inference_steps=4, guidance_scale=4.5,
                           height=64, width=64), 123456),
    "t2i_scale1": (t2i, 1.0, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, num_inference_steps=4, guidance_scale=4.5,
                                  height=64, width=64), 123456),
    "t2i_nocfg": (t2i, 0.5, dict(**embeds("t2i_nocfg"), ip_adapter_image_embeds=positive, num_inference_steps=3,
                                 guidance_scale=1.0, height=64, width=80, num_images_per_prompt=2), 7),
    # Skip-layer guidance on steps 1 and 2 of 4: the skip pass gets the CFG-doubled image features with one latent.
    "t2i_slg": (t2i, 0.5, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, num_inference_steps=4, guidance_scale=4.5,
                               height=64, width=64, skip_guidance_layers=[1], skip_layer_guidance_scale=2.8,
                               skip_layer_guidance_start=0.01, skip_layer_guidance_stop=0.6), 99),
    "i2i": (i2i, 0.5, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, image=image, strength=0.7, num_inference_steps=6,
                           guidance_scale=7.0, height=64, width=64), 123456),
    "inpaint": (inpaint, 0.5, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, image=image, mask_image=mask,
                                   strength=0.99, num_inference_steps=4, guidance_scale=7.0, height=64, width=64), 42),
    # The ControlNet gets the same joint_attention_kwargs; its plain processors ignore the image features. The control
    # image's VAE sample is drawn from torch's global generator, seeded with 3 before each call.
    "controlnet": (controlnet, 0.5, dict(**embeds("t2i"), ip_adapter_image_embeds=ip, control_image=image, num_inference_steps=3,
                                         guidance_scale=4.5, height=64, width=64, controlnet_conditioning_scale=0.7), 11),
}
for name, (pipe, scale, args, seed) in cases.items():
    t2i.set_ip_adapter_scale(scale)  # the pipelines share the transformer and so its processors

    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        torch.manual_seed(3)
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        torch.manual_seed(3)
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{out_dir}/expected.safetensors")
print(f"wrote {len(out)} tensors; max |forward.scale0.5 - forward.no_ip| "
      f"{(out['forward.scale0.5'] - out['forward.no_ip']).abs().max().item():.3g}, "
      f"max |forward.scale0.0 - forward.no_ip| {(out['forward.scale0.0'] - out['forward.no_ip']).abs().max().item():.3g}")
