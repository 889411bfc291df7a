"""diffusers' own SanaSprintImg2ImgPipeline on the tiny SANA-Sprint model: writes local-diffusers/sana-sprint-img2img/.

Usage (diffusers v0.39.0 source; see README.md for the environment; after sana.py and sana_sprint.py, whose VAE,
transformer and scheduler it uses):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana_sprint_img2img.py tests/DiffusersSharp.Tests/Fixtures

Writes expected.safetensors under local-diffusers/sana-sprint-img2img/: SanaSprintImg2ImgPipeline runs on
tiny-sd3/init_image.png (64 x 64, resized by the pipeline's VaeImageProcessor.preprocess to 96 x 64: Pillow's lanczos),
given prompt embeddings and masks drawn here: every step's latents (callback_on_step_end), the final latents
(output_type "latent": the last denoised prediction / sigma_data) and the images (output_type "pt"). Cases: default
(2 steps with the intermediate angle 1.3, diffusers' strength 0.6: t_start 0, so both steps run from the image noised at
angle 1.5708), half (4 linspace steps, strength 0.5: the last 2 steps, from the image noised at the third angle; two
prompts), images (2 steps, strength 0.9, two images per prompt from one image); all without resolution binning.
Also `CASE/image_latents`: the VAE encoding of the preprocessed image times scaling_factor and sigma_data, as
prepare_latents computes it.
"""
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x's float32 linspace, which SCMScheduler's 4-step schedule runs)
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderDC, SanaSprintImg2ImgPipeline, SanaTransformer2DModel, SCMScheduler

root = sys.argv[1]
here = f"{root}/local-diffusers/sana-sprint-img2img"
sprint = f"{root}/local-diffusers/sana-sprint"
g = torch.Generator("cpu").manual_seed(20261202)

transformer = SanaTransformer2DModel.from_pretrained(f"{sprint}/transformer").eval()
vae = AutoencoderDC.from_pretrained(f"{root}/local-diffusers/sana/vae").eval()
pipe = SanaSprintImg2ImgPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                 scheduler=SCMScheduler.from_pretrained(sprint, subfolder="scheduler"))
pipe.set_progress_bar_config(disable=True)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
tensors = {}


def embeds(n, lengths):
    e = torch.randn(n, 12, 24, generator=g)
    m = torch.zeros(n, 12, dtype=torch.int64)
    for i, l in enumerate(lengths):
        m[i, :l] = 1
    return e, m


def run(name, **kw):
    steps = []

    def on_step(p, i, t, cb):
        steps.append(cb["latents"].clone())
        return {}

    seed = kw.pop("seed")
    common = dict(image=image, height=64, width=96, use_resolution_binning=False)
    latents = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent", callback_on_step_end=on_step,
                   **common, **kw).images
    images = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", **common, **kw).images
    for i, s in enumerate(steps):
        tensors[f"{name}/step{i}"] = s
    tensors[f"{name}/latents"] = latents
    tensors[f"{name}/images"] = images
    with torch.no_grad():
        pre = pipe.prepare_image(image, 96, 64, "cpu", vae.dtype)
        tensors[f"{name}/image_latents"] = vae.encode(pre).latent * vae.config.scaling_factor * pipe.scheduler.config.sigma_data
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            tensors[f"{name}/{k}"] = v


pe, pm = embeds(1, [9])
run("default", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=4.5, seed=31)
pe, pm = embeds(2, [7, 12])
run("half", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=3.0, num_inference_steps=4, intermediate_timesteps=None,
    strength=0.5, seed=32)
pe, pm = embeds(1, [10])
run("images", prompt_embeds=pe, prompt_attention_mask=pm, guidance_scale=5.0, strength=0.9, num_images_per_prompt=2, seed=33)
save_file({k: v.contiguous() for k, v in tensors.items()}, f"{here}/expected.safetensors")
for k, v in tensors.items():
    if k.endswith("/images") or k.endswith("/latents"):
        print(k, list(v.shape), f"{v.abs().max().item():.4g}")
