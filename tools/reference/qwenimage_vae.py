"""diffusers' own AutoencoderKLQwenImage (v0.39.0) on two tiny models: writes local-diffusers/qwenimage-vae/.

Usage (see README.md for the environment; diffusers v0.39.0 under /tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/qwenimage_vae.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/qwenimage-vae/:
- small/: diffusers' test config with base_dim 8 (24 there) to keep the fixture small (z_dim 4, dim_mult [1, 2, 4], one res block, temperal_downsample
  [False, True]: one spatial-only and one spatio-temporal downsample);
- wan/: Qwen-Image's real structure in small (base_dim 4, z_dim 16, dim_mult [1, 2, 4, 4], two res blocks,
  temperal_downsample [False, True, True], the default latents_mean / latents_std);
  each with diffusers' random initialisation after torch.manual_seed, then seeded RMS-norm gammas (diffusers leaves
  them at 1, where a swapped or missing norm would not show). The decoded images stay inside decode's [-1, 1] clamp
  (the script prints the share at the bound), so the clamp hides no error;
- expected.safetensors (float32): per model (prefix "small." / "wan."), the inputs and diffusers' outputs of
  encode (latent_dist.parameters = mean | logvar before the clamp, and latent_dist.mean / logvar / std) and decode,
  for images (T = 1) and short videos (T = 9 frames: three encoder chunks; latent T = 3 frames) through the causal frame cache (a
  third chunk is the first to use frames cached from two chunks back); for "wan"
  also diffusers' own bfloat16 run of the same inputs (".bf16.mean", ".bf16.decoded", stored as float32);
- counts.json: state-dict key and element counts of the full-size model (diffusers' constructor defaults, which are
  Qwen-Image's VAE config) and a few of its shapes.
"""
import json
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKLQwenImage

root = sys.argv[1]
here = f"{root}/local-diffusers/qwenimage-vae"

configs = {
    "small": (0, dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, attn_scales=[],
                      temperal_downsample=[False, True], dropout=0.0)),
    "wan": (1, dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                    temperal_downsample=[False, True, True], dropout=0.0)),
}

out = {}
for name, (seed, config) in configs.items():
    torch.manual_seed(seed)
    model = AutoencoderKLQwenImage(**config).eval()
    g = torch.Generator("cpu").manual_seed(20261128 + seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(".gamma"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    folder = f"{here}/{name}"
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              f"{folder}/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    model = AutoencoderKLQwenImage.from_pretrained(folder).eval()

    factor = model.spatial_compression_ratio
    z_dim = config["z_dim"]
    h, w = 16, 24  # non-square, so a swapped height / width shows
    cases = {
        "image": torch.rand(1, 3, 1, h, w, generator=g) * 2 - 1,
        "video": torch.rand(1, 3, 9, h, w, generator=g) * 2 - 1,
    }
    latents = {
        "image": torch.randn(1, z_dim, 1, h // factor, w // factor, generator=g),
        "video": torch.randn(1, z_dim, 3, h // factor, w // factor, generator=g),
    }
    with torch.no_grad():
        for case, x in cases.items():
            dist = model.encode(x).latent_dist
            out[f"{name}.{case}.x"] = x
            out[f"{name}.{case}.parameters"] = dist.parameters
            out[f"{name}.{case}.mean"] = dist.mean
            out[f"{name}.{case}.logvar"] = dist.logvar
            out[f"{name}.{case}.std"] = dist.std
            z = latents[case]
            decoded = model.decode(z).sample
            out[f"{name}.{case}.z"] = z
            out[f"{name}.{case}.decoded"] = decoded
            clamped = (decoded.abs() >= 1).float().mean().item()
            print(f"{name}.{case}: x {list(x.shape)} -> parameters {list(dist.parameters.shape)}; "
                  f"z {list(z.shape)} -> decoded {list(decoded.shape)} (|v| >= 1: {clamped:.1%}, "
                  f"range {decoded.min().item():.3f}..{decoded.max().item():.3f}); "
                  f"mean range {dist.mean.min().item():.3f}..{dist.mean.max().item():.3f}")
    if name == "wan":
        # diffusers' own bfloat16 run of the same inputs (stored as float32): how far bfloat16 rounding alone moves the
        # outputs from the float32 ones, the yardstick for our bfloat16 path.
        half = AutoencoderKLQwenImage.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
        with torch.no_grad():
            for case, x in cases.items():
                out[f"{name}.{case}.bf16.mean"] = half.encode(x.to(torch.bfloat16)).latent_dist.mean.float()
                out[f"{name}.{case}.bf16.decoded"] = half.decode(latents[case].to(torch.bfloat16)).sample.float()
                for key in ("mean", "decoded"):
                    e, a = out[f"{name}.{case}.{key}"].double(), out[f"{name}.{case}.bf16.{key}"].double()
                    print(f"{name}.{case} diffusers bf16 {key}: relative L2 vs float32 {((a - e).norm() / e.norm()).item():.3g}")
    print(name, "parameters:", sum(p.numel() for p in model.parameters()), "keys:", len(model.state_dict()))

# attn_scales: diffusers' encoder calls every down block as layer(x, feat_cache, feat_idx), which
# QwenImageAttentionBlock.forward(x) does not accept, so a non-empty attn_scales cannot encode in v0.39.0.
torch.manual_seed(0)
broken = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[1.0],
                                temperal_downsample=[False]).eval()
try:
    with torch.no_grad():
        broken.encode(torch.zeros(1, 3, 1, 8, 8))
    print("attn_scales=[1.0]: encode ran")
except TypeError as e:
    print("attn_scales=[1.0]: encode fails in diffusers:", e)

save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors", metadata={"format": "pt"})

# The full-size model (the constructor defaults are Qwen-Image's VAE): state-dict key and element counts, and a few shapes.
full = AutoencoderKLQwenImage()
state = full.state_dict()
counts = {"keys": len(state), "elements": sum(v.numel() for v in state.values()),
          "shapes": {k: list(state[k].shape) for k in ("encoder.conv_in.weight", "encoder.down_blocks.2.resample.1.weight",
                                                      "encoder.down_blocks.5.time_conv.weight", "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
                                                      "decoder.mid_block.attentions.0.norm.gamma", "decoder.up_blocks.3.resnets.2.norm1.gamma",
                                                      "quant_conv.weight", "post_quant_conv.weight", "decoder.conv_out.weight")}}
print("full size:", counts["keys"], "keys,", counts["elements"], "elements")
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
