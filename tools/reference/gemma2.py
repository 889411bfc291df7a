"""Sana's text encoder (transformers' Gemma2Model), run by transformers' OWN modeling_gemma2.py, for the parity fixture
local-diffusers/gemma2 (see its README.md).

Usage, from the repository root, with transformers' files saved under /tmp/reftf-gemma2 (tools/reference/README.md):
    REFTF=/tmp/reftf-gemma2 PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv \
        /usr/bin/python3 tools/reference/gemma2.py tests/DiffusersSharp.Tests/Fixtures

1. Two tiny Gemma2 models (config.json below), weights drawn in state_dict order from a seeded torch.Generator:
   - text_encoder/ ("a", a Gemma2Model folder as Sana's): 4 layers, hidden 64, 4 query / 2 key-value heads of width 16,
     intermediate 128, sliding_window 5, attn_logit_softcapping 2.0, query_pre_attn_scalar 24 (not head_dim);
   - text_encoder_causal_lm/ ("b", keys under the "model." prefix a Gemma2ForCausalLM checkpoint has): 3 layers, hidden
     48 (its sqrt rounds in bfloat16), 6 query heads = 6 key-value heads of width 12 (head_dim != hidden / heads),
     sliding_window 3, no attention soft-capping, query_pre_attn_scalar 10, rope_theta 500.
   Norm weights 0.1 randn (Gemma's norms scale by 1 + weight), the embedding randn, linears randn / sqrt(fan-in) except
   q_proj / k_proj, drawn 2x larger so that attention logits reach the soft cap. The model that runs is built from the
   written config.json and loaded strictly from the written model.safetensors.
2. For each model: a right-padded batch of 2 (12 and 5 tokens, mask 1 / 0; ids drawn from the seed, pad id 0 as Gemma's
   tokenizer pads) and one unpadded sequence of 16 tokens run without a mask; last_hidden_state of
   model(input_ids, attention_mask=mask) in float32, and of the batch in bfloat16. transformers would build a HybridCache
   sized to the sequence (use_cache defaults to True); caches are not part of this environment, so the calls pass
   use_cache=False: the cache's first fill returns exactly the keys / values it is given, so the output is the same.
3. counts.json: the state_dict names and shapes of the full-size Gemma2Model of gemma-2-2b (Sana's text encoder; the
   config below) built by transformers with every parameter on the meta device (torch.empty / torch.zeros given
   device="meta" while the model is constructed).
The float32 runs are repeated in float64 (nothing of it stored) and the distances printed.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

from transformers.models.gemma2.configuration_gemma2 import Gemma2Config
from transformers.models.gemma2.modeling_gemma2 import Gemma2Model

root = sys.argv[1]
OUT = f"{root}/local-diffusers/gemma2"
SEED = 20261128

COMMON = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "initializer_range": 0.02,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "pad_token_id": 0,
    "rms_norm_eps": 1e-06,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 96,
}
MODELS = {
    "a": ("text_encoder", "", dict(COMMON, architectures=["Gemma2Model"], attn_logit_softcapping=2.0, head_dim=16,
                                    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=4,
                                    num_key_value_heads=2, query_pre_attn_scalar=24, rope_theta=10000.0,
                                    sliding_window=5)),
    "b": ("text_encoder_causal_lm", "model.", dict(COMMON, architectures=["Gemma2ForCausalLM"], attn_logit_softcapping=None,
                                                   head_dim=12, hidden_size=48, intermediate_size=96,
                                                   num_attention_heads=6, num_hidden_layers=3, num_key_value_heads=6,
                                                   query_pre_attn_scalar=10, rope_theta=500.0, sliding_window=3)),
}
# google/gemma-2-2b-it's config.json as Sana's text_encoder/config.json has it (a Gemma2Model).
FULL_CONFIG = dict(COMMON, architectures=["Gemma2Model"], attn_logit_softcapping=50.0, eos_token_id=[1, 107], head_dim=256,
                   hidden_size=2304, intermediate_size=9216, num_attention_heads=8, num_hidden_layers=26,
                   num_key_value_heads=4, query_pre_attn_scalar=256, rope_theta=10000.0, sliding_window=4096,
                   torch_dtype="bfloat16", vocab_size=256000)

g = torch.Generator().manual_seed(SEED)
LENGTH, SHORT, UNPADDED = 12, 5, 16
ids = torch.randint(3, COMMON["vocab_size"], (2, LENGTH), generator=g)
mask = torch.ones(2, LENGTH, dtype=torch.int64)
mask[1, SHORT:] = 0
ids[1, SHORT:] = COMMON["pad_token_id"]
unpadded = torch.randint(3, COMMON["vocab_size"], (1, UNPADDED), generator=g)


def draw(model, prefix):
    drawn = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight"):
            drawn[prefix + name] = 0.1 * torch.randn(p.shape, generator=g)
        elif name == "embed_tokens.weight":
            drawn[prefix + name] = torch.randn(p.shape, generator=g)
        else:
            scale = 2.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
            drawn[prefix + name] = scale * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
    return drawn


def load(folder, prefix, dtype):
    with open(f"{folder}/config.json", encoding="utf-8") as f:
        m = Gemma2Model(Gemma2Config(**json.load(f))).eval()
    m.load_state_dict({k[len(prefix):]: v for k, v in load_file(f"{folder}/model.safetensors").items()}, strict=True)
    return m.to(dtype)


def run(m, input_ids, attention_mask):
    with torch.no_grad():
        return m(input_ids, attention_mask=attention_mask, use_cache=False)[0]


def report(name, f32, f64):
    # In float64 the mask's minimum (-1.8e308) becomes -inf in the float32 softmax, so a query whose every key is masked
    # (padding past the sliding window) is NaN there; those rows are left out of the distance.
    assert torch.isfinite(f32).all()
    finite = torch.isfinite(f64).all(-1)
    err = (f32.double() - f64)[finite].abs().max().item()
    print(f"{name}: shape {list(f32.shape)}, max |expected| {f32.abs().max().item():.4g}, float32 vs float64 {err:.3g}"
          f" ({(~finite).sum().item()} rows NaN in float64)")


out = {"batch.input_ids": ids, "batch.attention_mask": mask, "unpadded.input_ids": unpadded}
for key, (sub, prefix, config) in MODELS.items():
    folder = f"{OUT}/{sub}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/config.json", "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(draw(Gemma2Model(Gemma2Config(**config)), prefix), f"{folder}/model.safetensors")
    f32, f64 = load(folder, prefix, torch.float32), load(folder, prefix, torch.float64)
    for case, (i, m) in {"batch": (ids, mask), "unpadded": (unpadded, None)}.items():
        h = run(f32, i, m)
        out[f"{key}.{case}.last_hidden_state"] = h.contiguous()
        report(f"{key}.{case}", h, run(f64, i, m))
    h = run(load(folder, prefix, torch.bfloat16), ids, mask)
    out[f"{key}.batch.bf16.last_hidden_state"] = h.contiguous()
    report(f"{key}.batch.bf16", h.float(), run(f64, ids, mask))
save_file(out, f"{OUT}/expected.safetensors")

# The full-size model on the meta device: transformers' constructors with torch.empty / torch.zeros sent to meta.
real_empty, real_zeros = torch.empty, torch.zeros


def on_meta(factory):
    def make(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return factory(*args, **kwargs)
    return make


torch.empty, torch.zeros = on_meta(real_empty), on_meta(real_zeros)
try:
    full = Gemma2Model(Gemma2Config(**FULL_CONFIG))
finally:
    torch.empty, torch.zeros = real_empty, real_zeros
state = full.state_dict()
assert all(t.is_meta for t in state.values())
counts = {
    "tensors": len(state),
    "elements": sum(t.numel() for t in state.values()),
    "parameters": sum(p.numel() for p in full.parameters()),
    "shapes": {k: list(t.shape) for k, t in state.items()},
    "config": FULL_CONFIG,
}
with open(f"{OUT}/counts.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(counts, indent=1) + "\n")
print(f"full size: {counts['tensors']} tensors, {counts['elements']} elements")
