# Our own script (DiffusersSharp): runs diffusers' OWN VaeImageProcessor and inpainting pipelines with padding_mask_crop
# to make the parity fixture tests/DiffusersSharp.Tests/Fixtures/local-diffusers/mask-crop (see its README.md):
# get_crop_region, preprocess with crops_coords and resize_mode "fill", the "fill" / "crop" resize modes, apply_overlay,
# and StableDiffusionInpaintPipeline / StableDiffusionControlNetInpaintPipeline (tiny-sd15) and
# StableDiffusion3InpaintPipeline (tiny-sd3) and FluxInpaintPipeline (local-diffusers/flux) with padding_mask_crop.
# Pillow is Debian 12's python3-pil 9.4.0.
# No CLIP / T5 runs: prompt embeddings are passed in (random for tiny-sd15, the shared tiny-sd3 fixture's stored ones).
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/mask_crop.py
import os
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import load_file, save_file
from diffusers import (AutoencoderKL, ControlNetModel, FlowMatchEulerDiscreteScheduler, PNDMScheduler,
                       SD3Transformer2DModel, UNet2DConditionModel)
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.controlnet.pipeline_controlnet_inpaint import StableDiffusionControlNetInpaintPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import StableDiffusionInpaintPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_inpaint import StableDiffusion3InpaintPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/mask-crop/"
os.makedirs(OUT, exist_ok=True)
out = {}


def u8(image):
    return torch.from_numpy(np.array(image).astype(np.uint8))


# Images (saved, then read back as the tests read them): a 96 x 72 RGB picture, a 40 x 100 tall one, and masks on the
# 96 x 72 grid: a box near the right edge, a blurred (soft) disc, an RGB mask touching the bottom-left corner.
init = Image.new("RGB", (96, 72))
d = ImageDraw.Draw(init)
for y in range(72):
    d.line((0, y, 95, y), fill=(30 + 3 * y, 120 - y, 60 + 2 * y))
d.rectangle((10, 8, 40, 50), fill=(230, 210, 30))
d.ellipse((50, 20, 90, 66), fill=(20, 150, 200))
init.save(OUT + "init.png")
tall = Image.new("RGB", (40, 100))
d = ImageDraw.Draw(tall)
for y in range(100):
    d.line((0, y, 39, y), fill=(2 * y, 255 - 2 * y, (7 * y) % 256))
d.ellipse((5, 30, 35, 70), fill=(250, 250, 250))
tall.save(OUT + "tall.png")
mask_box = Image.new("L", (96, 72), 0)
ImageDraw.Draw(mask_box).rectangle((70, 10, 89, 25), fill=255)
mask_box.save(OUT + "mask_box.png")
mask_soft = Image.new("L", (96, 72), 0)
ImageDraw.Draw(mask_soft).ellipse((30, 24, 58, 50), fill=255)
mask_soft = mask_soft.filter(ImageFilter.GaussianBlur(3))
mask_soft.save(OUT + "mask_soft.png")
mask_rgb = Image.new("RGB", (96, 72), (0, 0, 0))
ImageDraw.Draw(mask_rgb).rectangle((0, 50, 20, 71), fill=(255, 255, 255))
mask_rgb.save(OUT + "mask_rgb.png")
generated = Image.new("RGB", (64, 64), (200, 40, 90))
d = ImageDraw.Draw(generated)
for x in range(64):
    d.line((x, 0, x, 63), fill=(200, 40 + 3 * x, 90))
d.ellipse((16, 16, 48, 48), fill=(10, 10, 240))
generated.save(OUT + "generated.png")
init = Image.open(OUT + "init.png").convert("RGB")
tall = Image.open(OUT + "tall.png").convert("RGB")
masks = {"box": Image.open(OUT + "mask_box.png"), "soft": Image.open(OUT + "mask_soft.png"),
         "rgb": Image.open(OUT + "mask_rgb.png").convert("RGB")}
generated = Image.open(OUT + "generated.png").convert("RGB")

processor = VaeImageProcessor(vae_scale_factor=8)
mask_processor = VaeImageProcessor(vae_scale_factor=8, do_normalize=False, do_binarize=True, do_convert_grayscale=True)

# get_crop_region: case name -> (mask, width, height, pad).
regions = {"box_64x64": ("box", 64, 64, 0), "box_64x64_pad8": ("box", 64, 64, 8), "box_80x48_pad4": ("box", 80, 48, 4),
           "box_48x80_pad4": ("box", 48, 80, 4), "box_pad100": ("box", 64, 64, 100), "soft_56x72_pad2": ("soft", 56, 72, 2),
           "rgb_64x64_pad16": ("rgb", 64, 64, 16), "rgb_128x32": ("rgb", 128, 32, 0)}
crops = {}
for name, (m, w, h, pad) in regions.items():
    crops[name] = processor.get_crop_region(masks[m], w, h, pad=pad)
    out[f"region.{name}"] = torch.tensor(crops[name], dtype=torch.int32)
    print(name, crops[name])

# preprocess with crops_coords and resize_mode "fill", image and mask, as the inpainting pipelines call it.
for name in ["box_64x64_pad8", "box_80x48_pad4", "soft_56x72_pad2", "rgb_128x32"]:
    m, w, h, _ = regions[name]
    out[f"preprocess.{name}.image"] = processor.preprocess(init, height=h, width=w, crops_coords=crops[name], resize_mode="fill")
    out[f"preprocess.{name}.mask"] = mask_processor.preprocess(masks[m], height=h, width=w, crops_coords=crops[name], resize_mode="fill")

# The resize modes on their own (returned as images): fill bands above / below and left / right, crop both ways.
for mode in ["fill", "crop"]:
    for src_name, src, (h, w) in [("init", init, (64, 64)), ("init", init, (48, 120)), ("tall", tall, (64, 64)),
                                  ("tall", tall, (120, 40)), ("mask", masks["soft"], (64, 48))]:
        out[f"resize.{mode}.{src_name}_{h}x{w}"] = u8(processor.resize(src, h, w, resize_mode=mode))

# apply_overlay: the generated 64 x 64 image back over init, with and without a crop region.
out["overlay.box_64x64_pad8"] = u8(processor.apply_overlay(masks["box"], init, generated, crops["box_64x64_pad8"]))
out["overlay.soft_56x72_pad2"] = u8(processor.apply_overlay(masks["soft"], init, generated, crops["soft_56x72_pad2"]))
out["overlay.rgb_128x32"] = u8(processor.apply_overlay(masks["rgb"], init, generated, crops["rgb_128x32"]))
out["overlay.soft_nocrop"] = u8(processor.apply_overlay(masks["soft"], init, generated.resize((96, 72)), None))


def steps_cb(name):
    def cb(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    return cb


def run(name, pipe, seed, **kw):
    with torch.no_grad():
        img = pipe(output_type="pil", generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=steps_cb(name),
                   **kw).images[0]
    out[f"{name}.image"] = u8(img)
    print(name, img.size, len([k for k in out if k.startswith(name + ".step")]), "steps")


# SD 1.5 inpainting (tiny-sd15, 4-channel UNet) and ControlNet inpainting, with padding_mask_crop.
unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sd15/model", subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(FX + "tiny-sd15/model", subfolder="vae").eval()
parts = dict(vae=vae, text_encoder=None, tokenizer=None, unet=unet, safety_checker=None, feature_extractor=None,
             requires_safety_checker=False)
g = torch.Generator("cpu").manual_seed(20261127)
pe, npe = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
out.update({"in.prompt_embeds": pe, "in.neg_prompt_embeds": npe})
sd = StableDiffusionInpaintPipeline(**parts, scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"))
run("sd15", sd, 71, prompt_embeds=pe, negative_prompt_embeds=npe, image=init, mask_image=masks["box"], height=64, width=64,
    num_inference_steps=6, padding_mask_crop=8)
run("sd15_soft", sd, 72, prompt_embeds=pe, negative_prompt_embeds=npe, image=init, mask_image=masks["soft"], height=64,
    width=48, num_inference_steps=5, strength=0.8, padding_mask_crop=2)
cn = ControlNetModel.from_pretrained(FX + "local-diffusers/controlnet/sd15").eval()
control = Image.open(FX + "local-diffusers/controlnet/control.png").convert("RGB")
cni = StableDiffusionControlNetInpaintPipeline(**parts, controlnet=cn,
                                               scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"))
run("sd15_controlnet", cni, 73, prompt_embeds=pe, negative_prompt_embeds=npe, image=init, mask_image=masks["rgb"],
    control_image=control, height=64, width=64, num_inference_steps=5, padding_mask_crop=4)

# SD3 inpainting (tiny-sd3) with the shared fixture's stored prompt embeddings.
model = FX + "tiny-sd3/model"
sd3 = StableDiffusion3InpaintPipeline(transformer=SD3Transformer2DModel.from_pretrained(model, subfolder="transformer").eval(),
                                      vae=AutoencoderKL.from_pretrained(model, subfolder="vae").eval(),
                                      scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler"),
                                      text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                      text_encoder_3=None, tokenizer_3=None)
shared = load_file(FX + "tiny-sd3/expected.safetensors")
run("sd3", sd3, 74, prompt_embeds=shared["t2i.prompt_embeds"], negative_prompt_embeds=shared["t2i.negative_prompt_embeds"],
    pooled_prompt_embeds=shared["t2i.pooled_prompt_embeds"],
    negative_pooled_prompt_embeds=shared["t2i.negative_pooled_prompt_embeds"], image=init, mask_image=masks["soft"],
    height=64, width=64, num_inference_steps=4, guidance_scale=5.0, strength=0.9, padding_mask_crop=6)

# Flux inpainting (local-diffusers/flux's tiny transformer, tiny-sd3's VAE) with that fixture's stored prompt embeddings.
from diffusers import FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_inpaint import FluxInpaintPipeline
flux_dir = FX + "local-diffusers/flux"
flux = FluxInpaintPipeline(transformer=FluxTransformer2DModel.from_pretrained(flux_dir, subfolder="transformer").eval(),
                           vae=AutoencoderKL.from_pretrained(model, subfolder="vae").eval(),
                           scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(flux_dir, subfolder="scheduler"),
                           text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
flux_embeds = load_file(flux_dir + "/expected.safetensors")
run("flux", flux, 75, prompt_embeds=flux_embeds["in.prompt_embeds"], pooled_prompt_embeds=flux_embeds["in.pooled"],
    image=init, mask_image=masks["box"], height=64, width=64, num_inference_steps=4, guidance_scale=7.0, strength=0.8,
    padding_mask_crop=8)

save_file({k: v.contiguous() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
