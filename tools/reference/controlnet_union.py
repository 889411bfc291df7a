# Our own script (DiffusersSharp): runs diffusers' OWN ControlNet-Union code to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/controlnet-union (see its README.md).
#   1. a tiny ControlNet-Union: diffusers' ControlNetUnionModel.from_unet on tiny-sdxl's UNet (weights copied from the UNet
#      as diffusers does; the rest drawn by its constructor under torch.manual_seed(0)); from_unet builds with `cls(...)`,
#      which is given the constructor with num_control_type 8, num_trans_channel / num_proj_channel 16 (the UNet's
#      block_out_channels[0]), num_trans_head 2 and num_trans_layer 2 added, and conditioning_embedding_out_channels
#      (8, 8, 16, 16); then, under torch.manual_seed(1), every zero-initialised part (controlnet_down_blocks,
#      controlnet_mid_block, controlnet_cond_embedding.conv_out, spatial_ch_projs: reset_parameters) and the attention
#      biases and LayerNorm affines (zeros / ones otherwise: normal draws) re-drawn so that none is trivial;
#   2. ControlNetUnionModel forwards (two conditions, one condition, two in guess mode);
#   3. StableDiffusionXLControlNetUnionPipeline, ...Img2ImgPipeline and ...InpaintPipeline runs on tiny-sdxl.
# It reads, and does not write, the images of local-diffusers/controlnet and local-diffusers/controlnet-modes.
# No CLIP can run (transformers is a stub in the scratch environment): prompt embeddings are random tensors passed in,
# and the pipelines are built without text encoders or tokenizers. Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet_union.py
import os
import torch
from torch import nn
from PIL import Image
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, ControlNetUnionModel, EulerDiscreteScheduler
from diffusers.pipelines.controlnet.pipeline_controlnet_union_sd_xl import StableDiffusionXLControlNetUnionPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_union_sd_xl_img2img import StableDiffusionXLControlNetUnionImg2ImgPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_union_inpaint_sd_xl import StableDiffusionXLControlNetUnionInpaintPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/controlnet-union/"
os.makedirs(OUT, exist_ok=True)
out = {}

# 1. The tiny ControlNet-Union.
unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sdxl/model", subfolder="unet").eval()
torch.manual_seed(0)
tiny = dict(num_control_type=8, num_trans_channel=16, num_trans_head=2, num_trans_layer=2, num_proj_channel=16)
cn = ControlNetUnionModel.from_unet.__func__(lambda **kw: ControlNetUnionModel(**kw, **tiny), unet,
                                             conditioning_embedding_out_channels=(8, 8, 16, 16))
torch.manual_seed(1)
for layer in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out, cn.spatial_ch_projs]:
    layer.reset_parameters()
with torch.no_grad():
    for block in cn.transformer_layes:
        nn.init.normal_(block.attn.in_proj_bias, std=0.1)
        nn.init.normal_(block.attn.out_proj.bias, std=0.1)
        for ln in (block.ln_1, block.ln_2):
            nn.init.normal_(ln.weight, mean=1.0, std=0.1)
            nn.init.normal_(ln.bias, std=0.1)
folder = OUT + "union"
os.makedirs(folder, exist_ok=True)
# save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
cn.save_config(folder)
save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")
cn = ControlNetUnionModel.from_pretrained(folder).eval()  # as loaded from the saved files

# The images: the edge maps and start image of the other ControlNet fixtures, and the repaint condition diffusers' union
# inpainting example makes (the start image with the masked pixels set to black), written here.
control = Image.open(FX + "local-diffusers/controlnet/control.png").convert("RGB")
control2 = Image.open(FX + "local-diffusers/controlnet-modes/control2.png").convert("RGB")
init = Image.open(FX + "local-diffusers/controlnet-modes/init.png").convert("RGB")
mask = Image.open(FX + "local-diffusers/controlnet-modes/mask.png")
repaint = Image.composite(Image.new("RGB", init.size), init, mask.convert("L").point(lambda v: 255 if v > 0 else 0))
repaint.save(OUT + "repaint.png")
repaint = Image.open(OUT + "repaint.png").convert("RGB")

g = torch.Generator("cpu").manual_seed(20261205)
pe, pooled, npe, npooled = (torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g),
                            torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g))
out.update({"in.prompt_embeds": pe, "in.pooled": pooled, "in.neg_prompt_embeds": npe, "in.neg_pooled": npooled})
embeds = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npooled)

# 2. Forwards: batch 2 (the condition transformer attends across the batch), latents 8 x 10, control images 64 x 80.
sample = torch.randn(2, 4, 8, 10, generator=g)
states = torch.randn(2, 7, 64, generator=g)
conds = [torch.rand(2, 3, 64, 80, generator=g), torch.rand(2, 3, 64, 80, generator=g)]
extra = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64., 80, 0, 0, 64, 80], [96., 120, 8, 4, 64, 80]])}
t = torch.tensor([901., 301.])
out.update({"fwd.sample": sample, "fwd.states": states, "fwd.cond0": conds[0], "fwd.cond1": conds[1], "fwd.t": t,
            "fwd.text_embeds": extra["text_embeds"], "fwd.time_ids": extra["time_ids"]})
for name, idx, cond, scale, guess in [("two", [3, 1], conds, [0.7, 1.2], False), ("one", [6], conds[:1], [0.8], False),
                                      ("two_guess", [3, 1], conds, [0.7, 1.2], True)]:
    control_type = torch.zeros(8).scatter_(0, torch.tensor(idx), 1).reshape(1, -1).repeat(2, 1)
    with torch.no_grad():
        down, mid = cn(sample, t, encoder_hidden_states=states, controlnet_cond=cond, control_type=control_type, control_type_idx=idx,
                       conditioning_scale=scale, guess_mode=guess, added_cond_kwargs=extra, return_dict=False)
    for i, r in enumerate(down):
        out[f"fwd.{name}.down{i}"] = r
    out[f"fwd.{name}.mid"] = mid
    print(name, "forward:", len(down), "down residuals, max |mid|", float(mid.abs().max()))


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


vae = AutoencoderKL.from_pretrained(FX + "tiny-sdxl/model", subfolder="vae").eval()


def parts(controlnet):
    return dict(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet, controlnet=controlnet,
                scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                force_zeros_for_empty_prompt=True, add_watermarker=False)


t2i = StableDiffusionXLControlNetUnionPipeline(**parts(cn))
run("t2i", t2i, 31, **embeds, control_image=[control], control_mode=[3], num_inference_steps=8, controlnet_conditioning_scale=0.7)
run("t2i_two", t2i, 32, **embeds, control_image=[control, control2], control_mode=[3, 1], num_inference_steps=10,
    controlnet_conditioning_scale=[0.6, 1.1], control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])
run("t2i_guess", t2i, 33, **embeds, control_image=[control, control2], control_mode=[3, 1], num_inference_steps=6,
    guidance_scale=1.0, guess_mode=True, controlnet_conditioning_scale=0.9)

# Two ControlNet-Unions at once (diffusers wraps the list in MultiControlNetUnionModel): one control image and mode each.
t2i_multi = StableDiffusionXLControlNetUnionPipeline(**parts([cn, cn]))
run("t2i_multi", t2i_multi, 34, **embeds, control_image=[control, control2], control_mode=[3, 1], num_inference_steps=8,
    controlnet_conditioning_scale=[0.5, 0.9], control_guidance_start=[0.0, 0.2], control_guidance_end=[0.8, 1.0])

i2i = StableDiffusionXLControlNetUnionImg2ImgPipeline(**parts(cn))
run("img2img", i2i, 41, **embeds, image=init, control_image=[init], control_mode=[6], strength=0.6, num_inference_steps=10)

inp = StableDiffusionXLControlNetUnionInpaintPipeline(**parts(cn))
run("inpaint", inp, 51, **embeds, image=init, mask_image=mask, control_image=[repaint], control_mode=[7], num_inference_steps=8)
run("inpaint_two", inp, 52, **embeds, image=init, mask_image=mask, control_image=[repaint, control], control_mode=[7, 3],
    strength=0.7, num_inference_steps=10, controlnet_conditioning_scale=[1.0, 0.5], control_guidance_start=0.1,
    control_guidance_end=[0.9, 0.6])

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
