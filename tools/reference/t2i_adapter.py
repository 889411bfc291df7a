# Our own script (DiffusersSharp): runs diffusers' OWN T2I-Adapter code to make the parity fixture
# local-diffusers/t2i-adapter under ROOT (default tests/DiffusersSharp.Tests/Fixtures; see the fixture's README.md).
#   1. tiny adapters drawn by diffusers' T2IAdapter constructor (PyTorch's default initialisation) under fixed seeds, one
#      per adapter_type, sized for tiny-sd15's UNet (full_adapter, light_adapter; a second light_adapter taking a
#      grayscale image) and tiny-sdxl's (full_adapter_xl); saved as diffusers folders (config.json +
#      diffusion_pytorch_model.safetensors) and reloaded with from_pretrained;
#   2. one forward per adapter type, and tiny UNet forwards taking the features as down_intrablock_additional_residuals
#      (tiny-sd15 also with the ControlNet residuals of local-diffusers/controlnet/sd15 at the same time);
#   3. StableDiffusionAdapterPipeline (one adapter; two adapters at once, MultiAdapter with per-adapter weights) and
#      StableDiffusionXLAdapterPipeline (adapter_conditioning_factor 0.5) on a drawn sketch.
# No CLIP can run (transformers is a stub in the scratch environment): prompt embeddings are random tensors passed in,
# and the pipelines are built without text encoders, tokenizers or safety checker. Every step's latents are recorded
# by wrapping the scheduler's step (the adapter pipelines only have the old `callback`, which PNDM skips at step 0).
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/t2i_adapter.py tests/DiffusersSharp.Tests/Fixtures
import functools, os, sys
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, ControlNetModel, PNDMScheduler, EulerDiscreteScheduler, T2IAdapter
from diffusers.pipelines.t2i_adapter.pipeline_stable_diffusion_adapter import StableDiffusionAdapterPipeline
from diffusers.pipelines.t2i_adapter.pipeline_stable_diffusion_xl_adapter import StableDiffusionXLAdapterPipeline

FX = (sys.argv[1] if len(sys.argv) > 1 else "tests/DiffusersSharp.Tests/Fixtures").rstrip("/") + "/"
OUT = FX + "local-diffusers/t2i-adapter/"
os.makedirs(OUT, exist_ok=True)
out = {}


def make_adapter(name, seed, **config):
    torch.manual_seed(seed)
    adapter = T2IAdapter(**config)
    folder = OUT + name
    os.makedirs(folder, exist_ok=True)
    # save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
    adapter.save_config(folder)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, folder + "/diffusion_pytorch_model.safetensors")
    return T2IAdapter.from_pretrained(folder).eval()  # as loaded from the saved files


# 1. Adapters. tiny-sd15's UNet: block_out_channels (32, 32, 64, 64), four down blocks; tiny-sdxl's: (16, 32, 64), three.
full = make_adapter("full", 1, in_channels=3, channels=[32, 32, 64, 64], num_res_blocks=2, downscale_factor=8, adapter_type="full_adapter")
light = make_adapter("light", 2, in_channels=3, channels=[32, 32, 64], num_res_blocks=2, downscale_factor=8, adapter_type="light_adapter")
light_gray = make_adapter("light_gray", 3, in_channels=1, channels=[32, 32, 64], num_res_blocks=1, downscale_factor=8,
                          adapter_type="light_adapter")
xl = make_adapter("xl", 4, in_channels=3, channels=[16, 32, 64, 64], num_res_blocks=2, downscale_factor=16, adapter_type="full_adapter_xl")

# The adapter images, 80 wide x 64 high (saved, then read back as the tests read them): a sketch (white strokes on
# black, RGB) and a grayscale depth-like ramp (L).
sketch = Image.new("RGB", (80, 64), (0, 0, 0))
d = ImageDraw.Draw(sketch)
d.polygon([(8, 56), (30, 6), (52, 56)], outline=(255, 255, 255))
d.ellipse((44, 10, 74, 40), outline=(230, 230, 230), width=2)
d.line((0, 30, 79, 62), fill=(180, 180, 180), width=3)
sketch.save(OUT + "sketch.png")
depth = Image.new("L", (80, 64), 0)
d = ImageDraw.Draw(depth)
for y in range(64):
    d.line((0, y, 79, y), fill=4 * y)
d.ellipse((24, 12, 60, 48), fill=250)
depth.save(OUT + "depth.png")
sketch = Image.open(OUT + "sketch.png").convert("RGB")
depth = Image.open(OUT + "depth.png")
assert depth.mode == "L"

g = torch.Generator("cpu").manual_seed(20261203)
pe15, npe15 = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
pexl, pooled, npexl, npooled = (torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g),
                                torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g))
out.update({"in.sd15.prompt_embeds": pe15, "in.sd15.neg_prompt_embeds": npe15, "in.sdxl.prompt_embeds": pexl,
            "in.sdxl.pooled": pooled, "in.sdxl.neg_prompt_embeds": npexl, "in.sdxl.neg_pooled": npooled})

# 2. Forwards: adapter inputs [2, C, 64, 80] (torch.rand), latents [2, 4, 8, 10], timesteps [901, 301].
with torch.no_grad():
    for name, adapter, channels in [("full", full, 3), ("light", light, 3), ("light_gray", light_gray, 1), ("xl", xl, 3)]:
        x = torch.rand(2, channels, 64, 80, generator=g)
        out[f"fwd.{name}.x"] = x
        features = adapter(x)
        for i, f in enumerate(features):
            out[f"fwd.{name}.f{i}"] = f
        print(name, "features:", [tuple(f.shape) for f in features])

    sd_unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sd15/model", subfolder="unet").eval()
    xl_unet = UNet2DConditionModel.from_pretrained(FX + "tiny-sdxl/model", subfolder="unet").eval()
    t = torch.tensor([901., 301.])
    out["fwd.t"] = t
    for name, unet, adapter, text, extra in [
            ("sd15", sd_unet, "full", 32, {}),
            ("sdxl", xl_unet, "xl", 64, {"text_embeds": torch.randn(2, 32, generator=g),
                                         "time_ids": torch.tensor([[64., 80, 0, 0, 64, 80], [96., 120, 8, 4, 64, 80]])})]:
        sample = torch.randn(2, 4, 8, 10, generator=g)
        states = torch.randn(2, 7, text, generator=g)
        out.update({f"fwd.{name}.sample": sample, f"fwd.{name}.states": states})
        for k, v in extra.items():
            out[f"fwd.{name}.{k}"] = v
        features = [out[f"fwd.{adapter}.f{i}"] for i in range(4)]
        y = unet(sample, t, encoder_hidden_states=states, added_cond_kwargs=extra or None,
                 down_intrablock_additional_residuals=[f.clone() for f in features], return_dict=False)[0]
        out[f"fwd.{name}.unet"] = y
        if name == "sd15":
            # ControlNet residuals and adapter maps together (diffusers adds the adapter's inside the blocks first).
            cn = ControlNetModel.from_pretrained(FX + "local-diffusers/controlnet/sd15").eval()
            cond = torch.rand(2, 3, 64, 80, generator=g)
            out["fwd.sd15.cond"] = cond
            down, mid = cn(sample, t, encoder_hidden_states=states, controlnet_cond=cond, conditioning_scale=0.7, return_dict=False)
            y = unet(sample, t, encoder_hidden_states=states, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                     down_intrablock_additional_residuals=[f.clone() for f in features], return_dict=False)[0]
            out["fwd.sd15.unet_controlnet"] = y
        print(name, "unet:", tuple(y.shape))


# 3. Pipelines.
def run(name, pipe, seed, **kw):
    original = pipe.scheduler.step

    @functools.wraps(original)  # keeps step's signature: the pipeline passes eta / generator by inspecting it
    def recording_step(model_output, timestep, sample, *args, **kwargs):
        result = original(model_output, timestep, sample, *args, **kwargs)
        latents = result[0] if isinstance(result, tuple) else result.prev_sample
        i = len([k for k in out if k.startswith(name + ".step") and k.endswith(".latents")])
        out[f"{name}.step{i}.latents"] = latents.clone()
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(timestep)])
        return result

    with torch.no_grad():
        pipe.scheduler.step = recording_step
        lat = pipe(output_type="latent", generator=torch.Generator("cpu").manual_seed(seed), **kw).images
        pipe.scheduler.step = original
        img = pipe(output_type="np", generator=torch.Generator("cpu").manual_seed(seed), **kw).images
    out[f"{name}.latents"] = lat
    out[f"{name}.image"] = torch.from_numpy(img)
    print(name, tuple(lat.shape), float(lat.abs().max()), len([k for k in out if k.startswith(name + ".step") and k.endswith("latents")]), "steps")


sd_vae = AutoencoderKL.from_pretrained(FX + "tiny-sd15/model", subfolder="vae").eval()
def sd_pipe(adapter):
    return StableDiffusionAdapterPipeline(vae=sd_vae, text_encoder=None, tokenizer=None, unet=sd_unet, adapter=adapter,
                                          scheduler=PNDMScheduler.from_pretrained(FX + "tiny-sd15/model", subfolder="scheduler"),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)

sd_embeds = dict(prompt_embeds=pe15, negative_prompt_embeds=npe15)
run("sd15", sd_pipe(full), 11, **sd_embeds, image=sketch, num_inference_steps=8, adapter_conditioning_scale=0.8)
# Two adapters (MultiAdapter): an RGB sketch and a grayscale image, resized to 64 x 64, weights 0.7 and 1.3.
run("sd15_multi", sd_pipe([full, light_gray]), 12, **sd_embeds, image=[sketch, depth], height=64, width=64,
    num_inference_steps=6, guidance_scale=6.0, adapter_conditioning_scale=[0.7, 1.3])
run("sd15_light", sd_pipe(light), 13, **sd_embeds, image=sketch, num_inference_steps=5, adapter_conditioning_scale=1.2)

xl_vae = AutoencoderKL.from_pretrained(FX + "tiny-sdxl/model", subfolder="vae").eval()
xl_pipe = StableDiffusionXLAdapterPipeline(vae=xl_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                           unet=xl_unet, adapter=xl,
                                           scheduler=EulerDiscreteScheduler.from_pretrained(FX + "tiny-sdxl/model", subfolder="scheduler"),
                                           force_zeros_for_empty_prompt=True)
xl_embeds = dict(prompt_embeds=pexl, pooled_prompt_embeds=pooled, negative_prompt_embeds=npexl, negative_pooled_prompt_embeds=npooled)
run("sdxl", xl_pipe, 21, **xl_embeds, image=sketch, num_inference_steps=8, adapter_conditioning_scale=0.9,
    adapter_conditioning_factor=0.5)

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")

# Full-size parameter counts (printed only; the tests hold them): diffusers' T2IAdapter built from the configs of
# TencentARC/t2iadapter_canny_sd15v2, TencentARC/t2i-adapter-canny-sdxl-1.0 and TencentARC/t2iadapter_color_sd14v1.
for name, config in [("sd15 full_adapter", dict(in_channels=1, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=8,
                                                adapter_type="full_adapter")),
                     ("sdxl full_adapter_xl", dict(in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=16,
                                                   adapter_type="full_adapter_xl")),
                     ("sd14 light_adapter", dict(in_channels=3, channels=[320, 640, 1280], num_res_blocks=4, downscale_factor=8,
                                                 adapter_type="light_adapter"))]:
    model = T2IAdapter(**config)
    print("full size", name, sum(p.numel() for p in model.parameters()), "parameters,", len(model.state_dict()), "tensors")
