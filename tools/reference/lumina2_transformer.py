"""diffusers' own Lumina2Transformer2DModel forwards on a tiny model: writes local-diffusers/lumina2-transformer/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/lumina2_transformer.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/lumina2-transformer/:
- tiny/: a tiny Lumina-Image-2.0-shaped transformer (hidden 48, 4 heads of 12 with 2 key / value heads, 2 refiner +
  2 main layers, RoPE axes 4 + 4 + 4, ffn_dim_multiplier 1.3 with multiple_of 16, cap_feat_dim 24);
- expected.safetensors: inputs and outputs of its forwards (captions of different real lengths, so the joint sequence
  is padded and masked; captions of equal real lengths, so it is not), plus diffusers' own bfloat16 and float64 runs of
  the first;
- counts.json: state-dict tensor and element counts of the full-size Alpha-VLLM/Lumina-Image-2.0 transformer, built
  on the meta device.
Every parameter is redrawn from one seeded generator (nothing left at zero or one), see draw().
"""
import json
import math
import sys

import torch
from torch import nn
from safetensors.torch import save_file

from diffusers import Lumina2Transformer2DModel
from diffusers.models.normalization import RMSNorm

root = sys.argv[1]
here = f"{root}/local-diffusers/lumina2-transformer"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


def draw(model, seed):
    """Every parameter redrawn: RMSNorm weights 1 + 0.2·N(0, 1), other weights N(0, 1) / sqrt(fan-in), biases
    0.1·N(0, 1), so no term of the forward is zero or an identity."""
    norms = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, RMSNorm)}
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if key in norms:
                p.copy_(1 + 0.2 * r)
            elif p.dim() >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * r)


# Lumina-Image 2.0's shape, scaled down: GQA with 4 query heads on 2 key / value heads (head 12 = RoPE axes 4 + 4 + 4),
# the feed-forward sized by ffn_dim_multiplier and multiple_of (int(1.3 x 4 x 48) = 249, rounded up to 256),
# axes_lens smaller than the defaults (the tables are cut, not the positions used here).
tiny_config = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=None, hidden_size=48, num_layers=2,
                   num_refiner_layers=2, num_attention_heads=4, num_kv_heads=2, multiple_of=16, ffn_dim_multiplier=1.3,
                   norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=[4, 4, 4], axes_lens=[40, 24, 24], cap_feat_dim=24)
torch.manual_seed(0)
model = Lumina2Transformer2DModel(**tiny_config).eval()
draw(model, 20261221)
save_model(model, f"{here}/tiny")
tiny = Lumina2Transformer2DModel.from_pretrained(f"{here}/tiny").eval()
print("feed-forward inner width:", tiny.layers[0].feed_forward.linear_1.out_features)

out = {}
g = torch.Generator("cpu").manual_seed(20261222)


def run(model, x, t, text, mask, dtype=None):
    with torch.no_grad():
        if dtype is None:
            return model(hidden_states=x, timestep=t, encoder_hidden_states=text, encoder_attention_mask=mask,
                         return_dict=False)[0]
        # the pipeline's call: latents and caption in the transformer's dtype, the mask and timestep as they are
        return model(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=text.to(dtype),
                     encoder_attention_mask=mask, return_dict=False)[0]


# masked: batch 2, a non-square 12 x 20 latent (6 x 10 patches), 7 caption tokens of which the first sample keeps all 7
# and the second 4 (the pipeline's mask: [B, L] of 1 / 0, int64), so the joint sequences are 67 and 64 long: padded and
# masked. Timesteps as Lumina2Pipeline passes them (1 - t / 1000: 0 at pure noise).
x = torch.randn(2, 4, 12, 20, generator=g)
text = torch.randn(2, 7, 24, generator=g)
mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
t = torch.tensor([0.25, 0.875])
out.update({"masked.x": x, "masked.t": t, "masked.text": text, "masked.mask": mask.float()})
out["masked.out"] = run(tiny, x, t, text, mask)
# diffusers' own bfloat16 run of the same call (model cast with .to(torch.bfloat16)), stored in float32.
out["masked.bf16.out"] = run(Lumina2Transformer2DModel.from_pretrained(f"{here}/tiny").eval().to(torch.bfloat16),
                             x, t, text, mask, dtype=torch.bfloat16).float()

# diffusers' own float64 run of the same call (model cast with .to(torch.float64), latents and caption float64): the
# float32 runs' common reference, to measure float32 rounding noise against. Stored as float64.
f64 = {"masked.f64.out": run(Lumina2Transformer2DModel.from_pretrained(f"{here}/tiny").eval().to(torch.float64),
                             x, t, text, mask, dtype=torch.float64)}

# equal: batch 2, a 16 x 16 latent, 6 caption tokens of which both samples keep 5: the caption refiner masks the padded
# token, the joint sequences are both 69 long, so the main layers run without a mask.
x = torch.randn(2, 4, 16, 16, generator=g)
text = torch.randn(2, 6, 24, generator=g)
mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
t = torch.tensor([0.0, 0.6])
out.update({"equal.x": x, "equal.t": t, "equal.text": text, "equal.mask": mask.float()})
out["equal.out"] = run(tiny, x, t, text, mask)

save_file({**{k: v.contiguous().float() for k, v in out.items()}, **{k: v.contiguous() for k, v in f64.items()}},
          f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
ref = out["masked.out"].double()
print("diffusers bf16 vs float32 relative L2:", ((out["masked.bf16.out"].double() - ref).norm() / ref.norm()).item())
print("diffusers float32 vs float64 max |diff|:", (ref - f64["masked.f64.out"]).abs().max().item())

# Full size: Alpha-VLLM/Lumina-Image-2.0's transformer/config.json.
full_configs = {
    "transformer.lumina-image-2.0": dict(sample_size=128, patch_size=2, in_channels=16, out_channels=None, hidden_size=2304,
                                         num_layers=26, num_refiner_layers=2, num_attention_heads=24, num_kv_heads=8,
                                         multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0,
                                         axes_dim_rope=[32, 32, 32], axes_lens=[300, 512, 512], cap_feat_dim=2304),
}
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


counts = {}
nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
for key, config in full_configs.items():
    state = Lumina2Transformer2DModel(**config).state_dict()
    counts[key] = {"config": config, "tensors": len(state), "elements": sum(v.numel() for v in state.values())}
    print(f"{key}: {len(state)} tensors, {counts[key]['elements']:,} elements")
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
