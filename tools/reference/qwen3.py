"""Z-Image's text side, run by transformers' and diffusers' OWN code, for the parity fixture local-diffusers/qwen3 (see
its README.md).

Usage, from the repository root, after tools/reference/qwen2_tokenizer.py and the hf_tokenizers tool (mode qwen2), with
transformers' files saved under /tmp/reftf (tools/reference/README.md):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/qwen3.py tests/DiffusersSharp.Tests/Fixtures

1. A tiny Qwen3 text encoder (text_encoder/config.json below: 3 layers, hidden 64, 4 query heads / 2 key-value heads of
   width 24, so head_dim != hidden / heads as in Qwen3-4B; vocabulary 704 >= the tokenizer's 682, padded as Qwen pads
   its table). In a child process on tools/reference/pyenv-transformers: transformers' own Qwen3Config and Qwen3Model
   (models/qwen3/modeling_qwen3.py, "eager" attention); weights drawn in state_dict order from
   torch.Generator().manual_seed(20261130) (norm weights 1 + 0.1 randn, the embedding randn, linears randn / sqrt(fan-in)),
   written with the "model." prefix Qwen3ForCausalLM checkpoints have (Z-Image's text_encoder is one), and the model
   that runs is built from the written config.json and loaded strictly from the written model.safetensors.
2. "batch": two chat-templated prompts of different lengths, right-padded with <|endoftext|> to the longer one + 3, with
   their attention mask: every hidden state (float32), and hidden_states[-2] / [-1] of the same model in bfloat16.
3. diffusers' own ZImagePipeline._encode_prompt (pipelines/z_image/pipeline_z_image.py, v0.36.0), called on a stand-in
   pipeline object for cases.json's three prompts at max_sequence_length 512 (diffusers' default) and 12 (truncation
   inside the template). Its tokenizer is a stand-in: apply_chat_template returns cases.json's rendering (our reading of
   Qwen3's template; the real tokenizer_config.json is not available here) and __call__ gives the ids Hugging Face's
   tokenizers library gave for that text (hf_tokenizers.json), cut to max_length and right-padded with <|endoftext|>,
   attention mask 1 / 0, as transformers' padding="max_length", truncation=True does. Its text_encoder replays the
   child's outputs of transformers' Qwen3Model for exactly the ids and mask diffusers passed (a first call records them).
   diffusers passes no use_cache, so transformers would build a DynamicCache: the child calls with use_cache=False
   (caches are not part of this environment), which does not change the hidden states.
4. counts.json: the state_dict names and shapes of the full-size Z-Image text encoder (Qwen3-4B's config below) built by
   transformers' Qwen3Model with every parameter on the meta device (torch 1.13 has no default-device context: the
   script gives torch.empty / torch.ones device="meta" while the model is constructed).
The float32 runs are also repeated in float64 (nothing of it stored) and the distances printed.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file

from diffusers.pipelines.z_image.pipeline_z_image import ZImagePipeline

root = sys.argv[1]
OUT = f"{root}/local-diffusers/qwen3"
SEED = 20261130

with open(f"{OUT}/cases.json", encoding="utf-8") as f:
    cases = json.load(f)
with open(f"{OUT}/hf_tokenizers.json", encoding="utf-8") as f:
    hf_ids = {e["text"]: e["ids"] for e in json.load(f)["ids"]}
with open(f"{OUT}/tokenizer/tokenizer_config.json", encoding="utf-8") as f:
    tok_config = json.load(f)
added = {v["content"]: int(k) for k, v in tok_config["added_tokens_decoder"].items()}
PAD = added[tok_config["pad_token"]]

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": added["<|endoftext|>"],
    "eos_token_id": added["<|im_end|>"],
    "head_dim": 24,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 160,
    "max_position_embeddings": 40960,
    "max_window_layers": 3,
    "model_type": "qwen3",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 704,
}
# Z-Image-Turbo's text_encoder/config.json (Qwen3-4B).
FULL_CONFIG = dict(CONFIG, bos_token_id=151643, eos_token_id=151645, head_dim=128, hidden_size=2560,
                   intermediate_size=9728, max_window_layers=36, num_attention_heads=32, num_hidden_layers=36,
                   num_key_value_heads=8, torch_dtype="bfloat16", vocab_size=151936)

te_dir = f"{OUT}/text_encoder"
os.makedirs(te_dir, exist_ok=True)
with open(f"{te_dir}/config.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(CONFIG, indent=2) + "\n")


class StandInTokenizer:
    """The two calls diffusers' _encode_prompt makes on Z-Image's Qwen2Tokenizer (see the module docstring)."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        assert len(messages) == 1 and set(messages[0]) == {"role", "content"} and messages[0]["role"] == "user"
        assert tokenize is False and add_generation_prompt is True and enable_thinking is True
        return cases["chat_template"][messages[0]["content"]]

    def __call__(self, prompts, padding, max_length, truncation, return_tensors):
        assert padding == "max_length" and truncation is True and return_tensors == "pt"
        rows = [hf_ids[p][:max_length] for p in prompts]
        ids = torch.tensor([r + [PAD] * (max_length - len(r)) for r in rows], dtype=torch.int64)
        mask = torch.tensor([[1] * len(r) + [0] * (max_length - len(r)) for r in rows], dtype=torch.int64)
        return SimpleNamespace(input_ids=ids, attention_mask=mask)


class ReplayEncoder:
    """Records the (ids, mask) diffusers passes; once the child has run, returns transformers' hidden states for them."""

    def __init__(self):
        self.calls, self.outputs = [], None

    def __call__(self, input_ids, attention_mask, output_hidden_states):
        assert output_hidden_states is True and attention_mask.dtype == torch.bool
        if self.outputs is None:
            self.calls.append((input_ids.clone(), attention_mask.clone()))
            zero = torch.zeros(*input_ids.shape, CONFIG["hidden_size"])
            return SimpleNamespace(hidden_states=(zero,) * (CONFIG["num_hidden_layers"] + 1))
        ids, mask, states = self.outputs.pop(0)
        assert torch.equal(ids, input_ids) and torch.equal(mask, attention_mask)
        return SimpleNamespace(hidden_states=states)


def encode(encoder, prompts, max_len):
    pipe = SimpleNamespace(tokenizer=StandInTokenizer(), text_encoder=encoder, _execution_device=torch.device("cpu"))
    return ZImagePipeline._encode_prompt(pipe, prompt=list(prompts), device=torch.device("cpu"), max_sequence_length=max_len)


ENCODE_CASES = [("encode512", 512), ("encode12", 12)]
recorder = ReplayEncoder()
for _, max_len in ENCODE_CASES:
    encode(recorder, cases["encode_prompts"], max_len)

# The "batch" case: two templated prompts of different lengths, right-padded.
batch_texts = [cases["chat_template"]["A photo of a cat"], cases["chat_template"][cases["encode_prompts"][2]]]
length = max(len(hf_ids[t]) for t in batch_texts) + 3
batch_ids = torch.tensor([hf_ids[t] + [PAD] * (length - len(hf_ids[t])) for t in batch_texts], dtype=torch.int64)
batch_mask = torch.tensor([[1] * len(hf_ids[t]) + [0] * (length - len(hf_ids[t])) for t in batch_texts], dtype=torch.int64)

scratch = f"/tmp/qwen3_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)
torch.save({"batch": (batch_ids, batch_mask.bool()), "calls": recorder.calls, "full_config": FULL_CONFIG}, f"{scratch}/in.pt")

child = f"""
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

te_dir, scratch, seed = {te_dir!r}, {scratch!r}, {SEED}
inputs = torch.load(scratch + "/in.pt")
with open(te_dir + "/config.json") as f:
    config_dict = json.load(f)

# Weights drawn in state_dict order, written as Qwen3ForCausalLM would (model. prefix), then loaded back strictly.
g = torch.Generator().manual_seed(seed)
drawn = {{}}
for name, p in Qwen3Model(Qwen3Config(**config_dict)).state_dict().items():
    if name.endswith("norm.weight"):
        drawn["model." + name] = 1 + 0.1 * torch.randn(p.shape, generator=g)
    elif name == "embed_tokens.weight":
        drawn["model." + name] = torch.randn(p.shape, generator=g)
    else:
        drawn["model." + name] = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
save_file(drawn, te_dir + "/model.safetensors")


def load(dtype):
    m = Qwen3Model(Qwen3Config(**config_dict)).eval()
    m.load_state_dict({{k[len("model."):]: v for k, v in load_file(te_dir + "/model.safetensors").items()}}, strict=True)
    return m.to(dtype)



def run(m, ids, mask):
    with torch.no_grad():
        out = m(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    assert len(out.hidden_states) == config_dict["num_hidden_layers"] + 1
    return out.hidden_states


model = load(torch.float32)
result = {{"batch": run(model, *inputs["batch"]), "calls": [run(model, ids, mask) for ids, mask in inputs["calls"]]}}
result["batch_bf16"] = run(load(torch.bfloat16), *inputs["batch"])
model = load(torch.float64)
result["batch_f64"] = run(model, *inputs["batch"])
result["calls_f64"] = [run(model, ids, mask) for ids, mask in inputs["calls"]]

# The full-size model on the meta device: transformers' constructors with torch.empty / torch.ones sent to meta.
real_empty, real_ones = torch.empty, torch.ones
def on_meta(factory):
    def make(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return factory(*args, **kwargs)
    return make
torch.empty, torch.ones = on_meta(real_empty), on_meta(real_ones)
try:
    full = Qwen3Model(Qwen3Config(**inputs["full_config"]))
finally:
    torch.empty, torch.ones = real_empty, real_ones
state = full.state_dict()
assert all(t.is_meta for t in state.values())
result["counts"] = {{
    "tensors": len(state),
    "elements": sum(t.numel() for t in state.values()),
    "parameters": sum(p.numel() for p in full.parameters()),
    "shapes": {{k: list(t.shape) for k, t in state.items()}},
}}
torch.save(result, scratch + "/out.pt")
"""
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
subprocess.run([sys.executable, "-c", child], check=True, env=env)
result = torch.load(f"{scratch}/out.pt")
os.remove(f"{scratch}/in.pt")
os.remove(f"{scratch}/out.pt")
os.rmdir(scratch)


def report(name, f32, f64):
    err = (f32.double() - f64).abs().max().item()
    print(f"{name}: shape {list(f32.shape)}, max |expected| {f32.abs().max().item():.4g}, float32 vs float64 {err:.3g}")


out = {"batch.input_ids": batch_ids, "batch.attention_mask": batch_mask}
for k, h in enumerate(result["batch"]):
    out[f"batch.hidden_states.{k}"] = h.contiguous()
    report(f"batch.hidden_states.{k}", h, result["batch_f64"][k])
for k in (-2, -1):
    out[f"batch.bf16.hidden_states.{k % len(result['batch'])}"] = result["batch_bf16"][k].contiguous()
    err = (result["batch_bf16"][k].double() - result["batch_f64"][k]).abs().max().item()
    print(f"batch.bf16.hidden_states[{k}] vs float64 {err:.3g}")

recorder.outputs = [(ids, mask, states) for (ids, mask), states in zip(recorder.calls, result["calls"])]
f64_states = list(result["calls_f64"])
for name, max_len in ENCODE_CASES:
    ids, mask = recorder.outputs[0][0], recorder.outputs[0][1]
    embeds = encode(recorder, cases["encode_prompts"], max_len)
    f64 = f64_states.pop(0)[-2]
    out[f"{name}.input_ids"] = ids
    out[f"{name}.attention_mask"] = mask.to(torch.int64)
    for i, e in enumerate(embeds):
        out[f"{name}.prompt_embeds.{i}"] = e.contiguous()
        report(f"{name}.prompt_embeds.{i}", e, f64[i][mask[i]])
assert not recorder.outputs
save_file(out, f"{OUT}/expected.safetensors")

counts = dict(result["counts"], config=FULL_CONFIG)
with open(f"{OUT}/counts.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(counts, indent=1) + "\n")
print(f"full size: {counts['tensors']} tensors, {counts['elements']} elements")
