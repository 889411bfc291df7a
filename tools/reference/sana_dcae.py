"""diffusers' own AutoencoderDC (v0.39.0, Sana's deep-compression autoencoder) on two tiny models: writes local-diffusers/sana-dcae/.

Usage (see README.md for the environment; diffusers v0.39.0 under /tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana_dcae.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sana-dcae/:
- sana/: a tiny AutoencoderDC in the structure of mit-han-lab/dc-ae-f32c32-sana-1.0 (the config of diffusers'
  scripts/convert_dcae_to_diffusers.py, narrowed): ResBlock levels then EfficientViTBlock levels, qkv_multiscales (5,)
  on the attention levels, downsample "Conv" (strided convolutions), upsample "interpolate", decoder norm "rms_norm" /
  act "silu", both shortcuts on, decoder_conv_act_fn relu;
- options/: a tiny AutoencoderDC with the other options, in the layout of dc-ae-f32c32-in-1.0 where it has one
  (layers_per_block[0] = 0, so conv_in / conv_out are DCDownBlock2d / DCUpBlock2d; pixel_unshuffle / pixel_shuffle;
  decoder norms and acts per level with batch_norm, relu, gelu) plus what no released config uses but the constructor
  accepts (two multiscale kernels (3, 5), no qkv multiscale on an attention level, a batch_norm attention, both
  shortcuts off, decoder_conv_act_fn silu);
- expected.safetensors: each model's inputs and diffusers' encode / decode outputs (float32), and diffusers' own
  bfloat16 run of the same inputs (stored as float32); the sana model's first encoder attention alone (no residual) in
  float32 and bfloat16 on a map where it is linear and one where it is quadratic;
- counts.json: state-dict key and element counts of the full-size dc-ae-f32c32-sana-1.0 built on meta, and some shapes.
Every weight is drawn: diffusers' initialisation after torch.manual_seed, then every norm's weight / bias (which start
at 1 / 0) and the BatchNorm running statistics (0 / 1 / 0) from a seeded generator, so no parameter is 0 or 1.
"""
import json
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderDC
from diffusers.models.normalization import RMSNorm

root = sys.argv[1]
here = f"{root}/local-diffusers/sana-dcae"

# dc-ae-f32c32-sana-1.0 (scripts/convert_dcae_to_diffusers.py, get_ae_config), narrowed to four levels of 8 / 16 / 32 /
# 32 channels and 4 latent channels; attention_head_dim 8, so the attention levels have 4 heads.
SANA = dict(
    in_channels=3,
    latent_channels=4,
    attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[8, 16, 32, 32],
    decoder_block_out_channels=[8, 16, 32, 32],
    encoder_layers_per_block=[1, 1, 2, 1],
    decoder_layers_per_block=[1, 2, 1, 1],
    encoder_qkv_multiscales=[[], [], [5], [5]],
    decoder_qkv_multiscales=[[], [], [5], [5]],
    downsample_block_type="Conv",
    upsample_block_type="interpolate",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)

# The other options. Encoder widths differ from the decoder's so that the two halves cannot be swapped.
OPTIONS = dict(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[8, 16, 32, 32],
    decoder_block_out_channels=[8, 16, 32, 64],
    encoder_layers_per_block=[0, 1, 1, 1],
    decoder_layers_per_block=[0, 1, 1, 2],
    encoder_qkv_multiscales=[[], [], [], [3, 5]],
    decoder_qkv_multiscales=[[], [], [], [3, 5]],
    downsample_block_type="pixel_unshuffle",
    upsample_block_type="pixel_shuffle",
    decoder_norm_types=["batch_norm", "rms_norm", "batch_norm", "batch_norm"],
    decoder_act_fns=["relu", "relu", "gelu", "silu"],
    encoder_out_shortcut=False,
    decoder_in_shortcut=False,
    decoder_conv_act_fn="silu",
    scaling_factor=0.3189,
)


def draw(config, seed):
    torch.manual_seed(seed)
    model = AutoencoderDC(**config).eval()
    g = torch.Generator("cpu").manual_seed(seed + 20261128)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                module.bias.copy_(0.2 * torch.randn(n, generator=g))
                module.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                module.running_var.copy_(0.5 + torch.rand(n, generator=g))
                module.num_batches_tracked.fill_(321)
    for key, value in model.state_dict().items():
        assert value.dtype == torch.int64 or (value != 0).all(), f"{key} has zeros"
    return model, g


def save(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              f"{folder}/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})


def rel(a, e):
    a, e = a.double(), e.double()
    return ((a - e).norm() / e.norm()).item()


out = {}
for name, config, seed in (("sana", SANA, 0), ("options", OPTIONS, 1)):
    folder = f"{here}/{name}"
    model, g = draw(config, seed)
    save(model, folder)
    model = AutoencoderDC.from_pretrained(folder).eval()
    assert model.config.downsample_block_type == config["downsample_block_type"]
    print(name, "parameters:", sum(p.numel() for p in model.parameters()), "keys:", len(model.state_dict()))
    c = config["latent_channels"]
    # x16: 16 x 24 images (two items): the last level is 2 x 3 = 6 <= attention_head_dim positions, so its attention
    # takes the quadratic path, the one before (4 x 6) the linear one. x32: 32 x 48, linear at every level.
    # z2: 2 x 3 latents (quadratic at the last level), z4: 4 x 6 (linear everywhere).
    inputs = {
        "x16": torch.rand(2, 3, 16, 24, generator=g) * 2 - 1,
        "x32": torch.rand(1, 3, 32, 48, generator=g) * 2 - 1,
        "z2": torch.randn(2, c, 2, 3, generator=g),
        "z4": torch.randn(1, c, 4, 6, generator=g),
    }
    half = AutoencoderDC.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    with torch.no_grad():
        for key, value in inputs.items():
            out[f"{name}.{key}"] = value
            if key.startswith("x"):
                result = model.encode(value).latent
                bf16 = half.encode(value.to(torch.bfloat16)).latent.float()
                what = "latent"
            else:
                result = model.decode(value).sample
                bf16 = half.decode(value.to(torch.bfloat16)).sample.float()
                what = "sample"
            out[f"{name}.{key}.{what}"] = result
            out[f"{name}.{key}.bf16.{what}"] = bf16
            print(f"{name}.{key}.{what}: {list(result.shape)} range {result.min().item():.4f}..{result.max().item():.4f};"
                  f" diffusers bf16 relative L2 {rel(bf16, result):.3g}")
        # forward = decode(encode(x)), as one more check of the two halves together.
        out[f"{name}.x16.forward"] = model(inputs["x16"]).sample

# The attention alone, without its residual (which would swamp its rounding): the sana model's
# encoder.down_blocks.2.0.attn weights in a SanaMultiscaleLinearAttention(residual_connection=False), in float32 and in
# bfloat16, on a 16 x 24 map (linear attention, float32 inside even in bfloat16) and a 2 x 3 map (quadratic).
from diffusers.models.attention_processor import SanaMultiscaleLinearAttention

model = AutoencoderDC.from_pretrained(f"{here}/sana").eval()
weights = {k[len("encoder.down_blocks.2.0.attn."):]: v for k, v in model.state_dict().items()
           if k.startswith("encoder.down_blocks.2.0.attn.")}
attn = SanaMultiscaleLinearAttention(32, 32, attention_head_dim=8, norm_type="rms_norm", kernel_sizes=(5,),
                                     residual_connection=False).eval()
attn.load_state_dict(weights, strict=True)
attn_half = SanaMultiscaleLinearAttention(32, 32, attention_head_dim=8, norm_type="rms_norm", kernel_sizes=(5,),
                                          residual_connection=False).eval()
attn_half.load_state_dict(weights, strict=True)
attn_half = attn_half.to(torch.bfloat16)
g = torch.Generator("cpu").manual_seed(77)
with torch.no_grad():
    for key, shape in (("linear", (1, 32, 16, 24)), ("quadratic", (1, 32, 2, 3))):
        x = torch.randn(*shape, generator=g)
        out[f"attn.{key}.x"] = x
        out[f"attn.{key}.out"] = attn(x)
        out[f"attn.{key}.bf16.out"] = attn_half(x.to(torch.bfloat16)).float()
        print(f"attn.{key}: diffusers bf16 relative L2 {rel(out[f'attn.{key}.bf16.out'], out[f'attn.{key}.out']):.3g}")

save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors", metadata={"format": "pt"})

# The full-size dc-ae-f32c32-sana-1.0 (the conversion script's config): state-dict key and element counts, and a few
# shapes, built with every parameter on the meta device (torch 1.13 has no default-device context:
# nn.Module.register_parameter moves each parameter there as it is registered, so nothing full-size is allocated).
FULL = dict(
    latent_channels=32,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3],
    decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    downsample_block_type="conv",
    upsample_block_type="interpolate",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)
orig_register = torch.nn.Module.register_parameter


def register_on_meta(self, name, param):
    if param is not None:
        param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    orig_register(self, name, param)


torch.nn.Module.register_parameter = register_on_meta
try:
    full = AutoencoderDC(**FULL)
finally:
    torch.nn.Module.register_parameter = orig_register
state = full.state_dict()
counts = {"config": FULL, "keys": len(state), "elements": sum(v.numel() for v in state.values()),
          "shapes": {k: list(state[k].shape) for k in (
              "encoder.conv_in.weight", "encoder.down_blocks.0.0.conv1.weight", "encoder.down_blocks.0.0.norm.bias",
              "encoder.down_blocks.0.2.conv.weight", "encoder.down_blocks.3.0.attn.to_q.weight",
              "encoder.down_blocks.3.0.attn.to_qkv_multiscale.0.proj_in.weight",
              "encoder.down_blocks.3.0.attn.to_qkv_multiscale.0.proj_out.weight",
              "encoder.down_blocks.3.0.attn.to_out.weight", "encoder.down_blocks.3.0.attn.norm_out.weight",
              "encoder.down_blocks.3.0.conv_out.conv_inverted.weight", "encoder.down_blocks.3.0.conv_out.conv_depth.weight",
              "encoder.down_blocks.3.0.conv_out.conv_point.weight", "encoder.down_blocks.3.0.conv_out.norm.bias",
              "encoder.conv_out.weight", "decoder.conv_in.weight", "decoder.up_blocks.5.0.attn.to_out.weight",
              "decoder.up_blocks.4.0.conv.weight", "decoder.up_blocks.0.3.conv2.weight", "decoder.norm_out.bias",
              "decoder.conv_out.weight")}}
print("full size:", counts["keys"], "keys,", counts["elements"], "elements")
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
