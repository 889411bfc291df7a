# Our own script (DiffusersSharp): runs diffusers' OWN SDXL pipelines to make the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/sdxl-refiner (see its README.md).
#   1. a tiny refiner UNet: tiny-sdxl's UNet config changed where stabilityai's refiner differs (cross-attention on
#      text_encoder_2's states alone, add_embedding on 5 time ids + text_encoder_2's pooled projection), random weights
#      drawn by diffusers' UNet2DConditionModel constructor under torch.manual_seed(0);
#   2. "i2i": StableDiffusionXLImg2ImgPipeline(requires_aesthetics_score=True) on tiny-sdxl/init_image.png, strength 0.3;
#   3. "base" + "refine": tiny-sdxl's StableDiffusionXLPipeline with denoising_end=0.8 (output_type="latent"), then the
#      refiner with denoising_start=0.8 on those latents.
# No CLIP can run (transformers is a stub in the scratch environment), so the prompt embeddings are random tensors
# passed in, and the pipelines are built with text encoders and tokenizers None.
# Run from the repository root with the scratch environment:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/sdxl_refiner.py
import json, os
import torch
from PIL import Image
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, EulerDiscreteScheduler
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import StableDiffusionXLImg2ImgPipeline

FX = "tests/DiffusersSharp.Tests/Fixtures/"
BASE = FX + "tiny-sdxl/model"
OUT = FX + "local-diffusers/sdxl-refiner/"
os.makedirs(OUT + "unet", exist_ok=True)

# 1. The refiner UNet.
cfg = json.load(open(BASE + "/unet/config.json"))
cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
te2 = json.load(open(BASE + "/text_encoder_2/config.json"))
cfg["cross_attention_dim"] = te2["hidden_size"]                                    # 32: text_encoder_2 only
cfg["projection_class_embeddings_input_dim"] = 5 * cfg["addition_time_embed_dim"] + te2["projection_dim"]  # 72
torch.manual_seed(0)
refiner_unet = UNet2DConditionModel(**cfg).eval()
# save_pretrained's sharding helper needs torch 2; write the same two files directly (the safetensors shim).
refiner_unet.save_config(OUT + "unet")
save_file({k: v.contiguous() for k, v in refiner_unet.state_dict().items()}, OUT + "unet/diffusion_pytorch_model.safetensors")
index = json.load(open(BASE + "/model_index.json"))
index.update({"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None], "tokenizer": [None, None],
              "requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False})
json.dump(index, open(OUT + "model_index.json", "w"), indent=2)
refiner_unet = UNet2DConditionModel.from_pretrained(OUT + "unet").eval()   # as loaded from the saved files

vae = AutoencoderKL.from_pretrained(BASE, subfolder="vae").eval()
base_unet = UNet2DConditionModel.from_pretrained(BASE, subfolder="unet").eval()
sched = lambda: EulerDiscreteScheduler.from_pretrained(BASE, subfolder="scheduler")
refiner = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                           unet=refiner_unet, scheduler=sched(), requires_aesthetics_score=True,
                                           force_zeros_for_empty_prompt=False, add_watermarker=False)
base = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                 unet=base_unet, scheduler=sched(), force_zeros_for_empty_prompt=True, add_watermarker=False)

out = {}
g = torch.Generator("cpu").manual_seed(20261128)
# Refiner conditioning: text_encoder_2's 32-wide states and pooled projection; base: both encoders' 64-wide states.
r_pe, r_pooled = torch.randn(1, 77, 32, generator=g), torch.randn(1, 32, generator=g)
r_npe, r_npooled = torch.randn(1, 77, 32, generator=g), torch.randn(1, 32, generator=g)
b_pe, b_pooled = torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g)
b_npe, b_npooled = torch.randn(1, 77, 64, generator=g), torch.randn(1, 32, generator=g)
out.update({"in.refiner.prompt_embeds": r_pe, "in.refiner.pooled": r_pooled, "in.refiner.neg_prompt_embeds": r_npe,
            "in.refiner.neg_pooled": r_npooled, "in.base.prompt_embeds": b_pe, "in.base.pooled": b_pooled,
            "in.base.neg_prompt_embeds": b_npe, "in.base.neg_pooled": b_npooled})
r_embeds = dict(prompt_embeds=r_pe, pooled_prompt_embeds=r_pooled, negative_prompt_embeds=r_npe, negative_pooled_prompt_embeds=r_npooled)
b_embeds = dict(prompt_embeds=b_pe, pooled_prompt_embeds=b_pooled, negative_prompt_embeds=b_npe, negative_pooled_prompt_embeds=b_npooled)

def steps_cb(name):
    def cb(p, i, t, kw):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        out[f"{name}.step{i}.timestep"] = torch.tensor([float(t)])
        if i == 0:
            out[f"{name}.add_time_ids"] = kw["add_time_ids"].clone()
        return kw
    return cb

def run(name, pipe, seed, **kw):
    with torch.no_grad():
        lat = pipe(output_type="latent", generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=steps_cb(name),
                   callback_on_step_end_tensor_inputs=["latents", "add_time_ids"], **kw).images
        img = pipe(output_type="np", generator=torch.Generator("cpu").manual_seed(seed), **kw).images
    out[f"{name}.latents"] = lat
    out[f"{name}.image"] = torch.from_numpy(img)
    print(name, tuple(lat.shape), float(lat.abs().max()), len([k for k in out if k.startswith(name + ".step") and k.endswith("latents")]), "steps")
    return lat

# 2. Refiner image-to-image with aesthetic scores and micro-conditioning.
init = Image.open(FX + "tiny-sdxl/init_image.png").convert("RGB")
i2i = dict(image=init, strength=0.3, num_inference_steps=20, guidance_scale=5.0, aesthetic_score=7.0, negative_aesthetic_score=2.0,
           original_size=(96, 80), crops_coords_top_left=(4, 8), negative_original_size=(48, 40), negative_crops_coords_top_left=(0, 4))
run("i2i", refiner, 31, **r_embeds, **i2i)

# 3. The ensemble of experts: base to 80% of the schedule, the refiner from there.
handoff = run("base", base, 1234, **b_embeds, height=64, width=64, num_inference_steps=10, guidance_scale=5.0, denoising_end=0.8)
run("refine", refiner, 99, **r_embeds, image=handoff, num_inference_steps=10, guidance_scale=5.0, denoising_start=0.8)

save_file({k: v.contiguous().float() for k, v in out.items()}, OUT + "expected.safetensors")
print("saved", len(out), "tensors")
