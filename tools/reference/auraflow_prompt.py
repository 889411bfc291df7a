"""diffusers' own AuraFlowPipeline.encode_prompt (v0.39.0) from prompt STRINGS, with transformers' own UMT5EncoderModel as
the text encoder and Hugging Face's tokenizers library's ids of a Llama tokenizer: writes local-diffusers/auraflow-prompt/
(see its README.md).

Usage, from the repository root, after auraflow.py and llama_tokenizer.py, with transformers' UMT5 files saved under
/tmp/reftf-umt5 (tools/reference/README.md) and the .NET SDK (the script runs tools/reference/hf_tokenizers itself):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/auraflow_prompt.py tests/DiffusersSharp.Tests/Fixtures

1. text_encoder/: a new tiny UMT5EncoderModel (config.json below: umt5.py's tiny shape, d_model 32 = the auraflow
   fixture transformer's joint_attention_dim, the vocabulary of local-diffusers/llama-tokenizer with its added tokens),
   weights drawn in state_dict order from torch.Generator().manual_seed(20261201) as umt5.py draws them, written and
   later run by transformers' own UMT5EncoderModel in a child process (REFTF=/tmp/reftf-umt5, PYTHONPATH
   tools/reference/pyenv-transformers first).
2. tokenizer/: a copy of llama-tokenizer/tokenizer-legacy (padding_side "left", add_bos_token true, add_eos_token false).
3. diffusers' AuraFlowPipeline is built with local-diffusers/auraflow's transformer and scheduler, tiny-sdxl's VAE, and two
   stand-ins for exactly the calls encode_prompt makes:
   - the tokenizer (__call__(texts, truncation=True, max_length, padding="max_length", return_tensors="pt"),
     __call__(texts, padding="longest", return_tensors="pt") for the truncation warning, batch_decode for its text)
     answers only with ids the tokenizers library gave for tokenizer/tokenizer.json (`hf_tokenizers gemma-requests`:
     encode with the post-processor's <s>; batches with the library's own truncation and padding on the LEFT, the
     tokenizer_config's padding_side, which transformers' LlamaTokenizerFast applies; "longest" pads the library's
     encodings with <pad> on the left too);
   - the text encoder returns, for the ids and mask diffusers passes, last_hidden_state of transformers' own
     UMT5EncoderModel loaded strictly from text_encoder/.
   Both raise on a request they have no answer for, after recording it; the cases run again after the tool and the
   child have answered, until every case runs through.
4. expected.safetensors: per case encode_prompt's outputs (CASE/prompt_embeds float32, CASE/prompt_attention_mask, and
   under guidance CASE/negative_prompt_embeds, CASE/negative_prompt_attention_mask; the masks as encode_prompt returns
   them: the token mask expanded over the width and flattened, [B, S * D]); cases.json: each case's arguments;
   tokenizer_calls.json: the library's answers used.
"""
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler
from prompt_standins import Replay, TokenizerAnswers, run_rounds

root = sys.argv[1]
here = f"{root}/local-diffusers/auraflow-prompt"
auraflow = f"{root}/local-diffusers/auraflow"
source_tokenizer = f"{root}/local-diffusers/llama-tokenizer/tokenizer-legacy"
tokenizer_dir = f"{here}/tokenizer"
os.makedirs(f"{here}/text_encoder", exist_ok=True)
shutil.rmtree(tokenizer_dir, ignore_errors=True)
shutil.copytree(source_tokenizer, tokenizer_dir)
scratch = f"/tmp/auraflow_prompt_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)

with open(f"{tokenizer_dir}/tokenizer.json", encoding="utf-8") as f:
    tokenizer_json = json.load(f)
with open(f"{tokenizer_dir}/tokenizer_config.json", encoding="utf-8") as f:
    PADDING_SIDE = json.load(f)["padding_side"]
assert PADDING_SIDE == "left"
PAD = next(t["id"] for t in tokenizer_json["added_tokens"] if t["content"] == "<pad>")
VOCAB = max(max(tokenizer_json["model"]["vocab"].values()), max(t["id"] for t in tokenizer_json["added_tokens"])) + 1

TEXT_ENCODER_CONFIG = {
    "architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 48, "d_kv": 8, "d_model": 32,
    "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 2,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
    "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_decoder_layers": 2, "num_heads": 4, "num_layers": 2,
    "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 16, "relative_attention_num_buckets": 8,
    "scalable_attention": True, "tie_word_embeddings": False, "tokenizer_class": "LlamaTokenizerFast",
    "torch_dtype": "float32", "use_cache": True, "vocab_size": VOCAB,
}
with open(f"{here}/text_encoder/config.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(TEXT_ENCODER_CONFIG, indent=2, sort_keys=True) + "\n")

# The child: transformers' own UMT5EncoderModel. "make" draws and writes the weights (as umt5.py: the tied
# encoder.embed_tokens.weight left out); "run" loads them strictly and runs the recorded (ids, mask) pairs.
CHILD = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers.models.umt5.configuration_umt5 import UMT5Config
from transformers.models.umt5.modeling_umt5 import UMT5EncoderModel

mode, folder, scratch = sys.argv[1:4]
with open(folder + "/config.json", encoding="utf-8") as f:
    model = UMT5EncoderModel(UMT5Config(**json.load(f))).eval()
if mode == "make":
    g = torch.Generator().manual_seed(20261201)
    drawn = {}
    for name, p in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue
        if name.endswith("layer_norm.weight"):
            drawn[name] = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name == "shared.weight" or name.endswith("relative_attention_bias.weight"):
            drawn[name] = torch.randn(p.shape, generator=g)
        else:
            drawn[name] = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
    save_file(drawn, folder + "/model.safetensors")
else:
    weights = load_file(folder + "/model.safetensors")
    weights["encoder.embed_tokens.weight"] = weights["shared.weight"]
    model.load_state_dict(weights, strict=True)
    outputs = []
    with torch.no_grad():
        for ids, mask in torch.load(scratch + "/in.pt"):
            outputs.append(model(input_ids=ids, attention_mask=mask)[0])
    torch.save(outputs, scratch + "/out.pt")
"""


def child(mode):
    env = dict(os.environ, REFTF="/tmp/reftf-umt5", PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
    subprocess.run([sys.executable, "-c", CHILD, mode, f"{here}/text_encoder", scratch], check=True, env=env)


child("make")


class StandInTokenizer:
    """The calls AuraFlowPipeline makes on its LlamaTokenizerFast, answered from the tokenizers library's ids only."""

    def __init__(self):
        self.library = TokenizerAnswers(tokenizer_dir, scratch)

    def __call__(self, texts, padding, return_tensors, max_length=None, truncation=False):
        texts = [texts] if isinstance(texts, str) else texts  # encode_prompt passes a single prompt as it is
        assert isinstance(texts, list) and return_tensors == "pt"
        if padding == "longest":
            assert max_length is None and truncation is False
            rows = self.library.encodings(texts)
            width = max(len(r) for r in rows)
            return SimpleNamespace(input_ids=torch.tensor([[PAD] * (width - len(r)) + r for r in rows], dtype=torch.int64))
        assert padding == "max_length" and truncation is True
        ids, mask = self.library.batch(texts, max_length, direction="Left")
        # A BatchEncoding: diffusers indexes it, iterates its items and calls text_encoder(**inputs).
        return {"input_ids": ids, "attention_mask": mask}

    def batch_decode(self, ids):
        return [f"<{len(row)} ids>" for row in ids.tolist()]


def run_child(pairs):
    torch.save(pairs, f"{scratch}/in.pt")
    child("run")
    return torch.load(f"{scratch}/out.pt")


class ReplayEncoder(Replay):
    """UMT5EncoderModel's last_hidden_state for exactly the (ids, mask) pairs the child ran."""

    dtype = torch.float32

    def __init__(self):
        super().__init__(run_child)

    def __call__(self, input_ids, attention_mask):
        return (self.output(input_ids, attention_mask).clone(),)


tokenizer, encoder = StandInTokenizer(), ReplayEncoder()
pipe = AuraFlowPipeline(tokenizer=tokenizer, text_encoder=encoder,
                        vae=AutoencoderKL.from_pretrained(f"{root}/tiny-sdxl/model", subfolder="vae").eval(),
                        transformer=AuraFlowTransformer2DModel.from_pretrained(f"{auraflow}/transformer").eval(),
                        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(auraflow, subfolder="scheduler"))

LONG = "A red fox jumping over the lazy dog in a snowy forest at dawn, with long blue shadows and glittering frost"
CASES = {
    # One prompt, no guidance, diffusers' default max_sequence_length (256): left padding over most of the row.
    "single": dict(prompt="A small red fox", do_classifier_free_guidance=False),
    # Two prompts, guidance with the default "" negative (cut / padded to the prompts' width).
    "two_prompts": dict(prompt=[LONG, "Blue bird"], do_classifier_free_guidance=True, max_sequence_length=96),
    # A width that cuts the long prompt (65 ids with <s>: the truncation warning path) but not the short one.
    "truncated": dict(prompt=[LONG, "a tree"], do_classifier_free_guidance=True, max_sequence_length=24),
    # A negative prompt per prompt.
    "negatives": dict(prompt=["A cat sleeping", "Two dogs"], negative_prompt=["blurry, low quality", LONG],
                      do_classifier_free_guidance=True, max_sequence_length=48),
    # One prompt, two images per prompt, guidance.
    "images_per_prompt": dict(prompt="A busy city street", num_images_per_prompt=2, do_classifier_free_guidance=True,
                              max_sequence_length=32),
}

NAMES = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")


def run_case(args):
    with torch.no_grad():
        return pipe.encode_prompt(**args)


out = run_rounds(CASES, run_case, [tokenizer.library, encoder], NAMES)

for name in CASES:
    assert out[f"{name}/prompt_embeds"].dtype == torch.float32
    shapes = {n: list(out[f"{name}/{n}"].shape) for n in NAMES if f"{name}/{n}" in out}
    print(name, shapes)
save_file(out, f"{here}/expected.safetensors")
with open(f"{here}/cases.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps({"cases": CASES}, indent=1, ensure_ascii=False) + "\n")
with open(f"{here}/tokenizer_calls.json", "w", encoding="utf-8", newline="\n") as f:
    f.write(json.dumps(tokenizer.library.answers, indent=1, ensure_ascii=False) + "\n")
shutil.rmtree(scratch)
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
