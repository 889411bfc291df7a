# Our own script (DiffusersSharp): runs diffusers' OWN ControlNet pipelines to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/controlnet-modes (see its README.md): several ControlNets at once
# (MultiControlNetModel), ControlNet image-to-image and ControlNet inpainting on tiny-sd15 (its 4-channel UNet, and a
# 9-channel variant of it).
#   - the first ControlNet is local-diffusers/controlnet/sd15 (made by controlnet.py, loaded as it is); the second is
#     drawn here the same way (ControlNetModel.from_unet on tiny-sd15's UNet, conditioning_embedding_out_channels
#     (8, 8, 16, 16), the constructor under torch.manual_seed(2), the zero convs re-drawn under torch.manual_seed(3));
#   - images drawn with PIL: control2.png (a second control image), init.png (the img2img / inpaint start), mask.png.
# No CLIP runs (transformers is a stub in the scratch environment): the prompt embeddings are random tensors passed in.
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet_modes.py
import os
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, ControlNetModel, PNDMScheduler
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_img2img import StableDiffusionControlNetImg2ImgPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_inpaint import StableDiffusionControlNetInpaintPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/controlnet-modes/"
os.makedirs(OUT, exist_ok=True)
out = {}

unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sd15/model", subfolder="unet").eval()
cn_a = ControlNetModel.from_pretrained(FX + "local-diffusers/controlnet/sd15").eval()
torch.manual_seed(2)
cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
torch.manual_seed(3)
for conv in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
    conv.reset_parameters()
os.makedirs(OUT + "sd15b", exist_ok=True)
cn.save_config(OUT + "sd15b")
save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, OUT + "sd15b/diffusion_pytorch_model.safetensors")
cn_b = ControlNetModel.from_pretrained(OUT + "sd15b").eval()

# Images, 80 wide x 64 high (saved, then read back as the tests read them).
control2 = Image.new("RGB", (80, 64), (0, 0, 0))
d = ImageDraw.Draw(control2)
for x in range(80):  # a horizontal ramp, like a depth map
    d.line((x, 0, x, 63), fill=(x * 3, x * 3, x * 3))
d.ellipse((20, 10, 60, 50), fill=(250, 250, 250))
control2.save(OUT + "control2.png")
init = Image.new("RGB", (80, 64), (40, 90, 160))
d = ImageDraw.Draw(init)
for y in range(64):
    d.line((0, y, 79, y), fill=(40 + 3 * y, 90, 160 - 2 * y))
d.rectangle((8, 8, 36, 40), fill=(220, 200, 40))
d.ellipse((44, 20, 76, 58), fill=(30, 160, 60))
init.save(OUT + "init.png")
mask = Image.new("L", (80, 64), 0)
ImageDraw.Draw(mask).rectangle((30, 12, 70, 52), fill=255)
mask.save(OUT + "mask.png")
control = Image.open(FX + "local-diffusers/controlnet/control.png").convert("RGB")
control2 = Image.open(OUT + "control2.png").convert("RGB")
init = Image.open(OUT + "init.png").convert("RGB")
mask = Image.open(OUT + "mask.png")

g = torch.Generator("cpu").manual_seed(20261202)
pe, npe = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
out.update({"in.prompt_embeds": pe, "in.neg_prompt_embeds": npe})
embeds = dict(prompt_embeds=pe, negative_prompt_embeds=npe)


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


vae = AutoencoderKL.from_pretrained(FX + "tiny-sd15/model", subfolder="vae").eval()
def parts(controlnet):
    return dict(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
                scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)

multi = StableDiffusionControlNetPipeline(**parts([cn_a, cn_b]))
run("multi", multi, 31, **embeds, image=[control, control2], num_inference_steps=10,
    controlnet_conditioning_scale=[0.8, 1.3], control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])
run("multi_guess", multi, 32, **embeds, image=[control, control2], num_inference_steps=8, guidance_scale=3.5, guess_mode=True,
    controlnet_conditioning_scale=[1.0, 0.6], control_guidance_end=0.8)

i2i = StableDiffusionControlNetImg2ImgPipeline(**parts(cn_a))
run("img2img", i2i, 41, **embeds, image=init, control_image=control, strength=0.6, num_inference_steps=10)

inp = StableDiffusionControlNetInpaintPipeline(**parts(cn_a))
run("inpaint", inp, 51, **embeds, image=init, mask_image=mask, control_image=control, num_inference_steps=8)
run("inpaint_strength", inp, 52, **embeds, image=init, mask_image=mask, control_image=control, strength=0.7,
    num_inference_steps=10, controlnet_conditioning_scale=0.9, control_guidance_start=0.2)

# A 9-channel inpainting UNet (latents, mask, masked-image latents): tiny-sd15's UNet with in_channels 9, every weight
# copied but conv_in.weight, re-drawn by reset_parameters() under torch.manual_seed(4) and stored as an input. The
# ControlNet (4 channels) is given the latents alone.
cfg = dict(unet.config)
cfg["in_channels"] = 9
unet9 = UNet2DConditionModel.from_config(cfg)
weights = unet.state_dict()
torch.manual_seed(4)
unet9.conv_in.reset_parameters()
weights["conv_in.weight"] = unet9.conv_in.weight.detach().clone()
unet9.load_state_dict(weights)
unet9.eval()
out["in.unet9.conv_in.weight"] = weights["conv_in.weight"]
inp9 = StableDiffusionControlNetInpaintPipeline(**dict(parts(cn_a), unet=unet9))
run("inpaint9", inp9, 61, **embeds, image=init, mask_image=mask, control_image=control, num_inference_steps=8)
run("inpaint9_strength", inp9, 62, **embeds, image=init, mask_image=mask, control_image=control, strength=0.7,
    num_inference_steps=10, controlnet_conditioning_scale=0.9)

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
