"""diffusers' own Flux2KleinKVPipeline (reference tokens' keys / values cached at step 0) and the transformer's KV-cache
forwards on local-diffusers/flux2-klein's tiny model: writes local-diffusers/flux2-klein/kv.safetensors.

Usage (diffusers v0.39.0 source; see README.md for the environment), after flux2_klein.py:
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/flux2_klein_kv.py tests/DiffusersSharp.Tests/Fixtures

The pipeline is built from the folder's transformer, VAE and scheduler (no text encoder; the KV pipeline has no CFG);
its constructor sets the KV attention processors on the transformer. The prompt embeddings are flux2_klein.py's
(expected.safetensors' in.*). Per pipeline case: every step's packed latents (callback_on_step_end), the final latents
(output_type "latent") and the decoded images (output_type "np"). Transformer level: one "extract" forward (reference
tokens first, modulated at ref_fixed_timestep) and one "cached" forward with the cache it returned.
"""
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from diffusers.pipelines.flux2.pipeline_flux2_klein_kv import Flux2KleinKVPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-klein"
transformer = Flux2Transformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKLFlux2.from_pretrained(f"{here}/vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
pipe = Flux2KleinKVPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)

given = load_file(f"{here}/expected.safetensors")
embeds = given["in.prompt_embeds"]
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")  # 64 x 64
wide = Image.fromarray(given["in.wide"].numpy().astype(np.uint8))  # 96 x 72
odd = Image.fromarray(given["in.odd"].numpy().astype(np.uint8))  # 90 x 70

out = {}
cases = {
    # One reference image: 90 x 70 floored to 88 x 64 and centre-cropped; the output takes its size. Step 0 extracts.
    "kv_ref": (dict(image=odd, prompt_embeds=embeds[:1], num_inference_steps=3), 31),
    # Two reference images (t = 10 and 20), both prompts x two images (batch 4), 48 x 48.
    "kv_two": (dict(image=[image, wide], prompt_embeds=embeds, height=48, width=48, num_inference_steps=2,
                    num_images_per_prompt=2), 32),
    # No reference image: the standard forward at every step.
    "kv_t2i": (dict(prompt_embeds=embeds[1:], height=32, width=48, num_inference_steps=2), 33),
}
for name, (args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

# Transformer level: batch 2, 6 reference tokens (t = 10) then 8 image tokens (t = 0), 12 text tokens, a per-row timestep.
g = torch.Generator("cpu").manual_seed(34)
ref_ids = torch.stack(torch.meshgrid(torch.tensor([10]), torch.arange(2), torch.arange(3), torch.tensor([0]),
                                     indexing="ij"), -1).reshape(-1, 4)
img_ids = torch.stack(torch.meshgrid(torch.tensor([0]), torch.arange(2), torch.arange(4), torch.tensor([0]),
                                     indexing="ij"), -1).reshape(-1, 4)
txt_ids = torch.zeros(12, 4, dtype=torch.int64)
txt_ids[:, 3] = torch.arange(12)
ref = torch.randn(2, 6, 16, generator=g)
noisy = torch.randn(2, 8, 16, generator=g)
noisy2 = torch.randn(2, 8, 16, generator=g)
t0, t1 = torch.tensor([0.9, 0.8]), torch.tensor([0.5, 0.4])
with torch.no_grad():
    extracted, cache = transformer(hidden_states=torch.cat([ref, noisy], 1), encoder_hidden_states=embeds, timestep=t0,
                                   img_ids=torch.cat([ref_ids, img_ids]), txt_ids=txt_ids, return_dict=False,
                                   kv_cache_mode="extract", num_ref_tokens=6, ref_fixed_timestep=0.25)
    cached = transformer(hidden_states=noisy2, encoder_hidden_states=embeds, timestep=t1, img_ids=img_ids,
                         txt_ids=txt_ids, return_dict=False, kv_cache=cache, kv_cache_mode="cached")[0]
out.update({"tf.ref": ref, "tf.noisy": noisy, "tf.noisy2": noisy2, "tf.ref_ids": ref_ids, "tf.img_ids": img_ids,
            "tf.txt_ids": txt_ids, "tf.t0": t0, "tf.t1": t1, "tf.extract": extracted, "tf.cached": cached,
            "tf.cache.double0.k": cache.get_double(0).k_ref, "tf.cache.single1.v": cache.get_single(1).v_ref})

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/kv.safetensors")
print(f"wrote {len(out)} tensors to {here}/kv.safetensors")
