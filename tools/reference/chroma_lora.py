"""A Chroma transformer LoRA written, loaded and fused by diffusers + PEFT: writes local-diffusers/chroma-lora/.

Usage, from the repository root (environment: README.md, with pyenv-peft):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/chroma_lora.py', run_name='__main__')"

As flux_lora.py, on local-diffusers/chroma's tiny ChromaTransformer2DModel (ChromaPipeline's loader is FluxLoraLoaderMixin):
1. PEFT's LoraConfig (r 4, lora_alpha 8, a rank_pattern and an alpha_pattern) is added with diffusers' add_adapter on
   every Linear of the model, the approximator's (distilled_guidance_layer) included; lora_A / lora_B drawn at random.
2. ChromaPipeline.save_lora_weights writes the file as diffusers does (keys "transformer.*.lora_A.weight", the LoraConfig
   as lora_adapter_metadata).
3. A fresh transformer loads it with ChromaPipeline.load_lora_weights and fuse_lora(lora_scale=0.7); every weight that
   changed is saved as its delta (weight after - weight before).
"""
import os

import torch
import torch.nn as nn
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from diffusers import ChromaTransformer2DModel
from diffusers.pipelines.chroma.pipeline_chroma import ChromaPipeline

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"
OUT = ROOT + "chroma-lora/"
os.makedirs(OUT, exist_ok=True)


def transformer():
    return ChromaTransformer2DModel.from_pretrained(ROOT + "chroma", subfolder="transformer").eval()


model = transformer()
linears = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
config = LoraConfig(r=4, lora_alpha=8, target_modules=linears, init_lora_weights=False,
                    rank_pattern={"distilled_guidance_layer.layers.0.linear_1": 2, "transformer_blocks.0.attn.to_q": 8},
                    alpha_pattern={"distilled_guidance_layer.out_proj": 1, "single_transformer_blocks.0.proj_mlp": 3})
model.add_adapter(config)
g = torch.Generator("cpu").manual_seed(20261128)
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
layers = get_peft_model_state_dict(model)
metadata = {k: v for k, v in config.to_dict().items() if k in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora",
                                                                 "target_modules", "lora_bias")}
metadata["target_modules"] = sorted(metadata["target_modules"])
ChromaPipeline.save_lora_weights(OUT, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata,
                                 weight_name="pytorch_lora_weights.safetensors", safe_serialization=True)

fresh = transformer()
before = {k: v.clone() for k, v in fresh.state_dict().items()}
pipe = ChromaPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=fresh)
pipe.load_lora_weights(OUT + "pytorch_lora_weights.safetensors", low_cpu_mem_usage=False)
pipe.fuse_lora(lora_scale=0.7)
pipe.unload_lora_weights()
after = fresh.state_dict()
deltas = {f"delta.transformer.{k}": after[k] - before[k] for k in before if not torch.equal(after[k], before[k])}
save_file(deltas, OUT + "expected.safetensors")
print(f"{len(layers)} LoRA tensors on {len(linears)} Linear layers; {len(deltas)} weights changed")
