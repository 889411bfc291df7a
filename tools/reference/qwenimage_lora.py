"""Qwen-Image transformer LoRAs written, loaded and fused by diffusers (v0.39) + PEFT: writes local-diffusers/qwenimage-lora/.

Usage, from the repository root (environment: README.md, with pyenv-peft; diffusers v0.39.0 and PEFT / accelerate in
/tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39:tools/reference/pyenv-peft:tools/reference /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/qwenimage_lora.py', run_name='__main__')"

On local-diffusers/qwenimage's tiny QwenImageTransformer2DModel (QwenImagePipeline's loader is QwenImageLoraLoaderMixin),
four files, each loaded into a fresh transformer with QwenImagePipeline.load_lora_weights and fused with
fuse_lora(lora_scale=s); every weight that changed is saved as "<case>.delta.transformer.<parameter>" = after - before:
- peft (s 0.7): PEFT's LoraConfig (r 4, lora_alpha 8, rank and alpha patterns) on every Linear, lora_A / lora_B drawn at
  random, written by QwenImagePipeline.save_lora_weights: diffusers' own layout, no conversion.
- comfy (s 0.8): "diffusion_model." + module + ".lora_down.weight" / ".lora_up.weight" / ".alpha", ranks 4, 2 and 8.
- default (s 1.0): PEFT's adapter-named keys "<module>.lora_A.default.weight" without a prefix, with ".alpha" tensors the
  converter drops.
- kohya (s 0.9): kohya's flattened names "lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight" (with the alpha),
  block modules with protected underscores (to_add_out, add_k_proj, img_mod, txt_mlp) and top-level ones (img_in,
  norm_out_linear, time_text_embed_timestep_embedder_linear_1).
"""
import os

import torch
from peft import LoraConfig
from safetensors.torch import save_file

import lora_reference

from diffusers import QwenImagePipeline, QwenImageTransformer2DModel

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"
OUT = ROOT + "qwenimage-lora/"
os.makedirs(OUT, exist_ok=True)


def transformer():
    return QwenImageTransformer2DModel.from_pretrained(ROOT + "qwenimage", subfolder="transformer").eval()


def fused_deltas(case, path, scale):
    return lora_reference.fused_deltas(case, path, scale, QwenImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                                                     transformer=transformer()))


expected = {}

# 1. diffusers' own layout, through save_lora_weights.
model = transformer()
names = sorted(lora_reference.linears(model))
config = LoraConfig(r=4, lora_alpha=8, target_modules=names, init_lora_weights=False,
                    rank_pattern={"transformer_blocks.0.attn.to_q": 2, "transformer_blocks.1.img_mlp.net.2": 8},
                    alpha_pattern={"transformer_blocks.1.attn.to_add_out": 1, "txt_in": 3})
path, peft_tensors = lora_reference.save_random_peft_lora(QwenImagePipeline, OUT, model, config, seed=20261201)
expected.update(fused_deltas("peft", path, 0.7))

base = lora_reference.linears(transformer())


def draw(keys, seed, prefix, down, up, alpha_name):
    g = torch.Generator("cpu").manual_seed(seed)
    sd = {}
    for module, name, rank, alpha in keys:
        w = base[module].weight
        sd[f"{prefix}{name}{down}"] = torch.randn(rank, w.shape[1], generator=g) * 0.3
        sd[f"{prefix}{name}{up}"] = torch.randn(w.shape[0], rank, generator=g) * 0.3
        if alpha is not None:
            sd[f"{prefix}{name}{alpha_name}"] = torch.tensor(alpha)
    return sd


# 2. diffusion_model. + lora_down / lora_up / alpha.
COMFY = [("transformer_blocks.0.attn.to_q", 4, 2.0), ("transformer_blocks.0.attn.add_v_proj", 2, 1.0),
         ("transformer_blocks.1.img_mod.1", 8, 8.0), ("transformer_blocks.1.txt_mlp.net.0.proj", 4, 16.0), ("proj_out", 2, 3.0)]
save_file(draw([(m, m, r, a) for m, r, a in COMFY], 20261202, "diffusion_model.", ".lora_down.weight", ".lora_up.weight", ".alpha"),
          OUT + "comfy_alpha.safetensors")
expected.update(fused_deltas("comfy", OUT + "comfy_alpha.safetensors", 0.8))

# 3. PEFT's adapter-named keys, no component prefix, alphas the converter drops.
DEFAULT = [("transformer_blocks.1.attn.to_k", 2), ("transformer_blocks.0.attn.to_out.0", 4), ("img_in", 4),
           ("time_text_embed.timestep_embedder.linear_2", 2)]
save_file(draw([(m, m, r, float(3 * r)) for m, r in DEFAULT], 20261203, "", ".lora_A.default.weight", ".lora_B.default.weight", ".alpha"),
          OUT + "peft_default.safetensors")
expected.update(fused_deltas("default", OUT + "peft_default.safetensors", 1.0))

# 4. kohya's flattened names.
KOHYA = [("transformer_blocks.0.attn.to_add_out", "transformer_blocks_0_attn_to_add_out", 4, 2.0),
         ("transformer_blocks.1.attn.add_k_proj", "transformer_blocks_1_attn_add_k_proj", 2, 4.0),
         ("transformer_blocks.0.img_mod.1", "transformer_blocks_0_img_mod_1", 4, 4.0),
         ("transformer_blocks.1.txt_mlp.net.2", "transformer_blocks_1_txt_mlp_net_2", 2, 1.0),
         ("transformer_blocks.0.attn.to_out.0", "transformer_blocks_0_attn_to_out_0", 2, 2.0),
         ("img_in", "img_in", 4, 8.0), ("norm_out.linear", "norm_out_linear", 2, 2.0),
         ("time_text_embed.timestep_embedder.linear_1", "time_text_embed_timestep_embedder_linear_1", 4, 1.0)]
save_file(draw(KOHYA, 20261204, "lora_unet_", ".lora_down.weight", ".lora_up.weight", ".alpha"), OUT + "kohya.safetensors")
expected.update(fused_deltas("kohya", OUT + "kohya.safetensors", 0.9))

save_file({k: v.contiguous() for k, v in sorted(expected.items())}, OUT + "expected.safetensors")
counts = {c: sum(k.startswith(c + ".") for k in expected) for c in ("peft", "comfy", "default", "kohya")}
print(f"{peft_tensors} PEFT tensors on {len(names)} Linear layers; weights changed: {counts}")
