"""transformers' OWN SiglipVisionModel (the SD3.5 IP-Adapter's image encoder), for the parity fixture
local-diffusers/siglip-vision (see its README.md).

Usage, from the repository root, after saving transformers' model files under /tmp/reftf (tools/reference/README.md):
    PYTHONPATH=tools/reference/pyenv-transformers:tools/reference/pyenv /usr/bin/python3 \
        tools/reference/siglip_vision.py tests/DiffusersSharp.Tests/Fixtures

SiglipVisionModel (models/siglip/modeling_siglip.py, unmodified; "eager" attention) on two tiny configs whose weights are
drawn here under a fixed seed and saved as image_encoder folders, loaded back strictly, run on drawn pixel tensors with
output_hidden_states=True: one with the attention-pooling head (transformers' default, as google/siglip-so400m-patch14-384),
one without (vision_use_head false).
The stored activations.py predates transformers' PytorchGELUTanh (whose forward is `nn.functional.gelu(input,
approximate="tanh")`), so "gelu_pytorch_tanh" is registered in its ACT2FN as torch's own nn.GELU(approximate="tanh"),
the same call. Every output is float32 from a float32 run; the same models are also run in float64 and the script prints
how far the float32 outputs are from those (written in the README), nothing of which is stored.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

import transformers.activations as activations

activations.ACT2FN.setdefault("gelu_pytorch_tanh", torch.nn.GELU(approximate="tanh"))

from transformers.models.siglip.configuration_siglip import SiglipVisionConfig  # noqa: E402
from transformers.models.siglip.modeling_siglip import SiglipVisionModel  # noqa: E402

root = sys.argv[1]
out_dir = f"{root}/local-diffusers/siglip-vision"
os.makedirs(out_dir, exist_ok=True)
out = {}


def report(name, f32, f64):
    err = (f32.double() - f64).abs().max().item()
    print(f"{name}: shape {list(f32.shape)}, max |expected| {f32.abs().max().item():.4g}, float32 vs float64 {err:.3g}")


ENCODERS = {
    "image_encoder": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                          image_size=28, patch_size=7),
    "image_encoder_nohead": dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3,
                                 image_size=16, patch_size=4, vision_use_head=False),
}
g = torch.Generator("cpu").manual_seed(20261130)


def draw(key, shape):
    if key.endswith(("layer_norm1.weight", "layer_norm2.weight", "layernorm.weight")):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if key.endswith((".bias", "in_proj_bias")):
        return 0.1 * torch.randn(shape, generator=g)
    if key.endswith(("position_embedding.weight", "probe")):
        return 0.5 * torch.randn(shape, generator=g)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) / fan_in ** 0.5  # projections and the patch conv


for name, sizes in ENCODERS.items():
    folder = f"{out_dir}/{name}"
    os.makedirs(folder, exist_ok=True)
    config_json = dict(sizes, architectures=["SiglipVisionModel"], model_type="siglip_vision_model",
                       hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, num_channels=3)
    with open(f"{folder}/config.json", "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")
    shell = SiglipVisionModel(SiglipVisionConfig(**config_json))
    save_file({k: draw(k, v.shape) for k, v in shell.state_dict().items()}, f"{folder}/model.safetensors")

    # What runs is what was written: config and weights read back from the folder.
    with open(f"{folder}/config.json") as f:
        config = SiglipVisionConfig(**json.load(f))
    weights = load_file(f"{folder}/model.safetensors")
    model = SiglipVisionModel(config).eval()
    model.load_state_dict(weights, strict=True)
    model_64 = SiglipVisionModel(config).eval().double()
    model_64.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
    pixels = torch.randn(2, 3, config.image_size, config.image_size, generator=g)  # like normalised inputs
    with torch.no_grad():
        result = model(pixel_values=pixels, output_hidden_states=True)
        result_64 = model_64(pixel_values=pixels.double(), output_hidden_states=True)
    out[f"{name}.pixel_values"] = pixels
    pairs = [("last_hidden_state", result.last_hidden_state, result_64.last_hidden_state),
             ("penultimate", result.hidden_states[-2], result_64.hidden_states[-2])]
    if result.pooler_output is not None:
        pairs.append(("pooler_output", result.pooler_output, result_64.pooler_output))
    for key, value, value_64 in pairs:
        report(f"{name}.{key}", value, value_64)
        out[f"{name}.{key}"] = value
    for i, hidden in enumerate(result.hidden_states):
        out[f"{name}.hidden_states.{i}"] = hidden

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{out_dir}/expected.safetensors")
print(f"wrote {len(out)} tensors to {out_dir}/expected.safetensors")
