"""diffusers' own SanaPipeline.encode_prompt (v0.39.0) from prompt STRINGS, with transformers' own Gemma2Model as the text
encoder and Hugging Face's tokenizers library's ids: writes local-diffusers/sana-prompt/ (see its README.md).

Usage, from the repository root, after gemma_tokenizer.py (the fixture local-diffusers/gemma-tokenizer) and sana.py, with
transformers' Gemma2 files saved under /tmp/reftf-gemma2 (tools/reference/README.md) and the .NET SDK (the script runs
tools/reference/hf_tokenizers itself):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana_prompt.py tests/DiffusersSharp.Tests/Fixtures

1. text_encoder/: a new tiny Gemma2Model (config.json below; vocab_size 623, the gemma-tokenizer fixture's vocabulary
   with its added tokens), weights drawn in state_dict order from torch.Generator().manual_seed(20261129) as gemma2.py
   draws them (norm weights 0.1 randn, embedding randn, linears randn / sqrt(fan-in), q_proj / k_proj 2x so that the
   attention logits reach the soft cap of 2.0). sliding_window is 16, not Sana's 4096: every width below is longer than
   16, so the sliding layer (layer 0) really cuts, as 4096 never would at these lengths. Drawn and written by transformers'
   own Gemma2Model in a child process (REFTF=/tmp/reftf-gemma2, PYTHONPATH tools/reference/pyenv-transformers first).
2. diffusers' SanaPipeline is built with local-diffusers/sana's transformer, vae and scheduler, and two stand-ins for
   exactly the calls encode_prompt / _get_gemma_prompt_embeds make:
   - the tokenizer (padding_side, encode(text), __call__(texts, padding="max_length", max_length, truncation=True,
     add_special_tokens=True, return_tensors="pt")) answers only from ids Hugging Face's tokenizers library gave for
     local-diffusers/gemma-tokenizer/tokenizer/tokenizer.json (`hf_tokenizers gemma-requests`, Gemma.cs: encode with the
     post-processor's <bos>; batches with the library's own truncation and right padding to max_length);
   - the text encoder returns, for the ids and mask diffusers passes, last_hidden_state of transformers' own
     Gemma2Model (models/gemma2/modeling_gemma2.py at 9feae5fb, eager attention with soft-capping) loaded strictly from
     text_encoder/, run in a child process (use_cache=False, as gemma2.py: the cache does not change the output).
   Both raise on a request they have no answer for, after recording it; the cases are run again after the tool and the
   child have answered what was recorded, until every case runs through (a few rounds: the instruction's length decides
   the width diffusers asks for).
3. expected.safetensors: per case, encode_prompt's four outputs (embeddings float32, masks int64) under
   CASE/prompt_embeds, CASE/prompt_attention_mask, CASE/negative_prompt_embeds, CASE/negative_prompt_attention_mask
   (the last two only with guidance); cases.json: each case's arguments (complex_human_instruction null = the default
   of SanaPipeline.__call__, which is what is passed) and diffusers' default instruction; tokenizer_calls.json: the
   library's answers the stand-in used.
"""
import inspect
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
from prompt_standins import Replay, TokenizerAnswers, run_rounds

root = sys.argv[1]
here = f"{root}/local-diffusers/sana-prompt"
sana = f"{root}/local-diffusers/sana"
tokenizer_dir = f"{root}/local-diffusers/gemma-tokenizer/tokenizer"
os.makedirs(f"{here}/text_encoder", exist_ok=True)
scratch = f"/tmp/sana_prompt_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)

with open(f"{tokenizer_dir}/tokenizer.json", encoding="utf-8") as f:
    tokenizer_json = json.load(f)
VOCAB = max(max(tokenizer_json["model"]["vocab"].values()), max(t["id"] for t in tokenizer_json["added_tokens"])) + 1

TEXT_ENCODER_CONFIG = {
    "architectures": ["Gemma2Model"], "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": 2.0,
    "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
    "head_dim": 16, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 8192, "model_type": "gemma2",
    "num_attention_heads": 2, "num_hidden_layers": 2, "num_key_value_heads": 1, "pad_token_id": 0,
    "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 16,
    "torch_dtype": "float32", "use_cache": True, "vocab_size": VOCAB,
}
with open(f"{here}/text_encoder/config.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(TEXT_ENCODER_CONFIG, indent=2, sort_keys=True) + "\n")

# The child: transformers' own Gemma2Model. "make" draws and writes the weights; "run" loads them strictly and runs the
# recorded (ids, mask) pairs.
CHILD = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers.models.gemma2.configuration_gemma2 import Gemma2Config
from transformers.models.gemma2.modeling_gemma2 import Gemma2Model

mode, folder, scratch = sys.argv[1:4]
with open(folder + "/config.json", encoding="utf-8") as f:
    model = Gemma2Model(Gemma2Config(**json.load(f))).eval()
if mode == "make":
    g = torch.Generator().manual_seed(20261129)
    drawn = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight"):
            drawn[name] = 0.1 * torch.randn(p.shape, generator=g)
        elif name == "embed_tokens.weight":
            drawn[name] = torch.randn(p.shape, generator=g)
        else:
            scale = 2.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
            drawn[name] = scale * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
    save_file(drawn, folder + "/model.safetensors")
else:
    model.load_state_dict(load_file(folder + "/model.safetensors"), strict=True)
    outputs = []
    with torch.no_grad():
        for ids, mask in torch.load(scratch + "/in.pt"):
            outputs.append(model(ids, attention_mask=mask, use_cache=False)[0])
    torch.save(outputs, scratch + "/out.pt")
"""


def child(mode):
    env = dict(os.environ, REFTF="/tmp/reftf-gemma2", PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
    subprocess.run([sys.executable, "-c", CHILD, mode, f"{here}/text_encoder", scratch], check=True, env=env)


child("make")


class StandInTokenizer:
    """The calls SanaPipeline makes on its GemmaTokenizerFast, answered from the tokenizers library's ids only."""

    def __init__(self):
        self.padding_side = "left"  # diffusers sets "right" itself before every call; the stand-in checks that it did
        self.library = TokenizerAnswers(tokenizer_dir, scratch)

    def encode(self, text):
        return self.library.encoding(text)

    def __call__(self, texts, padding, max_length, truncation, add_special_tokens, return_tensors):
        assert padding == "max_length" and truncation is True and add_special_tokens is True and return_tensors == "pt"
        assert self.padding_side == "right" and isinstance(texts, list)
        ids, mask = self.library.batch(texts, max_length)
        return SimpleNamespace(input_ids=ids, attention_mask=mask)


def run_child(pairs):
    torch.save(pairs, f"{scratch}/in.pt")
    child("run")
    return torch.load(f"{scratch}/out.pt")


class ReplayEncoder(Replay):
    """Gemma2Model's last_hidden_state for exactly the (ids, mask) pairs the child ran."""

    dtype = torch.float32

    def __init__(self):
        super().__init__(run_child)

    def __call__(self, input_ids, attention_mask):
        return (self.output(input_ids, attention_mask).clone(),)


tokenizer, encoder = StandInTokenizer(), ReplayEncoder()
pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=encoder,
                    vae=AutoencoderDC.from_pretrained(f"{sana}/vae").eval(),
                    transformer=SanaTransformer2DModel.from_pretrained(f"{sana}/transformer").eval(),
                    scheduler=DPMSolverMultistepScheduler.from_pretrained(sana, subfolder="scheduler"))
# The instruction SanaPipeline.__call__ passes by default (encode_prompt's own default is None: no instruction).
DEFAULT_CHI = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
assert isinstance(DEFAULT_CHI, list) and len(DEFAULT_CHI) > 1

LONG = "  A RED Fox Jumping over the LAZY dog in a snowy forest at dawn, with long blue shadows and glittering frost  "
CASES = {
    # One prompt, the default instruction, no guidance.
    "default": dict(prompt="A small red fox", do_classifier_free_guidance=False, max_sequence_length=24),
    # Two prompts, one cut by the width (upper case and spaces around: lower().strip() matter), guidance with "".
    "two_prompts": dict(prompt=[LONG, "  Blue BIRD "], do_classifier_free_guidance=True, max_sequence_length=24),
    # A negative prompt per prompt (one cut at max_sequence_length; lower-cased too), max_sequence_length 40.
    "negatives": dict(prompt=["A cat sleeping", "  Two DOGS  "], negative_prompt=["  BLURRY, low quality  ", LONG],
                      do_classifier_free_guidance=True, max_sequence_length=40),
    # One prompt, two images per prompt, guidance.
    "images_per_prompt": dict(prompt="A busy city street", num_images_per_prompt=2, do_classifier_free_guidance=True,
                              max_sequence_length=24),
    # A short instruction of two lines.
    "custom_instruction": dict(prompt=["A Lighthouse at NIGHT", "rain"], complex_human_instruction=["Describe it:", "Prompt: "],
                               do_classifier_free_guidance=True, max_sequence_length=24),
    # No instruction ([]): the prompts at max_sequence_length, select_index keeps every position.
    "no_instruction": dict(prompt=[LONG, "a tree"], complex_human_instruction=[], do_classifier_free_guidance=True,
                           max_sequence_length=24),
    # diffusers' default max_sequence_length.
    "default_length": dict(prompt="A cat sleeping", do_classifier_free_guidance=True),
    # Two prompts AND two images per prompt: diffusers tiles the masks (repeat(n, 1)) while the embeddings are repeated per
    # prompt; DiffusersSharp repeats each mask with its own prompt, a deliberate difference its test asserts.
    "prompts_and_images": dict(prompt=[LONG, "Blue bird"], negative_prompt=["", LONG], num_images_per_prompt=2,
                               do_classifier_free_guidance=True, max_sequence_length=24),
}


def run_case(args):
    args = dict(args)
    args.setdefault("complex_human_instruction", DEFAULT_CHI)
    args.setdefault("max_sequence_length", 300)
    with torch.no_grad():
        return pipe.encode_prompt(**args)


NAMES = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
out = run_rounds(CASES, run_case, [tokenizer.library, encoder], NAMES)

for name in CASES:
    # encode_prompt's dtype: the embeddings float32, the masks as the tokenizer gave them (int64).
    assert out[f"{name}/prompt_embeds"].dtype == torch.float32 and out[f"{name}/prompt_attention_mask"].dtype == torch.int64
    shapes = {n: list(out[f"{name}/{n}"].shape) for n in NAMES if f"{name}/{n}" in out}
    print(name, shapes, f"max |embeds| {out[f'{name}/prompt_embeds'].abs().max().item():.4g}")
save_file(out, f"{here}/expected.safetensors")
with open(f"{here}/cases.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps({"default_complex_human_instruction": DEFAULT_CHI,
                        "cases": {n: dict(a, complex_human_instruction=a.get("complex_human_instruction"))
                                  for n, a in CASES.items()}}, indent=1, ensure_ascii=False) + "\n")
with open(f"{here}/tokenizer_calls.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(tokenizer.library.answers, indent=1, ensure_ascii=False) + "\n")
shutil.rmtree(scratch)
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
