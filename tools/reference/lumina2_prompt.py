"""diffusers' own Lumina2Pipeline.encode_prompt (v0.39.0) from prompt STRINGS, with transformers' own Gemma2Model as the
text encoder and Hugging Face's tokenizers library's ids: writes local-diffusers/lumina2-prompt/ (see its README.md).

Usage, from the repository root, after lumina2.py (local-diffusers/lumina2), sana_prompt.py (its tiny Gemma2) and
gemma_tokenizer.py, with transformers' Gemma2 files saved under /tmp/reftf-gemma2 (tools/reference/README.md) and the
.NET SDK (the script runs tools/reference/hf_tokenizers itself):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/lumina2_prompt.py tests/DiffusersSharp.Tests/Fixtures

1. The text encoder is local-diffusers/sana-prompt/text_encoder/ (a tiny Gemma2Model of width 32, the gemma-tokenizer
   fixture's vocabulary, sliding window 16 so the sliding layer cuts), the tokenizer local-diffusers/gemma-tokenizer.
2. diffusers' Lumina2Pipeline is built with local-diffusers/lumina2's transformer and scheduler, tiny-sd3's VAE, and two
   stand-ins for exactly the calls encode_prompt / _get_gemma_prompt_embeds make:
   - the tokenizer (padding_side, __call__(texts, padding="max_length", max_length, truncation=True,
     return_tensors="pt"), __call__(texts, padding="longest", return_tensors="pt") for the truncation warning, and
     batch_decode for that warning's text) answers only from ids Hugging Face's tokenizers library gave for
     gemma-tokenizer/tokenizer.json (`hf_tokenizers gemma-requests`: encode with the post-processor's <bos>; batches with
     the library's own truncation and right padding to max_length); "longest" pads the library's encodings with <pad>;
   - the text encoder returns, for the ids and mask diffusers passes, hidden_states of transformers' own Gemma2Model
     (models/gemma2/modeling_gemma2.py at 9feae5fb, eager attention) run with output_hidden_states=True in a child process.
   Both raise on a request they have no answer for, after recording it; the cases run again after the tool and the
   child have answered, until every case runs through.
3. expected.safetensors: per case encode_prompt's four outputs (CASE/prompt_embeds float32, CASE/prompt_attention_mask
   int64, and under guidance CASE/negative_prompt_embeds, CASE/negative_prompt_attention_mask); hidden/K: every hidden
   state K = 0 .. 2 of the text encoder on the first batch the "single" case sent (hidden/input_ids, hidden/attention_mask),
   as transformers returns them; cases.json: each case's arguments; tokenizer_calls.json: the library's answers used.
"""
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
from prompt_standins import Replay, TokenizerAnswers, run_rounds

root = sys.argv[1]
here = f"{root}/local-diffusers/lumina2-prompt"
lumina2 = f"{root}/local-diffusers/lumina2"
text_encoder_dir = f"{root}/local-diffusers/sana-prompt/text_encoder"
tokenizer_dir = f"{root}/local-diffusers/gemma-tokenizer/tokenizer"
os.makedirs(here, exist_ok=True)
scratch = f"/tmp/lumina2_prompt_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)

with open(f"{tokenizer_dir}/tokenizer.json", encoding="utf-8") as f:
    PAD = next(t["id"] for t in json.load(f)["added_tokens"] if t["content"] == "<pad>")

# The child: transformers' own Gemma2Model, loaded strictly, run on the recorded (ids, mask) pairs; every hidden state.
CHILD = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers.models.gemma2.configuration_gemma2 import Gemma2Config
from transformers.models.gemma2.modeling_gemma2 import Gemma2Model

folder, scratch = sys.argv[1:3]
with open(folder + "/config.json", encoding="utf-8") as f:
    model = Gemma2Model(Gemma2Config(**json.load(f))).eval()
model.load_state_dict(load_file(folder + "/model.safetensors"), strict=True)
outputs = []
with torch.no_grad():
    for ids, mask in torch.load(scratch + "/in.pt"):
        outputs.append(tuple(model(ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states))
torch.save(outputs, scratch + "/out.pt")
"""


def child():
    env = dict(os.environ, REFTF="/tmp/reftf-gemma2", PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
    subprocess.run([sys.executable, "-c", CHILD, text_encoder_dir, scratch], check=True, env=env)


class StandInTokenizer:
    """The calls Lumina2Pipeline makes on its GemmaTokenizerFast, answered from the tokenizers library's ids only."""

    def __init__(self):
        self.padding_side = "left"  # Lumina2Pipeline.__init__ sets "right"; the stand-in checks that it did
        self.library = TokenizerAnswers(tokenizer_dir, scratch)

    def __call__(self, texts, padding, return_tensors, max_length=None, truncation=False):
        assert self.padding_side == "right" and isinstance(texts, list) and return_tensors == "pt"
        if padding == "longest":
            assert max_length is None and truncation is False
            rows = self.library.encodings(texts)
            width = max(len(r) for r in rows)
            return SimpleNamespace(input_ids=torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.int64))
        assert padding == "max_length" and truncation is True
        ids, mask = self.library.batch(texts, max_length)
        return SimpleNamespace(input_ids=ids, attention_mask=mask)

    def batch_decode(self, ids):
        # Only the truncation warning's text.
        return [f"<{len(row)} ids>" for row in ids.tolist()]


def run_child(pairs):
    torch.save(pairs, f"{scratch}/in.pt")
    child()
    return torch.load(f"{scratch}/out.pt")


class ReplayEncoder(Replay):
    """Gemma2Model's hidden states for exactly the (ids, mask) pairs the child ran."""

    dtype = torch.float32

    def __init__(self):
        super().__init__(run_child)
        self.first = None

    def __call__(self, input_ids, attention_mask, output_hidden_states):
        assert output_hidden_states is True
        hidden = self.output(input_ids, attention_mask)
        if self.first is None:
            self.first = (input_ids.clone(), attention_mask.clone(), hidden)
        return SimpleNamespace(hidden_states=tuple(h.clone() for h in hidden))


tokenizer, encoder = StandInTokenizer(), ReplayEncoder()
pipe = Lumina2Pipeline(tokenizer=tokenizer, text_encoder=encoder,
                       vae=AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval(),
                       transformer=Lumina2Transformer2DModel.from_pretrained(f"{lumina2}/transformer").eval(),
                       scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(lumina2, subfolder="scheduler"))

LONG = "A red fox jumping over the lazy dog in a snowy forest at dawn, with long blue shadows and glittering frost"
CASES = {
    # One prompt, the default system prompt, no guidance, diffusers' default max_sequence_length (256).
    "single": dict(prompt="A small red fox", do_classifier_free_guidance=False),
    # Two prompts, guidance with the default "" negative.
    "two_prompts": dict(prompt=[LONG, "  Blue BIRD "], do_classifier_free_guidance=True),
    # A width that cuts the long prompt (system prompt + prompt: 146 tokens) but not the short one: the truncation
    # warning path, guidance.
    "truncated": dict(prompt=[LONG, "a tree"], do_classifier_free_guidance=True, max_sequence_length=120),
    # A negative prompt per prompt and a system prompt of our own.
    "negatives": dict(prompt=["A cat sleeping", "Two dogs"], negative_prompt=["blurry, low quality", LONG],
                      system_prompt="Draw this:", do_classifier_free_guidance=True, max_sequence_length=96),
    # An empty system prompt: " <Prompt Start> " + prompt.
    "empty_system": dict(prompt="A lighthouse at night", system_prompt="", do_classifier_free_guidance=False,
                         max_sequence_length=64),
    # One prompt, two images per prompt, guidance.
    "images_per_prompt": dict(prompt="A busy city street", num_images_per_prompt=2, do_classifier_free_guidance=True,
                              max_sequence_length=160),
    # Two prompts AND two images per prompt: diffusers tiles the masks (repeat(n, 1)) while the embeddings are repeated
    # per prompt; DiffusersSharp repeats each mask with its own prompt, a deliberate difference its test asserts.
    "prompts_and_images": dict(prompt=[LONG, "Blue bird"], negative_prompt=["", LONG], num_images_per_prompt=2,
                               do_classifier_free_guidance=True, max_sequence_length=160),
}

NAMES = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")


def run_case(args):
    with torch.no_grad():
        return pipe.encode_prompt(**args)


def reset_first():
    encoder.first = None


out = run_rounds(CASES, run_case, [tokenizer.library, encoder], NAMES, before_round=reset_first)

ids, mask, hidden = encoder.first
out["hidden/input_ids"], out["hidden/attention_mask"] = ids, mask
for k, h in enumerate(hidden):
    out[f"hidden/{k}"] = h.contiguous()
for name in CASES:
    assert out[f"{name}/prompt_embeds"].dtype == torch.float32 and out[f"{name}/prompt_attention_mask"].dtype == torch.int64
    shapes = {n: list(out[f"{name}/{n}"].shape) for n in NAMES if f"{name}/{n}" in out}
    print(name, shapes, "tokens", out[f"{name}/prompt_attention_mask"].sum(1).tolist())
save_file(out, f"{here}/expected.safetensors")
with open(f"{here}/cases.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps({"default_system_prompt": pipe.system_prompt, "cases": CASES}, indent=1, ensure_ascii=False) + "\n")
with open(f"{here}/tokenizer_calls.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(tokenizer.library.answers, indent=1, ensure_ascii=False) + "\n")
shutil.rmtree(scratch)
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
