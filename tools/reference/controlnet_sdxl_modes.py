# Our own script (DiffusersSharp): runs diffusers' OWN SDXL ControlNet image-to-image and inpainting pipelines to make the
# parity fixture tests/DiffusersSharp.Tests/Fixtures/local-diffusers/controlnet-sdxl-modes (see its README.md), on
# tiny-sdxl with the tiny SDXL ControlNet of local-diffusers/controlnet/sdxl (made by controlnet.py, loaded as it is).
# It reads, and does not write, the images of local-diffusers/controlnet and local-diffusers/controlnet-modes.
# No CLIP runs (transformers is a stub in the scratch environment): the prompt embeddings (and the pooled ones SDXL also
# takes) are random tensors passed in. Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet_sdxl_modes.py
import os
import torch
from PIL import Image
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, ControlNetModel, EulerDiscreteScheduler
from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl_img2img import StableDiffusionXLControlNetImg2ImgPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_inpaint_sd_xl import StableDiffusionXLControlNetInpaintPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/controlnet-sdxl-modes/"
os.makedirs(OUT, exist_ok=True)
out = {}

unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sdxl/model", subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(FX + "tiny-sdxl/model", subfolder="vae").eval()
cn = ControlNetModel.from_pretrained(FX + "local-diffusers/controlnet/sdxl").eval()

control = Image.open(FX + "local-diffusers/controlnet/control.png").convert("RGB")
control2 = Image.open(FX + "local-diffusers/controlnet-modes/control2.png").convert("RGB")
init = Image.open(FX + "local-diffusers/controlnet-modes/init.png").convert("RGB")
mask = Image.open(FX + "local-diffusers/controlnet-modes/mask.png")

g = torch.Generator("cpu").manual_seed(20261203)
pe, pooled, npe, npooled = (torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g),
                            torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g))
out.update({"in.prompt_embeds": pe, "in.pooled": pooled, "in.neg_prompt_embeds": npe, "in.neg_pooled": npooled})
embeds = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npooled)


def steps_cb(name):
    def cb(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        return kw
    return cb


def run(name, pipe, seed, **kw):
    with torch.no_grad():
        lat = pipe(output_type="latent", generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=steps_cb(name),
                   **kw).images
        img = pipe(output_type="np", generator=torch.Generator("cpu").manual_seed(seed), **kw).images
    out[f"{name}.latents"] = lat
    out[f"{name}.image"] = torch.from_numpy(img)
    print(name, tuple(lat.shape), float(lat.abs().max()), len([k for k in out if k.startswith(name + ".step") and k.endswith("latents")]), "steps")


def parts(controlnet):
    return dict(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet, controlnet=controlnet,
                scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                force_zeros_for_empty_prompt=True, add_watermarker=False)

i2i = StableDiffusionXLControlNetImg2ImgPipeline(**parts(cn))
run("img2img", i2i, 71, **embeds, image=init, control_image=control, strength=0.6, num_inference_steps=10)

inp = StableDiffusionXLControlNetInpaintPipeline(**parts(cn))
run("inpaint", inp, 81, **embeds, image=init, mask_image=mask, control_image=control, num_inference_steps=8)
run("inpaint_strength", inp, 82, **embeds, image=init, mask_image=mask, control_image=control, strength=0.7,
    num_inference_steps=10, controlnet_conditioning_scale=0.9, control_guidance_start=0.2, control_guidance_end=0.8)

# Two ControlNets at once (MultiControlNetModel): the same tiny SDXL ControlNet twice, with two control images.
i2i_multi = StableDiffusionXLControlNetImg2ImgPipeline(**parts([cn, cn]))
run("img2img_multi", i2i_multi, 72, **embeds, image=init, control_image=[control, control2], strength=0.6, num_inference_steps=10,
    controlnet_conditioning_scale=[0.5, 0.9], control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
