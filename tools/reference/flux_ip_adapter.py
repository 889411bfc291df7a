"""diffusers' own Flux IP-Adapter code on the tiny Flux model: writes local-diffusers/flux-ip-adapter (see its README.md).

Usage (see README.md for the environment; /tmp/reftf must hold transformers' CLIP files, as for t5_clip_vision.py):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/flux_ip_adapter.py tests/DiffusersSharp.Tests/Fixtures

1. A tiny IP-Adapter in XLabs-AI/flux-ip-adapter's safetensors layout for local-diffusers/flux's transformer
   (ip_adapter_proj_model.proj / .norm, double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj weight + bias),
   every tensor drawn from one seeded generator; CLIP image-embedding width 24 (the tiny image encoder of
   local-diffusers/transformers-encoders).
2. Loaded by FluxPipeline's own load_ip_adapter(folder, weight_name=..., image_encoder_pretrained_model_name_or_path=None).
3. One transformer forward with image embeds (per-block scales), and FluxPipeline runs given prompt embeddings and
   ip_adapter_image_embeds / negative_ip_adapter_image_embeds (scale 1.0 and 0.6, true CFG).
4. The image-encoder path: transformers' OWN CLIPVisionModelWithProjection (run in a child process with
   tools/reference/pyenv-transformers, since diffusers' environment has the transformers stub) encodes a pixel tensor
   (what encode_image does with a tensor ip_adapter_image) and the pixel values of the all-zero image that FluxPipeline
   substitutes for a missing negative_ip_adapter_image (CLIPImageProcessor of an all-zero image: resize and crop leave
   zeros, rescale gives 0, normalize gives (0 - mean) / std per channel in float32); those embeddings then go into the
   pipeline as diffusers' encode_image would give them.
5. FluxImg2ImgPipeline and FluxInpaintPipeline with the same adapter and image embeddings; FluxControlNetPipeline (with
   local-diffusers/flux-controlnet's ControlNet), FluxKontextPipeline and FluxKontextInpaintPipeline (the same adapter file
   loaded into local-diffusers/flux-kontext's transformer).
"""
import json
import os
import subprocess
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import diffusers.loaders.ip_adapter as ip_adapter_loader
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux_img2img import FluxImg2ImgPipeline
from diffusers.pipelines.flux.pipeline_flux_inpaint import FluxInpaintPipeline
from diffusers.pipelines.flux.pipeline_flux_controlnet import FluxControlNetPipeline
from diffusers.pipelines.flux.pipeline_flux_kontext import FluxKontextPipeline
from diffusers.pipelines.flux.pipeline_flux_kontext_inpaint import FluxKontextInpaintPipeline
from diffusers import FluxControlNetModel

# load_ip_adapter registers a transformers CLIPImageProcessor as the feature extractor; the transformers stub cannot build
# one and no image goes through it here (embeddings are given), so that one call returns None.
ip_adapter_loader.CLIPImageProcessor = lambda **kwargs: None

root = sys.argv[1]
out_dir = f"{root}/local-diffusers/flux-ip-adapter"
encoder_dir = f"{root}/local-diffusers/transformers-encoders/image_encoder"
os.makedirs(out_dir, exist_ok=True)
CLIP_DIM = 24
out = {}
g = torch.Generator("cpu").manual_seed(20261127)

transformer = FluxTransformer2DModel.from_pretrained(f"{root}/local-diffusers/flux", subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
pipe = FluxPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                    text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)

# 1. The adapter file: XLabs' key names; 4 tokens of joint_attention_dim (96) per image, k/v projections [inner 32, 96].
cross, inner = transformer.config.joint_attention_dim, transformer.inner_dim
sd = {"ip_adapter_proj_model.proj.weight": torch.randn(4 * cross, CLIP_DIM, generator=g) / CLIP_DIM ** 0.5,
      "ip_adapter_proj_model.proj.bias": 0.1 * torch.randn(4 * cross, generator=g),
      "ip_adapter_proj_model.norm.weight": 1 + 0.1 * torch.randn(cross, generator=g),
      "ip_adapter_proj_model.norm.bias": 0.1 * torch.randn(cross, generator=g)}
for i in range(transformer.config.num_layers):
    for kv in ["k", "v"]:
        name = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
        sd[name + ".weight"] = torch.randn(inner, cross, generator=g) / cross ** 0.5
        sd[name + ".bias"] = 0.1 * torch.randn(inner, generator=g)
save_file(sd, f"{out_dir}/ip_adapter.safetensors")
print("adapter:", len(sd), "tensors")

# 2. diffusers' loader.
pipe.load_ip_adapter(out_dir, weight_name="ip_adapter.safetensors", image_encoder_pretrained_model_name_or_path=None)
print("processors:", {k: type(v).__name__ for k, v in transformer.attn_processors.items()})

# Inputs, drawn after the adapter in this order.
embeds, pooled = torch.randn(1, 16, cross, generator=g), torch.randn(1, 32, generator=g)
neg_embeds, neg_pooled = torch.randn(1, 16, cross, generator=g), torch.randn(1, 32, generator=g)
img1, img2, nimg = (torch.randn(1, 1, CLIP_DIM, generator=g), torch.randn(1, 1, CLIP_DIM, generator=g),
                    torch.randn(1, 1, CLIP_DIM, generator=g))
out.update({"in.prompt_embeds": embeds, "in.pooled": pooled, "in.neg_prompt_embeds": neg_embeds, "in.neg_pooled": neg_pooled,
            "in.image_embeds": img1, "in.image_embeds_2": img2, "in.neg_image_embeds": nimg})

# 3a. One forward: batch 2, a 4 x 5 token latent, image embeds [2, 1, 24]; per-block scales [0.5, 1.2] (one adapter, one
#     scale per double block, as set_ip_adapter_scale takes a list).
hidden, text, pool = torch.randn(2, 20, 64, generator=g), torch.randn(2, 16, cross, generator=g), torch.randn(2, 32, generator=g)
ip = torch.randn(2, 1, CLIP_DIM, generator=g)
timestep, guidance = torch.tensor([1.0, 0.3125]), torch.tensor([3.5, 7.0])
img_ids, txt_ids = FluxPipeline._prepare_latent_image_ids(1, 4, 5, "cpu", torch.float32), torch.zeros(16, 3)
pipe.set_ip_adapter_scale([0.5, 1.2])
print("scales:", [p.scale for p in transformer.attn_processors.values() if hasattr(p, "scale")])
with torch.no_grad():
    out["tf.projected"] = transformer.encoder_hid_proj([ip])[0]
    out["tf.out"] = transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pool, timestep=timestep,
                                img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                                joint_attention_kwargs={"ip_adapter_image_embeds": [ip]}, return_dict=False)[0]
out.update({"tf.hidden_states": hidden, "tf.encoder_hidden_states": text, "tf.pooled": pool, "tf.ip_image_embeds": ip,
            "tf.timestep": timestep, "tf.guidance": guidance, "tf.img_ids": img_ids, "tf.txt_ids": txt_ids})

# 4. The image encoder (transformers' own, in a child process): a drawn pixel tensor and the all-zero image's pixel values.
pixels = torch.randn(1, 3, 32, 32, generator=g)
mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float32)
std = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float32)
zero_pixels = ((torch.zeros(1, 3, 32, 32) - mean[None, :, None, None]) / std[None, :, None, None]).float()
out.update({"in.pixel_values": pixels, "in.zero_pixel_values": zero_pixels})
tmp = f"{out_dir}/.encoder_io.safetensors"
save_file({"pixels": pixels, "zero": zero_pixels}, tmp)
child = f"""
import json, torch
from safetensors.torch import load_file, save_file
from transformers.models.clip.configuration_clip import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPVisionModelWithProjection
with open({json.dumps(encoder_dir + '/config.json')}) as f:
    config = CLIPVisionConfig(**json.load(f))
model = CLIPVisionModelWithProjection(config).eval()
model.load_state_dict(load_file({json.dumps(encoder_dir + '/model.safetensors')}), strict=True)
x = load_file({json.dumps(tmp)})
with torch.no_grad():
    save_file({{k: model(pixel_values=v).image_embeds.contiguous() for k, v in x.items()}}, {json.dumps(tmp)})
"""
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
subprocess.run([sys.executable, "-c", child], check=True, env=env)
encoded = load_file(tmp)
os.remove(tmp)
image_embeds, zero_embeds = encoded["pixels"][None, :], encoded["zero"][None, :]  # encode_image(...)[None, :]: [1, 1, 24]
out.update({"enc.image_embeds": image_embeds, "enc.zero_image_embeds": zero_embeds})

# 3b. Pipeline runs (FluxPipeline.__call__), each with torch.Generator("cpu").manual_seed(seed). Without an image encoder
#     diffusers needs the negative embeddings too (it encodes a zero image for a missing one even without true CFG).
prompt = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
negative = dict(negative_prompt_embeds=neg_embeds, negative_pooled_prompt_embeds=neg_pooled)
two = torch.cat([img1, img2], dim=1)  # two images for the one adapter: [1, 2, 24]
cases = {
    "ip": (1.0, dict(height=48, width=64, num_inference_steps=3, guidance_scale=3.5,
                     ip_adapter_image_embeds=[img1], negative_ip_adapter_image_embeds=[nimg]), 11),
    "ip_scale06": (0.6, dict(height=64, width=64, num_inference_steps=3, guidance_scale=3.5, num_images_per_prompt=2,
                             ip_adapter_image_embeds=[two], negative_ip_adapter_image_embeds=[torch.cat([nimg, nimg], 1)]), 12),
    "ip_truecfg": (0.6, dict(height=48, width=64, num_inference_steps=3, guidance_scale=3.5, true_cfg_scale=4.0, **negative,
                             ip_adapter_image_embeds=[img1], negative_ip_adapter_image_embeds=[nimg]), 13),
    # The image path: ip_adapter_image = the pixel tensor, no negative image, so diffusers encodes the zero image.
    "ip_image_truecfg": (1.0, dict(height=48, width=64, num_inference_steps=3, guidance_scale=3.5, true_cfg_scale=3.0, **negative,
                                   ip_adapter_image_embeds=[image_embeds], negative_ip_adapter_image_embeds=[zero_embeds]), 14),
}
for name, (scale, args, seed) in cases.items():
    pipe.set_ip_adapter_scale(scale)

    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**prompt, **args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))

# 3c. Image-to-image and inpainting (FluxImg2ImgPipeline / FluxInpaintPipeline sharing the components, so the adapter and
#     its scale too), with tiny-sd3's init image and mask, as local-diffusers/flux's i2i and inpaint cases. No true CFG:
#     these two pipelines turn it on only for a negative prompt string (do_true_cfg = true_cfg_scale > 1 and
#     negative_prompt is not None), which needs the text encoders.
i2i = FluxImg2ImgPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                          text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)
inpaint = FluxInpaintPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                              text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
mask = Image.open(f"{root}/tiny-sd3/mask.png")
more = {
    "ip_i2i": (i2i, 0.8, dict(image=image, strength=0.6, num_inference_steps=5, guidance_scale=7.0, height=64, width=64,
                              ip_adapter_image_embeds=[img1], negative_ip_adapter_image_embeds=[nimg]), 21),
    "ip_inpaint": (inpaint, 0.8, dict(image=image, mask_image=mask, strength=0.8, num_inference_steps=4, guidance_scale=7.0,
                                      height=64, width=64, ip_adapter_image_embeds=[img1], negative_ip_adapter_image_embeds=[nimg]), 22),
}
for name, (p, scale, args, seed) in more.items():
    pipe.set_ip_adapter_scale(scale)

    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = p(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                   generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(p(**prompt, **args, output_type="np",
                                                  generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))

# 3d. The other Flux pipelines with IP-Adapter inputs in diffusers 0.36: FluxControlNetPipeline (the same transformer, so
#     the same adapter; local-diffusers/flux-controlnet's ControlNet, which ignores the image embeddings; no true CFG: a
#     negative prompt string turns it on there), FluxKontextPipeline and FluxKontextInpaintPipeline (local-diffusers/
#     flux-kontext's transformer, the same adapter file loaded into it by load_ip_adapter; true CFG with the negative
#     embeddings, which these two take).
cn = FluxControlNetModel.from_pretrained(f"{root}/local-diffusers/flux-controlnet/controlnet").eval()
controlnet = FluxControlNetPipeline(scheduler=scheduler, vae=vae, transformer=transformer, controlnet=cn, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)
kontext_transformer = FluxTransformer2DModel.from_pretrained(f"{root}/local-diffusers/flux-kontext/transformer").eval()
kontext = FluxKontextPipeline(scheduler=scheduler, vae=vae, transformer=kontext_transformer, text_encoder=None, tokenizer=None,
                              text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)
kontext.load_ip_adapter(out_dir, weight_name="ip_adapter.safetensors", image_encoder_pretrained_model_name_or_path=None)
kontext_inpaint = FluxKontextInpaintPipeline(scheduler=scheduler, vae=vae, transformer=kontext_transformer, text_encoder=None,
                                             tokenizer=None, text_encoder_2=None, tokenizer_2=None, image_encoder=None,
                                             feature_extractor=None)
wide = Image.open(f"{root}/local-diffusers/flux-kontext/kontext_input.png").convert("RGB")
ip = dict(ip_adapter_image_embeds=[img1], negative_ip_adapter_image_embeds=[nimg])
others = {
    "ip_controlnet": (controlnet, pipe, 0.8, dict(control_image=image, height=64, width=80, num_inference_steps=4, guidance_scale=3.5,
                                                  controlnet_conditioning_scale=0.6, **ip), 31),
    "ip_kontext": (kontext, kontext, 0.7, dict(image=wide, height=48, width=64, max_area=48 * 64, num_inference_steps=3,
                                               true_cfg_scale=4.0, **negative, **ip), 32),
    "ip_kontext_inpaint": (kontext_inpaint, kontext, 0.7, dict(image=image, mask_image=mask, strength=0.75, num_inference_steps=4,
                                                               _auto_resize=False, true_cfg_scale=2.0, **negative, **ip), 33),
}
for name, (p, owner, scale, args, seed) in others.items():
    owner.set_ip_adapter_scale(scale)

    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = p(**prompt, **args, output_type="latent", callback_on_step_end=on_step_end,
                                   generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(p(**prompt, **args, output_type="np",
                                                  generator=torch.Generator("cpu").manual_seed(seed)).images)
    print(name, tuple(out[f"{name}.latents"].shape), float(out[f"{name}.latents"].abs().max()))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{out_dir}/expected.safetensors")
print(f"wrote {len(out)} tensors to {out_dir}/expected.safetensors")
