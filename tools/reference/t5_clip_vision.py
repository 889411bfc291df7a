"""transformers' OWN T5EncoderModel and CLIPVisionModelWithProjection, for the parity fixture
local-diffusers/transformers-encoders (see its README.md).

Usage, from the repository root, after saving transformers' model files under /tmp/reftf (tools/reference/README.md):
    PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv /usr/bin/python3 \
        tools/reference/t5_clip_vision.py tests/DiffusersSharp.Tests/Fixtures

1. T5EncoderModel (models/t5/modeling_t5.py, unmodified) built from tiny-sd3's text_encoder_3/config.json by transformers'
   T5Config, loaded strictly with its model.safetensors (encoder.embed_tokens.weight tied to shared.weight, as
   transformers' loader ties it), in eval mode (no dropout), run on token ids of tiny-sd3's tokenizers.json: SD3's
   256-token padded rows, one row unpadded, two rows padded to T5's 512-token maximum, and the padded rows again under
   their attention mask (PixArt's encoding).
2. CLIPVisionModelWithProjection (models/clip/modeling_clip.py, unmodified; "eager" attention) on two tiny configs whose
   weights are drawn here under a fixed seed and saved as image_encoder folders, loaded back strictly, run on drawn
   pixel tensors with output_hidden_states=True.
Every output is float32 from a float32 run; the same models are also run in float64 and the script prints how far the
float32 outputs are from those (written in the README), nothing of which is stored.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

from transformers.models.clip.configuration_clip import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPVisionModelWithProjection
from transformers.models.t5.configuration_t5 import T5Config
from transformers.models.t5.modeling_t5 import T5EncoderModel

root = sys.argv[1]
out_dir = f"{root}/local-diffusers/transformers-encoders"
os.makedirs(out_dir, exist_ok=True)
out = {}


def report(name, f32, f64):
    err = (f32.double() - f64).abs().max().item()
    print(f"{name}: shape {list(f32.shape)}, max |expected| {f32.abs().max().item():.4g}, float32 vs float64 {err:.3g}")


# ---------------------------------------------------------------- T5
t5_dir = f"{root}/tiny-sd3/model/text_encoder_3"
with open(f"{t5_dir}/config.json") as f:
    t5_config = T5Config(**json.load(f))
t5 = T5EncoderModel(t5_config).eval()
t5_weights = load_file(f"{t5_dir}/model.safetensors")
t5_weights["encoder.embed_tokens.weight"] = t5_weights["shared.weight"]  # tied in T5EncoderModel (_tied_weights_keys)
t5.load_state_dict(t5_weights, strict=True)

with open(f"{root}/tiny-sd3/tokenizers.json", encoding="utf-8") as f:
    tokenizers = json.load(f)
prompts, rows = tokenizers["prompts"], tokenizers["tokenizer_3"]


def ids_of(i):
    return rows[i]["ids"]


# SD3 pads T5 ids to 256 (max_sequence_length) with pad 0 after </s> (1). Prompts: a sentence, "" (only </s>), digits and
# punctuation, emoji (unknown pieces), "word" x 300 (truncated: 255 x "word" + </s>, no padding), T5 special tokens.
PADDED = [0, 2, 8, 12, 15, 20]
# The full, untruncated ids of a prompt, when its 256-token row shows them: a row ending in padding is complete; for
# "word" x 300 (300 pieces "word" + </s>, untruncated_len 301) and "a" x 120 the pieces repeat one id.
def untruncated(i):
    row, n = ids_of(i), rows[i]["untruncated_len"]
    if n <= len(row):
        return row[:n]
    body = row[:-1]  # truncated row: 255 pieces + </s>
    assert len(set(body)) == 1 and row[-1] == 1 and len(prompts[i].split()) == n - 1, "not a single repeated piece"
    return [body[0]] * (n - 1) + [1]


LONG = [15, 14]  # 301 and 121 tokens, padded to T5's model_max_length 512
cases = {
    "padded": [ids_of(i) for i in PADDED],
    "short": [untruncated(0)],  # unpadded: 27 tokens ending in </s>
    "long512": [untruncated(i) + [0] * (512 - len(untruncated(i))) for i in LONG],
}
assert all(len(r) == 256 for r in cases["padded"]) and all(len(r) == 512 for r in cases["long512"])
assert cases["long512"][0][:255] == ids_of(15)[:255] and cases["long512"][1][:121] == ids_of(14)[:121]
t5_64 = T5EncoderModel(t5_config).eval().double()
t5_64.load_state_dict({k: v.double() for k, v in t5_weights.items()}, strict=True)
with torch.no_grad():
    for name, ids in cases.items():
        input_ids = torch.tensor(ids, dtype=torch.long)
        last = t5(input_ids=input_ids).last_hidden_state
        report(f"t5.{name}", last, t5_64(input_ids=input_ids).last_hidden_state)
        out[f"t5.{name}.input_ids"] = input_ids.float()  # exact: ids < 2^24
        out[f"t5.{name}.last_hidden_state"] = last
    # PixArt's encoding: the padded rows under their tokenizer attention mask (1 up to </s>, 0 on the pad id 0).
    input_ids = torch.tensor(cases["padded"], dtype=torch.long)
    mask = (input_ids != 0).long()
    last = t5(input_ids=input_ids, attention_mask=mask).last_hidden_state
    report("t5.masked", last, t5_64(input_ids=input_ids, attention_mask=mask).last_hidden_state)
    out["t5.masked.attention_mask"] = mask.float()
    out["t5.masked.last_hidden_state"] = last

# ---------------------------------------------------------------- CLIP vision
# "image_encoder": the sizes of tests' TinyImageEncoder (projection 24 = the local-diffusers/ip-adapter adapters' CLIP
# embedding width, hidden 20, 32 x 32 pixels in 8 x 8 patches), quick_gelu (transformers' default, OpenAI CLIP);
# "image_encoder_gelu": exact gelu (as the ViT-H / ViT-bigG image encoders of IP-Adapters), 3 layers, 4 heads, 6 x 6 patches.
ENCODERS = {
    "image_encoder": dict(hidden_size=20, intermediate_size=24, projection_dim=24, num_hidden_layers=2,
                          num_attention_heads=2, image_size=32, patch_size=8, hidden_act="quick_gelu"),
    "image_encoder_gelu": dict(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=3,
                               num_attention_heads=4, image_size=24, patch_size=4, hidden_act="gelu"),
}
g = torch.Generator("cpu").manual_seed(20261129)


def draw(key, shape):
    if key.endswith(("layer_norm1.weight", "layer_norm2.weight", "layrnorm.weight", "layernorm.weight")):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if key.endswith(".bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if key.endswith(("class_embedding", "position_embedding.weight")):
        return 0.5 * torch.randn(shape, generator=g)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) / fan_in ** 0.5  # projections and the patch conv


for name, sizes in ENCODERS.items():
    folder = f"{out_dir}/{name}"
    os.makedirs(folder, exist_ok=True)
    config_json = dict(sizes, architectures=["CLIPVisionModelWithProjection"], model_type="clip_vision_model",
                       layer_norm_eps=1e-5, num_channels=3)
    with open(f"{folder}/config.json", "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")
    shell = CLIPVisionModelWithProjection(CLIPVisionConfig(**config_json))
    save_file({k: draw(k, v.shape) for k, v in shell.state_dict().items()}, f"{folder}/model.safetensors")

    # What runs is what was written: config and weights read back from the folder.
    with open(f"{folder}/config.json") as f:
        config = CLIPVisionConfig(**json.load(f))
    weights = load_file(f"{folder}/model.safetensors")
    model = CLIPVisionModelWithProjection(config).eval()
    model.load_state_dict(weights, strict=True)
    model_64 = CLIPVisionModelWithProjection(config).eval().double()
    model_64.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
    pixels = torch.randn(2, 3, config.image_size, config.image_size, generator=g)  # like normalised CLIP inputs
    with torch.no_grad():
        result = model(pixel_values=pixels, output_hidden_states=True)
        result_64 = model_64(pixel_values=pixels.double(), output_hidden_states=True)
    out[f"{name}.pixel_values"] = pixels
    for key, value, value_64 in [("image_embeds", result.image_embeds, result_64.image_embeds),
                                 ("last_hidden_state", result.last_hidden_state, result_64.last_hidden_state),
                                 ("penultimate", result.hidden_states[-2], result_64.hidden_states[-2])]:
        report(f"{name}.{key}", value, value_64)
        out[f"{name}.{key}"] = value
    for i, hidden in enumerate(result.hidden_states):
        out[f"{name}.hidden_states.{i}"] = hidden

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{out_dir}/expected.safetensors")
print(f"wrote {len(out)} tensors to {out_dir}/expected.safetensors")
