"""A Flux transformer LoRA written, loaded and fused by diffusers + PEFT: writes local-diffusers/flux-lora/.

Usage, from the repository root (environment: README.md, with pyenv-peft):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/flux_lora.py', run_name='__main__')"

1. PEFT's LoraConfig (r 4, lora_alpha 8, a rank_pattern and an alpha_pattern) is added to the tiny Flux transformer of
   local-diffusers/flux with diffusers' add_adapter, on every Linear of the model; its lora_A / lora_B are drawn at random.
2. FluxPipeline.save_lora_weights writes the file as diffusers does (keys "transformer.*.lora_A.weight", the LoraConfig
   as lora_adapter_metadata).
3. A fresh transformer loads it with FluxPipeline.load_lora_weights and fuse_lora(lora_scale=0.8); every weight that
   changed is saved as its delta (weight after - weight before).
"""
import json
import os

import torch
import torch.nn as nn
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from diffusers import FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"
OUT = ROOT + "flux-lora/"
os.makedirs(OUT, exist_ok=True)


def transformer():
    return FluxTransformer2DModel.from_pretrained(ROOT + "flux", subfolder="transformer").eval()


def pipeline(model):
    return FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=model)


# 1. An adapter on every Linear, with per-module ranks and alphas.
model = transformer()
linears = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
config = LoraConfig(r=4, lora_alpha=8, target_modules=linears, init_lora_weights=False,
                    rank_pattern={"single_transformer_blocks.1.proj_out": 2, "transformer_blocks.0.attn.to_q": 8},
                    alpha_pattern={"single_transformer_blocks.1.proj_out": 1, "transformer_blocks.1.ff.net.2": 3})
model.add_adapter(config)
g = torch.Generator("cpu").manual_seed(20261127)
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
layers = get_peft_model_state_dict(model)
metadata = {k: v for k, v in config.to_dict().items() if k in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora",
                                                                 "target_modules", "lora_bias")}
metadata["target_modules"] = sorted(metadata["target_modules"])

# 2. Saved by diffusers.
FluxPipeline.save_lora_weights(OUT, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata,
                               weight_name="pytorch_lora_weights.safetensors", safe_serialization=True)

# 3. Loaded and fused by diffusers into a fresh transformer.
fresh = transformer()
before = {k: v.clone() for k, v in fresh.state_dict().items()}
pipe = pipeline(fresh)
pipe.load_lora_weights(OUT + "pytorch_lora_weights.safetensors", low_cpu_mem_usage=False)
pipe.fuse_lora(lora_scale=0.8)
pipe.unload_lora_weights()
after = fresh.state_dict()
deltas = {f"delta.transformer.{k}": after[k] - before[k] for k in before if not torch.equal(after[k], before[k])}
save_file(deltas, OUT + "expected.safetensors")
print(f"{len(layers)} LoRA tensors on {len(linears)} Linear layers; {len(deltas)} weights changed")
