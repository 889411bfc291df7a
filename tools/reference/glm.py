"""CogView4's text encoder (transformers' GlmModel), run by transformers' OWN modeling_glm.py, for the parity fixture
local-diffusers/glm (see its README.md).

Usage, from the repository root, with transformers' files saved under /tmp/reftf-glm (tools/reference/README.md):
    REFTF=/tmp/reftf-glm PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv \
        /usr/bin/python3 tools/reference/glm.py tests/DiffusersSharp.Tests/Fixtures

1. A tiny GlmModel (config.json below: 3 layers, hidden 32, 4 query / 2 key-value heads of 8 with half of each rotary,
   intermediate 48, q / k / v biases, rope_theta 500), weights drawn in state_dict order from a seeded torch.Generator:
   norm weights 1 + 0.1 randn, biases 0.1 randn, the embedding randn, linears randn / sqrt(fan-in). The model that runs is
   built from the written config.json and loaded strictly from the written model.safetensors.
2. Ids [2, 16] drawn from the seed, the first row's first 5 the pad id (CogView4 pads GLM's prompts on the left and
   passes no mask), run with use_cache=False and output_hidden_states=True: every hidden state (embeddings, each layer's
   output, the last after the final norm) in float32, and the same in bfloat16 (weights and activations).
The float32 run is repeated in float64 (stored as the reference the bfloat16 errors are measured against).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

from transformers.models.glm.configuration_glm import GlmConfig
from transformers.models.glm.modeling_glm import GlmModel

root = sys.argv[1]
OUT = f"{root}/local-diffusers/glm"
SEED = 20261201

CONFIG = {
    "architectures": ["GlmModel"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": [2, 3],
    "head_dim": 8,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "max_position_embeddings": 256,
    "model_type": "glm",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "pad_token_id": 1,
    "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 80,
}

g = torch.Generator().manual_seed(SEED)
folder = f"{OUT}/text_encoder"
os.makedirs(folder, exist_ok=True)
with open(f"{folder}/config.json", "w") as f:
    json.dump(CONFIG, f, indent=2, sort_keys=True)
    f.write("\n")
shell = GlmModel(GlmConfig(**CONFIG)).eval()
weights = {}
for name, p in shell.state_dict().items():
    if "norm" in name:
        w = 1 + 0.1 * torch.randn(p.shape, generator=g)
    elif name.endswith("bias"):
        w = 0.1 * torch.randn(p.shape, generator=g)
    elif name == "embed_tokens.weight":
        w = torch.randn(p.shape, generator=g)
    else:
        w = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
    weights[name] = w.contiguous()
save_file(weights, f"{folder}/model.safetensors", metadata={"format": "pt"})

with open(f"{folder}/config.json") as f:
    config = GlmConfig(**json.load(f))
model = GlmModel(config).eval()
model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)

ids = torch.randint(4, CONFIG["vocab_size"], (2, 16), generator=g)
ids[0, :5] = CONFIG["pad_token_id"]
tensors = {"ids": ids}


def run(m, dtype):
    m = m.to(dtype)
    with torch.no_grad():
        out = m(input_ids=ids, use_cache=False, output_hidden_states=True)
    return [h.clone() for h in out.hidden_states], out.last_hidden_state.clone()


hidden32, last32 = run(model, torch.float32)
hidden64, last64 = run(model, torch.float64)  # the same weights, widened exactly
hidden16, last16 = run(model, torch.bfloat16)
assert torch.equal(hidden32[-1], last32)
for k, (h32, h64, h16) in enumerate(zip(hidden32, hidden64, hidden16)):
    tensors[f"hidden.{k}"] = h32
    tensors[f"hidden64.{k}"] = h64
    tensors[f"hidden_bf16.{k}"] = h16
    rel = lambda a: ((a.double() - h64).norm() / h64.norm()).item()
    print(f"hidden_states[{k}]: float32 max abs from float64 {(h32.double() - h64).abs().max().item():.3g}, "
          f"bfloat16 relative L2 {rel(h16):.4g}")
save_file({k: v.contiguous() for k, v in tensors.items()}, f"{OUT}/expected.safetensors")
