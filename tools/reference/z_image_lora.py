"""Z-Image transformer LoRAs written, loaded and fused by diffusers + PEFT: writes local-diffusers/z-image-lora/.

Usage, from the repository root (environment: README.md, with pyenv-peft):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft:tools/reference /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/z_image_lora.py', run_name='__main__')"

On local-diffusers/z-image's tiny ZImageTransformer2DModel (ZImagePipeline's loader is ZImageLoraLoaderMixin), three
files, each loaded into a fresh transformer with ZImagePipeline.load_lora_weights and fused with fuse_lora(lora_scale=s);
every weight that changed is saved as "<case>.delta.transformer.<parameter>" = weight after - weight before:
- peft (s 0.7): PEFT's LoraConfig (r 4, lora_alpha 8, a rank_pattern and an alpha_pattern) added with diffusers'
  add_adapter on every Linear, lora_A / lora_B drawn at random, written by ZImagePipeline.save_lora_weights
  ("transformer.*.lora_A.weight", the LoraConfig as lora_adapter_metadata): diffusers' own layout, no conversion.
- comfy (s 0.8): "diffusion_model." + module + ".lora_down.weight" / ".lora_up.weight" / ".alpha" (ComfyUI's / kohya's
  tensor names on diffusers' module paths), the attention output as "attention.out" (the converter's ".out" ->
  ".to_out.0"), ranks 4, 2 and 8 (the first pair's rank 4 is then PEFT's lora_alpha for every layer: a factor 4 / r on
  top of the file's alpha / r, as diffusers computes it).
- default (s 1.0): PEFT's adapter-named keys "<module>.lora_A.default.weight" / "lora_B.default.weight" without a
  component prefix, ranks 2 and 4, and ".alpha" tensors, which the converter drops (diffusers' default alpha applies).
A kohya "lora_unet_" file is not among them: diffusers v0.36's converter turns its ".lora_down.weight" keys into
".lora.down.weight" and then raises ValueError (checked below), so no such file loads in diffusers.
"""
import os

import torch
from peft import LoraConfig
from safetensors.torch import save_file

import lora_reference

from diffusers import ZImageTransformer2DModel
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_z_image_lora_to_diffusers
from diffusers.pipelines.z_image.pipeline_z_image import ZImagePipeline

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"
OUT = ROOT + "z-image-lora/"
os.makedirs(OUT, exist_ok=True)


def transformer():
    return ZImageTransformer2DModel.from_pretrained(ROOT + "z-image", subfolder="transformer").eval()


def fused_deltas(case, path, scale):
    return lora_reference.fused_deltas(case, path, scale, ZImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                                                     transformer=transformer()))


expected = {}

# 1. diffusers' own layout, through save_lora_weights.
model = transformer()
names = sorted(lora_reference.linears(model))
config = LoraConfig(r=4, lora_alpha=8, target_modules=names, init_lora_weights=False,
                    rank_pattern={"layers.0.attention.to_q": 2, "noise_refiner.1.feed_forward.w2": 8},
                    alpha_pattern={"context_refiner.0.attention.to_out.0": 1, "t_embedder.mlp.2": 3})
path, peft_tensors = lora_reference.save_random_peft_lora(ZImagePipeline, OUT, model, config, seed=20261129)
expected.update(fused_deltas("peft", path, 0.7))

# 2. diffusion_model. + lora_down / lora_up / alpha (the output projection as attention.out).
base = lora_reference.linears(transformer())
COMFY = [("layers.0.attention.to_q", 4, 2.0), ("layers.0.attention.out", 2, 1.0), ("layers.1.feed_forward.w1", 8, 8.0),
         ("noise_refiner.0.adaLN_modulation.0", 4, 16.0), ("context_refiner.1.attention.to_v", 2, 3.0),
         ("all_final_layer.2-1.linear", 4, 4.0), ("cap_embedder.1", 2, 0.5)]
g = torch.Generator("cpu").manual_seed(20261130)
sd = {}
for module, rank, alpha in COMFY:
    w = base[module.replace("attention.out", "attention.to_out.0")].weight
    sd[f"diffusion_model.{module}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.3
    sd[f"diffusion_model.{module}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.3
    sd[f"diffusion_model.{module}.alpha"] = torch.tensor(alpha)
save_file(sd, OUT + "comfy_alpha.safetensors")
expected.update(fused_deltas("comfy", OUT + "comfy_alpha.safetensors", 0.8))

# 3. PEFT's adapter-named keys (lora_A.default.weight), no component prefix, alphas the converter drops.
DEFAULT = [("layers.1.attention.to_k", 2), ("noise_refiner.1.attention.to_out.0", 4), ("context_refiner.0.feed_forward.w3", 4),
           ("t_embedder.mlp.0", 2)]
g = torch.Generator("cpu").manual_seed(20261131)
sd = {}
for module, rank in DEFAULT:
    w = base[module].weight
    sd[f"{module}.lora_A.default.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.3
    sd[f"{module}.lora_B.default.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.3
    sd[f"{module}.alpha"] = torch.tensor(float(3 * rank))
save_file(sd, OUT + "peft_default.safetensors")
expected.update(fused_deltas("default", OUT + "peft_default.safetensors", 1.0))

# diffusers' converter cannot read kohya's lora_unet_ names (".lora_down" is split at its "_").
try:
    _convert_non_diffusers_z_image_lora_to_diffusers({"lora_unet_layers_0_attention_to_q.lora_down.weight": torch.ones(2, 64),
                                                       "lora_unet_layers_0_attention_to_q.lora_up.weight": torch.ones(64, 2),
                                                       "lora_unet_layers_0_attention_to_q.alpha": torch.tensor(2.0)})
    raise SystemExit("diffusers converted a lora_unet_ file: update this script and the C# refusal")
except ValueError as e:
    assert "lora.down" in str(e), e

save_file({k: v.contiguous() for k, v in sorted(expected.items())}, OUT + "expected.safetensors")
counts = {c: sum(k.startswith(c + ".") for k in expected) for c in ("peft", "comfy", "default")}
print(f"{peft_tensors} PEFT tensors on {len(names)} Linear layers; weights changed: {counts}")
