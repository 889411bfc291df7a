# Our own script (DiffusersSharp): runs diffusers' OWN ControlNet code to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/controlnet (see its README.md).
#   1. tiny ControlNets: diffusers' ControlNetModel.from_unet on tiny-sd15's and tiny-sdxl's UNets (weights copied from
#      the UNet as diffusers does; the rest drawn by its constructor under torch.manual_seed(0)),
#      conditioning_embedding_out_channels (8, 8, 16, 16) (three stride-2 convs: the VAE's factor 8); then, under torch.manual_seed(1), every zero-initialised conv (controlnet_down_blocks,
#      controlnet_mid_block, controlnet_cond_embedding.conv_out) re-drawn with PyTorch's default Conv2d initialisation
#      (reset_parameters) so the residuals are not zero;
#   2. one ControlNet forward per model (plain, and guess mode) and one UNet forward taking those residuals;
#   3. StableDiffusionControlNetPipeline and StableDiffusionXLControlNetPipeline runs on a drawn edge map (control.png).
# No CLIP can run (transformers is a stub in the scratch environment): prompt embeddings are random tensors passed in,
# and the pipelines are built without text encoders, tokenizers or safety checker.
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet.py
import json, os
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, ControlNetModel, PNDMScheduler, EulerDiscreteScheduler
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl import StableDiffusionXLControlNetPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/controlnet/"
os.makedirs(OUT, exist_ok=True)
out = {}


def make_controlnet(base, name):
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()
    torch.manual_seed(0)  # the conditioning embedding's convs keep the constructor's random draws
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    torch.manual_seed(1)
    for conv in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
        conv.reset_parameters()
    folder = OUT + name
    os.makedirs(folder, exist_ok=True)
    # save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
    cn.save_config(folder)
    save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")
    return unet, ControlNetModel.from_pretrained(folder).eval()  # as loaded from the saved files


# The control image: an edge map (white strokes on black), 80 wide x 64 high, so the default size comes from it.
control = Image.new("RGB", (80, 64), (0, 0, 0))
d = ImageDraw.Draw(control)
d.ellipse((10, 8, 50, 48), outline=(255, 255, 255), width=2)
d.line((0, 60, 79, 20), fill=(255, 255, 255), width=2)
d.rectangle((56, 30, 74, 56), outline=(200, 200, 200), width=1)
control.save(OUT + "control.png")
control = Image.open(OUT + "control.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261201)
pe15, npe15 = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
pexl, pooled, npexl, npooled = (torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g),
                                torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g))
out.update({"in.sd15.prompt_embeds": pe15, "in.sd15.neg_prompt_embeds": npe15, "in.sdxl.prompt_embeds": pexl,
            "in.sdxl.pooled": pooled, "in.sdxl.neg_prompt_embeds": npexl, "in.sdxl.neg_pooled": npooled})

sd_unet, sd_cn = make_controlnet(FX + "tiny-sd15/model", "sd15")
xl_unet, xl_cn = make_controlnet(FX + "tiny-sdxl/model", "sdxl")

# 2. Forwards: batch 2, latents 8 x 10, the control image as a [0, 1] tensor at 64 x 80.
for name, cn, unet, text, extra in [
        ("sd15", sd_cn, sd_unet, 32, {}),
        ("sdxl", xl_cn, xl_unet, 64, {"text_embeds": torch.randn(2, 32, generator=g),
                                      "time_ids": torch.tensor([[64., 80, 0, 0, 64, 80], [96., 120, 8, 4, 64, 80]])})]:
    sample = torch.randn(2, 4, 8, 10, generator=g)
    states = torch.randn(2, 7, text, generator=g)
    cond = torch.rand(2, 3, 64, 80, generator=g)
    t = torch.tensor([901., 301.])
    out.update({f"fwd.{name}.sample": sample, f"fwd.{name}.states": states, f"fwd.{name}.cond": cond, f"fwd.{name}.t": t})
    for k, v in extra.items():
        out[f"fwd.{name}.{k}"] = v
    with torch.no_grad():
        for mode, guess in [("plain", False), ("guess", True)]:
            down, mid = cn(sample, t, encoder_hidden_states=states, controlnet_cond=cond, conditioning_scale=0.7,
                           guess_mode=guess, added_cond_kwargs=extra or None, return_dict=False)
            for i, r in enumerate(down):
                out[f"fwd.{name}.{mode}.down{i}"] = r
            out[f"fwd.{name}.{mode}.mid"] = mid
            if mode == "plain":
                y = unet(sample, t, encoder_hidden_states=states, added_cond_kwargs=extra or None,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False)[0]
                out[f"fwd.{name}.unet"] = y
    print(name, "forward:", len(down), "down residuals, mid", tuple(mid.shape))

# 3. Pipelines.
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

sd_vae = AutoencoderKL.from_pretrained(FX + "tiny-sd15/model", subfolder="vae").eval()
sd = StableDiffusionControlNetPipeline(vae=sd_vae, text_encoder=None, tokenizer=None, unet=sd_unet, controlnet=sd_cn,
                                       scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
sd_embeds = dict(prompt_embeds=pe15, negative_prompt_embeds=npe15)
run("sd15", sd, 11, **sd_embeds, image=control, num_inference_steps=8, controlnet_conditioning_scale=0.8)
run("sd15_window", sd, 12, **sd_embeds, image=control, height=64, width=64, num_inference_steps=10,
    controlnet_conditioning_scale=1.3, control_guidance_start=0.1, control_guidance_end=0.6)
run("sd15_guess", sd, 13, **sd_embeds, image=control, num_inference_steps=8, guidance_scale=3.5, guess_mode=True)

xl_vae = AutoencoderKL.from_pretrained(FX + "tiny-sdxl/model", subfolder="vae").eval()
xl = StableDiffusionXLControlNetPipeline(vae=xl_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                         unet=xl_unet, controlnet=xl_cn,
                                         scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                                         force_zeros_for_empty_prompt=True, add_watermarker=False)
xl_embeds = dict(prompt_embeds=pexl, pooled_prompt_embeds=pooled, negative_prompt_embeds=npexl, negative_pooled_prompt_embeds=npooled)
run("sdxl", xl, 21, **xl_embeds, image=control, num_inference_steps=8, controlnet_conditioning_scale=0.7)
run("sdxl_window", xl, 22, **xl_embeds, image=control, height=64, width=64, num_inference_steps=10,
    controlnet_conditioning_scale=1.2, control_guidance_start=0.2, control_guidance_end=0.6)
run("sdxl_guess", xl, 23, **xl_embeds, image=control, num_inference_steps=8, guidance_scale=4.0, guess_mode=True)

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
