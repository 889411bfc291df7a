# Our own script (DiffusersSharp): runs diffusers' OWN IP-Adapter code to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/ip-adapter (see its README.md).
#   1. tiny IP-Adapters for tiny-sd15 and tiny-sdxl in h94/IP-Adapter's safetensors layout (image_proj.proj / .norm,
#      ip_adapter.N.to_k_ip / to_v_ip with N = 1, 3, 5, ... over the UNet's cross-attention layers in diffusers' order),
#      every tensor drawn from one seeded generator (CLIP image-embedding width 24);
#   2. each loaded by the pipeline's own load_ip_adapter(folder, subfolder="", weight_name=..., image_encoder_folder=None)
#      and scaled with set_ip_adapter_scale(0.7);
#   3. one UNet forward with image embeds, and pipeline runs given ip_adapter_image_embeds (no CLIP image encoder can
#      run: transformers is a stub here, so the embeddings are what the image encoder would have given).
# Prompt embeddings are random tensors; pipelines are built without text encoders, tokenizers, safety checker.
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/ip_adapter.py
import os
import torch
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, PNDMScheduler, EulerDiscreteScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline

import diffusers.loaders.ip_adapter as ip_adapter_loader

# load_ip_adapter also registers a transformers CLIPImageProcessor as the feature extractor; the transformers stub cannot
# build one and no image goes through it here (embeddings are given), so that one call returns None.
ip_adapter_loader.CLIPImageProcessor = lambda **kwargs: None

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/ip-adapter/"
CLIP_DIM = 24
out = {}
g = torch.Generator("cpu").manual_seed(20261127)


def make_ip_adapter(unet, name):
    cross = unet.config.cross_attention_dim
    sd = {"image_proj.proj.weight": torch.randn(4 * cross, CLIP_DIM, generator=g) / CLIP_DIM ** 0.5,
          "image_proj.proj.bias": 0.1 * torch.randn(4 * cross, generator=g),
          "image_proj.norm.weight": 1 + 0.1 * torch.randn(cross, generator=g),
          "image_proj.norm.bias": 0.1 * torch.randn(cross, generator=g)}
    key_id = 1
    for proc in unet.attn_processors.keys():  # diffusers' order: down blocks, up blocks, mid block
        if proc.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(proc[: -len(".processor")]).to_k.out_features
        sd[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) / cross ** 0.5
        sd[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) / cross ** 0.5
        key_id += 2
    folder = OUT + name
    os.makedirs(folder, exist_ok=True)
    save_file(sd, folder + "/ip-adapter.safetensors")
    print(name, "IP-Adapter:", (key_id - 1) // 2, "cross-attention layers,", len(sd), "tensors")
    return folder


def steps_cb(name):
    def cb(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        return kw
    return cb


def run(name, pipe, seed, **kw):
    with torch.no_grad():
        lat = pipe(output_type="latent", generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=steps_cb(name), **kw).images
        img = pipe(output_type="np", generator=torch.Generator("cpu").manual_seed(seed), **kw).images
    out[f"{name}.latents"] = lat
    out[f"{name}.image"] = torch.from_numpy(img)
    print(name, tuple(lat.shape), float(lat.abs().max()))


def unet_forward(name, pipe, text):
    unet = pipe.unet
    sample = torch.randn(2, 4, 8, 10, generator=g)
    states = torch.randn(2, 7, text, generator=g)
    embeds = torch.randn(2, 1, CLIP_DIM, generator=g)
    t = torch.tensor([901., 301.])
    extra = {"image_embeds": [embeds]}
    if name == "sdxl":
        extra.update(text_embeds=torch.randn(2, 32, generator=g), time_ids=torch.tensor([[64., 80, 0, 0, 64, 80], [96., 120, 8, 4, 64, 80]]))
    for k, v in dict(sample=sample, states=states, image_embeds=embeds, t=t, **{k: v for k, v in extra.items() if k != "image_embeds"}).items():
        out[f"fwd.{name}.{k}"] = v
    with torch.no_grad():
        out[f"fwd.{name}.projected"] = unet.encoder_hid_proj([embeds])[0]
        out[f"fwd.{name}.unet"] = unet(sample, t, encoder_hidden_states=states, added_cond_kwargs=extra, return_dict=False)[0]


# Inputs drawn first, in this order.
pe15, npe15 = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
pexl, pooled, npexl, npooled = (torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g),
                                torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g))
img1, img2 = torch.randn(1, 1, CLIP_DIM, generator=g), torch.randn(1, 1, CLIP_DIM, generator=g)
out.update({"in.sd15.prompt_embeds": pe15, "in.sd15.neg_prompt_embeds": npe15, "in.sdxl.prompt_embeds": pexl,
            "in.sdxl.pooled": pooled, "in.sdxl.neg_prompt_embeds": npexl, "in.sdxl.neg_pooled": npooled,
            "in.image_embeds": img1, "in.image_embeds_2": img2})

sd = StableDiffusionPipeline(vae=AutoencoderKL.from_pretrained(FX + "tiny-sd15/model", subfolder="vae").eval(), text_encoder=None,
                             tokenizer=None, unet=UNet2DConditionModel.from_pretrained(FX + "tiny-sd15/model", subfolder="unet").eval(),
                             scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"),
                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
xl = StableDiffusionXLPipeline(vae=AutoencoderKL.from_pretrained(FX + "tiny-sdxl/model", subfolder="vae").eval(), text_encoder=None,
                               text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                               unet=UNet2DConditionModel.from_pretrained(FX + "tiny-sdxl/model", subfolder="unet").eval(),
                               scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                               force_zeros_for_empty_prompt=True, add_watermarker=False)
for name, pipe in [("sd15", sd), ("sdxl", xl)]:
    folder = make_ip_adapter(pipe.unet, name)
    pipe.load_ip_adapter(folder, subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)

unet_forward("sd15", sd, 32)
unet_forward("sdxl", xl, 64)

# Under CFG the given embeddings hold the negative half first (prepare_ip_adapter_image_embeds chunks them); the
# negative is zeros, as diffusers' encode_image makes it for a plain IP-Adapter.
cfg1 = torch.cat([torch.zeros_like(img1), img1])
two = torch.cat([img1, img2], dim=1)  # two images for one adapter: [1, 2, D]
sd_embeds = dict(prompt_embeds=pe15, negative_prompt_embeds=npe15)
run("sd15", sd, 31, **sd_embeds, ip_adapter_image_embeds=[cfg1], num_inference_steps=8, height=64, width=64)
run("sd15_nocfg", sd, 32, **sd_embeds, ip_adapter_image_embeds=[img1], num_inference_steps=6, guidance_scale=1.0, height=64, width=80)
run("sd15_two", sd, 33, **sd_embeds, ip_adapter_image_embeds=[torch.cat([torch.zeros_like(two), two])], num_inference_steps=6,
    height=64, width=64, num_images_per_prompt=2)
xl_embeds = dict(prompt_embeds=pexl, pooled_prompt_embeds=pooled, negative_prompt_embeds=npexl, negative_pooled_prompt_embeds=npooled)
run("sdxl", xl, 41, **xl_embeds, ip_adapter_image_embeds=[cfg1], num_inference_steps=8, height=64, width=64)

# 4. IP-Adapter Plus (IPAdapterPlusImageProjection, the Resampler) in h94's original key names, on fresh pipelines:
#    8 queries of width 64 (one 64-wide head), depth 4 and ffn ratio 4 (diffusers' fixed defaults), image features of
#    5 tokens x 20; drawn from a second generator so the plain part above keeps its numbers.
gp = torch.Generator("cpu").manual_seed(20261128)
PLUS_DIM, PLUS_TOKENS, PLUS_HIDDEN, PLUS_QUERIES = 20, 5, 64, 8


def make_plus(unet, name):
    cross = unet.config.cross_attention_dim
    h = PLUS_HIDDEN
    sd = {"image_proj.latents": torch.randn(1, PLUS_QUERIES, h, generator=gp) / h ** 0.5,
          "image_proj.proj_in.weight": torch.randn(h, PLUS_DIM, generator=gp) / PLUS_DIM ** 0.5,
          "image_proj.proj_in.bias": 0.1 * torch.randn(h, generator=gp),
          "image_proj.proj_out.weight": torch.randn(cross, h, generator=gp) / h ** 0.5,
          "image_proj.proj_out.bias": 0.1 * torch.randn(cross, generator=gp),
          "image_proj.norm_out.weight": 1 + 0.1 * torch.randn(cross, generator=gp),
          "image_proj.norm_out.bias": 0.1 * torch.randn(cross, generator=gp)}
    for i in range(4):
        l = f"image_proj.layers.{i}."
        for norm in ["0.norm1", "0.norm2", "1.0"]:
            sd[l + norm + ".weight"] = 1 + 0.1 * torch.randn(h, generator=gp)
            sd[l + norm + ".bias"] = 0.1 * torch.randn(h, generator=gp)
        sd[l + "0.to_q.weight"] = torch.randn(h, h, generator=gp) / h ** 0.5
        sd[l + "0.to_kv.weight"] = torch.randn(2 * h, h, generator=gp) / h ** 0.5
        sd[l + "0.to_out.weight"] = torch.randn(h, h, generator=gp) / h ** 0.5
        sd[l + "1.1.weight"] = torch.randn(4 * h, h, generator=gp) / h ** 0.5
        sd[l + "1.3.weight"] = torch.randn(h, 4 * h, generator=gp) / (4 * h) ** 0.5
    key_id = 1
    for proc in unet.attn_processors.keys():
        if proc.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(proc[: -len(".processor")]).to_k.out_features
        sd[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=gp) / cross ** 0.5
        sd[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=gp) / cross ** 0.5
        key_id += 2
    folder = OUT + name
    os.makedirs(folder, exist_ok=True)
    save_file(sd, folder + "/ip-adapter-plus.safetensors")
    print(name, "IP-Adapter Plus:", len(sd), "tensors")
    return folder


sd_plus = StableDiffusionPipeline(vae=sd.vae, text_encoder=None, tokenizer=None,
                                  unet=UNet2DConditionModel.from_pretrained(FX + "tiny-sd15/model", subfolder="unet").eval(),
                                  scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"),
                                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
xl_plus = StableDiffusionXLPipeline(vae=xl.vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                    unet=UNet2DConditionModel.from_pretrained(FX + "tiny-sdxl/model", subfolder="unet").eval(),
                                    scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                                    force_zeros_for_empty_prompt=True, add_watermarker=False)
for name, pipe in [("sd15", sd_plus), ("sdxl", xl_plus)]:
    folder = make_plus(pipe.unet, name)
    pipe.load_ip_adapter(folder, subfolder="", weight_name="ip-adapter-plus.safetensors", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    print(name, "plus projection:", type(pipe.unet.encoder_hid_proj.image_projection_layers[0]).__name__)

# Image features [2 (negative, positive), 1 image, 5 tokens, 20]: under CFG diffusers encodes a zero image for the
# negative half (not zeros), so here both halves are drawn.
feats = torch.randn(2, 1, PLUS_TOKENS, PLUS_DIM, generator=gp)
out["in.plus_features"] = feats
with torch.no_grad():
    out["fwd.sd15_plus.projected"] = sd_plus.unet.encoder_hid_proj([feats])[0]
run("sd15_plus", sd_plus, 51, **sd_embeds, ip_adapter_image_embeds=[feats], num_inference_steps=6, height=64, width=64)
run("sdxl_plus", xl_plus, 52, **xl_embeds, ip_adapter_image_embeds=[feats], num_inference_steps=6, height=64, width=64)

# 5. Other modes with the plain sd15 adapter (same UNet, scale 0.7): image-to-image and ControlNet text-to-image.
from PIL import Image
from diffusers import ControlNetModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import StableDiffusionImg2ImgPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline

init = Image.open(FX + "tiny-sd15/init_image.png").convert("RGB")
i2i = StableDiffusionImg2ImgPipeline(vae=sd.vae, text_encoder=None, tokenizer=None, unet=sd.unet, scheduler=sd.scheduler,
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
run("sd15_img2img", i2i, 61, **sd_embeds, ip_adapter_image_embeds=[cfg1], image=init, strength=0.6, num_inference_steps=8)
control = Image.open(FX + "local-diffusers/controlnet/control.png").convert("RGB")
cn = StableDiffusionControlNetPipeline(vae=sd.vae, text_encoder=None, tokenizer=None, unet=sd.unet,
                                       controlnet=ControlNetModel.from_pretrained(FX + "local-diffusers/controlnet/sd15").eval(),
                                       scheduler=sd.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
run("sd15_controlnet", cn, 62, **sd_embeds, ip_adapter_image_embeds=[cfg1], image=control, num_inference_steps=6, controlnet_conditioning_scale=0.8)

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
