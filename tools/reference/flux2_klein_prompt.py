"""diffusers' own Flux2KleinPipeline._get_qwen3_prompt_embeds (v0.39.0) from prompt STRINGS, with transformers' own
Qwen3Model as the text encoder: writes local-diffusers/flux2-klein-prompt/ (see its README.md).

Usage, from the repository root, after the qwen3 fixture's scripts (qwen2_tokenizer.py, hf_tokenizers qwen2, qwen3.py),
with transformers' files saved under /tmp/reftf (tools/reference/README.md):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/flux2_klein_prompt.py tests/DiffusersSharp.Tests/Fixtures

_get_qwen3_prompt_embeds is a static method: it is called with two stand-ins for exactly the calls it makes:
- the tokenizer's apply_chat_template returns the qwen3 fixture's rendering with thinking off (cases.json
  "chat_template_no_thinking": our reading of Qwen3's template) and __call__ gives the ids Hugging Face's tokenizers
  library gave for that text (hf_tokenizers.json), cut to max_length and right-padded with <|endoftext|>, mask 1 / 0
  (transformers' padding="max_length", truncation=True);
- the text encoder returns, for the ids and mask diffusers passes, the hidden states of transformers' own Qwen3Model
  (models/qwen3/modeling_qwen3.py, eager attention) loaded strictly from the qwen3 fixture's text_encoder/ and run in a
  child process on tools/reference/pyenv-transformers. A first pass records the (ids, mask) pairs (the stand-in returns
  zeros); the child runs them; a second pass replays its outputs (each pair looked up).
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-klein-prompt"
qwen3 = f"{root}/local-diffusers/qwen3"
os.makedirs(here, exist_ok=True)

with open(f"{qwen3}/cases.json", encoding="utf-8") as f:
    cases = json.load(f)
with open(f"{qwen3}/hf_tokenizers.json", encoding="utf-8") as f:
    hf_ids = {e["text"]: e["ids"] for e in json.load(f)["ids"]}
with open(f"{qwen3}/tokenizer/tokenizer_config.json", encoding="utf-8") as f:
    tok_config = json.load(f)
with open(f"{qwen3}/text_encoder/config.json", encoding="utf-8") as f:
    te_config = json.load(f)
PAD = next(int(k) for k, v in tok_config["added_tokens_decoder"].items() if v["content"] == tok_config["pad_token"])


class StandInTokenizer:
    """The two calls _get_qwen3_prompt_embeds makes on FLUX.2 [klein]'s Qwen2TokenizerFast (module docstring)."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        assert len(messages) == 1 and set(messages[0]) == {"role", "content"} and messages[0]["role"] == "user"
        assert tokenize is False and add_generation_prompt is True and enable_thinking is False
        return cases["chat_template_no_thinking"][messages[0]["content"]]

    def __call__(self, text, return_tensors, padding, truncation, max_length):
        assert isinstance(text, str) and return_tensors == "pt" and padding == "max_length" and truncation is True
        row = hf_ids[text][:max_length]
        ids = torch.tensor([row + [PAD] * (max_length - len(row))], dtype=torch.int64)
        mask = torch.tensor([[1] * len(row) + [0] * (max_length - len(row))], dtype=torch.int64)
        return {"input_ids": ids, "attention_mask": mask}


def key(ids, mask):
    return (tuple(ids.shape), tuple(ids.flatten().tolist()), tuple(mask.flatten().tolist()))


class ReplayEncoder:
    """Records the (ids, mask) diffusers passes; once the child has run, returns transformers' hidden states for them."""

    def __init__(self):
        self.calls, self.outputs = {}, None

    def __call__(self, input_ids, attention_mask, output_hidden_states, use_cache):
        assert output_hidden_states is True and use_cache is False and attention_mask.dtype == torch.int64
        k = key(input_ids, attention_mask)
        if self.outputs is None:
            self.calls.setdefault(k, (input_ids.clone(), attention_mask.clone()))
            zero = torch.zeros(*input_ids.shape, te_config["hidden_size"])
            return SimpleNamespace(hidden_states=(zero,) * (te_config["num_hidden_layers"] + 1))
        return SimpleNamespace(hidden_states=self.outputs[k])


encoder, tokenizer = ReplayEncoder(), StandInTokenizer()
P0, EMPTY, P2 = cases["encode_prompts"]
CAT = "A photo of a cat"
assert EMPTY == "" and te_config["num_hidden_layers"] == 3
# (prompts, max_sequence_length, hidden_states_layers, dtype)
CASES = {
    # Three prompts at 24 tokens: P0 and P2 are cut (inside the prompt), "" and its thinking block padded.
    "three": ([P0, EMPTY, P2], 24, (1, 2, 3), torch.float32),
    # One prompt, every state but the embeddings in another order with a repeat; 40 tokens: padded, not cut.
    "cat_layers": ([CAT], 40, (3, 0, 2, 2), torch.float32),
    # diffusers' conversion of the stacked states to bfloat16 (the encoder runs in float32).
    "three_bf16": ([P0, EMPTY, P2], 24, (1, 2, 3), torch.bfloat16),
}


def run_all(out):
    for name, (prompts, length, layers, dtype) in CASES.items():
        with torch.no_grad():
            embeds = Flux2KleinPipeline._get_qwen3_prompt_embeds(
                text_encoder=encoder, tokenizer=tokenizer, prompt=list(prompts), dtype=dtype,
                device=torch.device("cpu"), max_sequence_length=length, hidden_states_layers=layers)
        out[f"{name}.prompt_embeds"] = embeds


run_all({})  # records what diffusers passes the text encoder
recorded = list(encoder.calls.values())
print(f"{len(recorded)} distinct text encoder calls: {[tuple(ids.shape) for ids, _ in recorded]}")

scratch = f"/tmp/flux2_klein_prompt_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)
torch.save(recorded, f"{scratch}/in.pt")
child = f"""
import json
import torch
from safetensors.torch import load_file
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

te_dir, scratch = {qwen3 + "/text_encoder"!r}, {scratch!r}
with open(te_dir + "/config.json") as f:
    model = Qwen3Model(Qwen3Config(**json.load(f))).eval()
# Written as Qwen3ForCausalLM writes it (model. prefix), loaded strictly.
model.load_state_dict({{k[len("model."):]: v for k, v in load_file(te_dir + "/model.safetensors").items()}}, strict=True)
print("attention:", model.config._attn_implementation)
outputs = []
with torch.no_grad():
    for ids, mask in torch.load(scratch + "/in.pt"):
        outputs.append(model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states)
torch.save(outputs, scratch + "/out.pt")
"""
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
subprocess.run([sys.executable, "-c", child], check=True, env=env)
outputs = torch.load(f"{scratch}/out.pt")
for f in ("in.pt", "out.pt"):
    os.remove(f"{scratch}/{f}")
os.rmdir(scratch)
encoder.outputs = {key(ids, mask): states for (ids, mask), states in zip(recorded, outputs)}

out = {}
run_all(out)
# What diffusers handed the text encoder, per case (int64), for checking the tokenizer half on its own.
for name, (prompts, length, layers, dtype) in CASES.items():
    ids = torch.cat([tokenizer(cases["chat_template_no_thinking"][p], return_tensors="pt", padding="max_length",
                               truncation=True, max_length=length)["input_ids"] for p in prompts])
    mask = torch.cat([tokenizer(cases["chat_template_no_thinking"][p], return_tensors="pt", padding="max_length",
                                truncation=True, max_length=length)["attention_mask"] for p in prompts])
    assert key(ids, mask) in encoder.outputs
    out[f"{name}.input_ids"] = ids
    out[f"{name}.attention_mask"] = mask
save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors", metadata={"format": "pt"})
for name, (prompts, length, layers, dtype) in CASES.items():
    e = out[f"{name}.prompt_embeds"]
    m = out[f"{name}.attention_mask"]
    print(f"{name}: prompt_embeds {list(e.shape)} {e.dtype}, real tokens per prompt {m.sum(1).tolist()} of {length}, "
          f"max |v| {e.float().abs().max().item():.4g}")
