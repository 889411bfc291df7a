"""transformers' own Qwen2-VL model file (the text model Qwen2.5-VL shares) and diffusers v0.39.0's own
QwenImagePipeline._get_qwen_prompt_embeds: writes local-diffusers/qwen2-5-vl/ (see its README.md).

Usage, from the repository root, with transformers' files saved under /tmp/reftf-qwen25 (tools/reference/README.md) and
the ids of the prompts' renderings written first by
    dotnet run --project tools/reference/hf_tokenizers -c Release -- qwen2-texts \
        tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen2-5-vl/texts.json \
        tests/DiffusersSharp.Tests/Fixtures/local-diffusers/qwen2-5-vl/hf_tokenizers.json
(texts.json is written by this script's first run; rerun it after the tool):
    REFTF=/tmp/reftf-qwen25 PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv:/tmp/refpy39 \
        /usr/bin/python3 tools/reference/qwen2_5_vl.py tests/DiffusersSharp.Tests/Fixtures
"""
import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file

from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLForConditionalGeneration



def diffusers_methods():
    """diffusers v0.39.0's own QwenImagePipeline._extract_masked_hidden and _get_qwen_prompt_embeds, their source taken
    unmodified from /tmp/refpy39's pipeline_qwenimage.py (importing the module would need much more of transformers than
    this environment stands in for)."""
    import ast
    import diffusers
    path = os.path.join(os.path.dirname(diffusers.__file__), "pipelines", "qwenimage", "pipeline_qwenimage.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "QwenImagePipeline")
    namespace = {"torch": torch}
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in ("_extract_masked_hidden", "_get_qwen_prompt_embeds"):
            exec(compile(ast.Module([fn], []), path, "exec"), namespace)
    return namespace["_extract_masked_hidden"], namespace["_get_qwen_prompt_embeds"]


extract_masked_hidden, get_qwen_prompt_embeds = diffusers_methods()
root = sys.argv[1]
here = f"{root}/local-diffusers/qwen2-5-vl"
qwen3 = f"{root}/local-diffusers/qwen3"
os.makedirs(here, exist_ok=True)

with open(f"{qwen3}/tokenizer/tokenizer_config.json", encoding="utf-8") as f:
    tok_config = json.load(f)
PAD = next(int(k) for k, v in tok_config["added_tokens_decoder"].items() if v["content"] == tok_config["pad_token"])

# Qwen-Image's text_encoder/config.json fields (transformers 4.49 layout: text settings at the top level), tiny sizes.
# Two cases: MHA (2 heads, 2 kv heads) and GQA (4 heads, 2 kv heads).
CASES = {
    "mha": dict(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
    "gqa": dict(hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
}
COMMON = dict(vocab_size=704, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=128000,
              use_sliding_window=False, sliding_window=32768, max_window_layers=28, attention_dropout=0.0,
              tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645, image_token_id=151655,
              video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
              vision_token_id=151654)
VISION = dict(depth=1, embed_dim=8, hidden_size=16, num_heads=2, in_chans=3, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, mlp_ratio=2)

# A padded batch of two id sequences (right padding, as transformers' Qwen2Tokenizer pads).
IDS = [[657, 12, 300, 45, 658, 7, 99, 513, 2, 656], [657, 401, 33, 658, 656, 656, 656, 656, 656, 656]]
MASK = [[1] * 10, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]]

PROMPTS = ["A cat", "A red fox sleeping under a tall pine tree, snow all around, morning light."]
LONG = "The quick brown fox jumps over the lazy dog. " * 80  # about 1400 tokens: cut at 1024 + 34


def build(name):
    cfg = dict(COMMON, **CASES[name])
    config = Qwen2VLConfig(**copy.deepcopy(cfg), vision_config=copy.deepcopy(VISION))  # it rewrites rope_scaling's type
    config._attn_implementation = "eager"
    # diffusers calls the text encoder with the config's use_cache (true in Qwen-Image's): transformers then fills a
    # DynamicCache with each layer's keys / values, which nothing reads here; the stand-in environment has no caches.
    config.use_cache = False
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    g = torch.Generator("cpu").manual_seed(20261128 + len(name))
    with torch.no_grad():
        for key, p in model.named_parameters():
            # transformers' init gives zero biases and unit norms: draw them too, so that both count.
            if key.endswith("bias") or "norm" in key:
                p.copy_((1.0 if "norm" in key else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    folder = f"{here}/text_encoder_{name}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/config.json", "w", encoding="utf-8") as f:
        json.dump(dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl", torch_dtype="float32",
                       **cfg, vision_config=VISION), f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/model.safetensors",
              metadata={"format": "pt"})
    return model


# diffusers v0.39.0's prompt_template_encode (QwenImagePipeline.__init__), as the stand-in below sets it.
TEMPLATE = "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
texts = [TEMPLATE.format(p) for p in PROMPTS + [LONG]]
with open(f"{here}/texts.json", "w", encoding="utf-8") as f:
    json.dump(texts, f, ensure_ascii=False, indent=1)
    f.write("\n")
if not os.path.exists(f"{here}/hf_tokenizers.json"):
    sys.exit("run the hf_tokenizers tool (qwen2-texts) now, then this script again")
with open(f"{here}/hf_tokenizers.json", encoding="utf-8") as f:
    hf_ids = {e["text"]: e["ids"] for e in json.load(f)["ids"]}


class Tokens(dict):
    __getattr__ = dict.__getitem__

    def to(self, device):
        return self


class Tokenizer:
    """transformers' tokenizer(txt, max_length=M, padding=True, truncation=True, return_tensors="pt") for the
    renderings hf_tokenizers.json has: each cut to M from the right, padded on the right to the longest with <|endoftext|>."""

    def __call__(self, txt, max_length, padding, truncation, return_tensors):
        assert padding is True and truncation is True and return_tensors == "pt"
        rows = [hf_ids[t][:max_length] for t in txt]
        n = max(len(r) for r in rows)
        ids = torch.tensor([r + [PAD] * (n - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
        return Tokens(input_ids=ids, attention_mask=mask)


class Stand:
    """The attributes of a QwenImagePipeline that _get_qwen_prompt_embeds reads (set as __init__ sets them)."""

    def __init__(self, model):
        self.tokenizer = Tokenizer()
        self.text_encoder = model
        self.tokenizer_max_length = 1024
        self.prompt_template_encode = TEMPLATE
        self.prompt_template_encode_start_idx = 34

    def _extract_masked_hidden(self, h, m):
        return extract_masked_hidden(self, h, m)


out = {}
for name in CASES:
    model = build(name)
    with torch.no_grad():
        ids, mask = torch.tensor(IDS), torch.tensor(MASK)
        o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        out[f"{name}.input_ids"] = ids
        out[f"{name}.attention_mask"] = mask
        out[f"{name}.hidden_last"] = o.hidden_states[-1].contiguous()
        stand = Stand(model)
        for tag, prompts in (("two", PROMPTS), ("long", [LONG]), ("long_and_short", [PROMPTS[0], LONG])):
            embeds, emask = get_qwen_prompt_embeds(stand, prompts, torch.device("cpu"), torch.float32)
            out[f"{name}.{tag}.prompt_embeds"] = embeds.contiguous()
            out[f"{name}.{tag}.mask"] = emask.contiguous()
# The stand-in's own rows, recorded so the tests check the tokenization too.
for i, t in enumerate(texts):
    out[f"text{i}.ids"] = torch.tensor(hf_ids[t])
save_file(out, f"{here}/expected.safetensors", metadata={"format": "pt"})
print({k: tuple(v.shape) for k, v in out.items()})
