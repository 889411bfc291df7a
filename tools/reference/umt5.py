"""AuraFlow's text encoder (transformers' UMT5EncoderModel), run by transformers' OWN modeling_umt5.py, for the parity
fixture local-diffusers/umt5 (see its README.md).

Usage, from the repository root, with transformers' files saved under /tmp/reftf-umt5 (tools/reference/README.md):
    REFTF=/tmp/reftf-umt5 PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv \
        /usr/bin/python3 tools/reference/umt5.py tests/DiffusersSharp.Tests/Fixtures

1. A tiny UMT5 (text_encoder/config.json below: d_model 32, 2 layers, 4 heads of width 8, d_ff 48, gated-gelu,
   8 relative-attention buckets up to distance 16, vocab 100), weights drawn in state_dict order from a seeded
   torch.Generator: norm weights 1 + 0.1 randn, the embedding randn, every layer's relative_attention_bias randn (UMT5:
   one table per layer), linears randn / sqrt(fan-in). Written as a checkpoint holds it (shared.weight; the tied
   encoder.embed_tokens.weight left out, as transformers' save_pretrained leaves it out), then the model that runs is
   built from the written config.json and loaded strictly (the tied key given the same tensor).
2. A right-padded batch of 2 (20 tokens and 7 tokens + padding, mask 1 / 0; 20 > max_distance 16, so the last bucket
   is reached) and one unpadded sequence of 9 tokens run without a mask; last_hidden_state in float32, and of the batch
   in bfloat16 (the model cast to bfloat16, as transformers' from_pretrained(torch_dtype=bfloat16) gives it: UMT5's
   _keep_in_fp32_modules ["wo"] only applies to float16).
3. counts.json: the full-size encoder of fal/AuraFlow-v0.3's text_encoder (the config below: EleutherAI pile-t5-xl's
   shape) built by transformers with every parameter on the meta device.
The float32 runs are repeated in float64 (stored too, as the measure of float32's rounding) and the distances printed, and once with every layer's
bias table replaced by layer 0's (T5's sharing; nothing stored) to show what the per-layer tables change.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

from transformers.models.umt5.configuration_umt5 import UMT5Config
from transformers.models.umt5.modeling_umt5 import UMT5EncoderModel

root = sys.argv[1]
OUT = f"{root}/local-diffusers/umt5"
SEED = 20261129

# The AuraFlow text_encoder/config.json fields (see FULL_CONFIG), the sizes made tiny.
COMMON = {
    "architectures": ["UMT5EncoderModel"],
    "classifier_dropout": 0.0,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 2,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "umt5",
    "output_past": True,
    "pad_token_id": 0,
    "scalable_attention": True,
    "tie_word_embeddings": False,
    "tokenizer_class": "LlamaTokenizerFast",
    "use_cache": True,
}
TINY = dict(COMMON, d_ff=48, d_kv=8, d_model=32, num_decoder_layers=2, num_heads=4, num_layers=2,
            relative_attention_max_distance=16, relative_attention_num_buckets=8, torch_dtype="float32", vocab_size=100)
# fal/AuraFlow-v0.3 text_encoder/config.json as a third-party AuraFlow loader reproduces it (DEFAULT_TEXT_ENCODER_CONFIG
# beside DEFAULT_TOKENIZER_REPO = "fal/AuraFlow-v0.3"; the published file cannot be read here, no network).
FULL_CONFIG = dict(COMMON, d_ff=5120, d_kv=64, d_model=2048, num_decoder_layers=24, num_heads=32, num_layers=24,
                   relative_attention_max_distance=128, relative_attention_num_buckets=32, vocab_size=32128)

g = torch.Generator().manual_seed(SEED)
LENGTH, SHORT, UNPADDED = 20, 7, 9
ids = torch.randint(3, TINY["vocab_size"], (2, LENGTH), generator=g)
mask = torch.ones(2, LENGTH, dtype=torch.int64)
mask[1, SHORT:] = 0
ids[1, SHORT:] = TINY["pad_token_id"]
unpadded = torch.randint(3, TINY["vocab_size"], (1, UNPADDED), generator=g)


def draw(model):
    drawn = {}
    for name, p in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue  # the same tensor as shared.weight
        if name.endswith("layer_norm.weight"):
            drawn[name] = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name == "shared.weight" or name.endswith("relative_attention_bias.weight"):
            drawn[name] = torch.randn(p.shape, generator=g)
        else:
            drawn[name] = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
    return drawn


def load(folder, dtype, shared_bias=False):
    with open(f"{folder}/config.json", encoding="utf-8") as f:
        m = UMT5EncoderModel(UMT5Config(**json.load(f))).eval()
    weights = load_file(f"{folder}/model.safetensors")
    weights["encoder.embed_tokens.weight"] = weights["shared.weight"]  # tied (_tied_weights_keys)
    if shared_bias:
        for k in weights:
            if k.endswith("relative_attention_bias.weight"):
                weights[k] = weights["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    m.load_state_dict(weights, strict=True)
    return m.to(dtype)


def run(m, input_ids, attention_mask):
    with torch.no_grad():
        return m(input_ids, attention_mask=attention_mask)[0]


def report(name, f32, f64):
    assert torch.isfinite(f32).all()
    err = (f32.double() - f64).abs().max().item()
    print(f"{name}: shape {list(f32.shape)}, max |expected| {f32.abs().max().item():.4g}, vs float64 {err:.3g}")


folder = f"{OUT}/text_encoder"
os.makedirs(folder, exist_ok=True)
with open(f"{folder}/config.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(TINY, indent=2, sort_keys=True) + "\n")
save_file(draw(UMT5EncoderModel(UMT5Config(**TINY))), f"{folder}/model.safetensors")

out = {"batch.input_ids": ids, "batch.attention_mask": mask, "unpadded.input_ids": unpadded}
f32, f64, shared = load(folder, torch.float32), load(folder, torch.float64), load(folder, torch.float32, shared_bias=True)
for case, (i, m) in {"batch": (ids, mask), "unpadded": (unpadded, None)}.items():
    h, h64 = run(f32, i, m), run(f64, i, m)
    out[f"{case}.last_hidden_state"] = h.contiguous()
    out[f"{case}.f64.last_hidden_state"] = h64.contiguous()
    report(case, h, h64)
    print(f"{case}: with layer 0's bias table in every layer the output moves by {(run(shared, i, m) - h).abs().max().item():.3g}")
h = run(f32, ids, None)
print(f"batch without its mask moves by {(h - out['batch.last_hidden_state']).abs().max().item():.3g}")
h = run(load(folder, torch.bfloat16), ids, mask)
out["batch.bf16.last_hidden_state"] = h.contiguous()
report("batch.bf16", h.float(), run(f64, ids, mask))
save_file(out, f"{OUT}/expected.safetensors")

# The full-size model on the meta device: transformers' constructors with torch.empty / torch.zeros / torch.ones sent to
# meta (torch 1.13 has no default-device context).
real = torch.empty, torch.zeros, torch.ones


def on_meta(factory):
    def make(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return factory(*args, **kwargs)
    return make


torch.empty, torch.zeros, torch.ones = (on_meta(f) for f in real)
try:
    full = UMT5EncoderModel(UMT5Config(**FULL_CONFIG))
finally:
    torch.empty, torch.zeros, torch.ones = real
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
print(f"full size: {counts['tensors']} tensors, {counts['elements']} elements, {counts['parameters']} parameters")
