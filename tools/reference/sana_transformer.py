"""diffusers' own SanaTransformer2DModel forwards on three tiny models: writes local-diffusers/sana-transformer/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/sana_transformer.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/sana-transformer/:
- sana/: a tiny Sana-1600M-shaped transformer (no position embedding: interpolation_scale None, patch 1, no qk norm);
- pe/: a tiny one with the sin-cos position embedding (interpolation_scale 2.0, as Sana 4K), patch_size 2, affine norm2,
  attention_bias True, out_channels None;
- sprint/: a tiny Sana-Sprint-shaped one (guidance_embeds, qk_norm "rms_norm_across_heads", timestep_scale,
  guidance_embeds_scale);
- expected.safetensors: inputs and outputs of forwards of the three, plus diffusers' own bfloat16 run of the first;
- counts.json: state-dict tensor and element counts of the full-size Sana 1600M 1024px and 600M 512px transformers
  (the configs of diffusers' scripts/convert_sana_to_diffusers.py), built on the meta device.
Every parameter is redrawn from one seeded generator (nothing left at zero or one), see draw().
"""
import json
import math
import sys

import torch
from torch import nn
from safetensors.torch import save_file

from diffusers import SanaTransformer2DModel

root = sys.argv[1]
here = f"{root}/local-diffusers/sana-transformer"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


def draw(model, seed):
    """Every parameter redrawn: norm weights 1 + 0.2·N(0, 1), other weights N(0, 1) / sqrt(fan-in), biases and
    scale_shift_tables 0.1·N(0, 1) / 0.3·N(0, 1), so no term of the forward is zero or an identity."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            parts = key.split(".")
            if len(parts) > 1 and "norm" in parts[-2]:  # norm_q / norm_k / caption_norm / norm2 weights and biases
                p.copy_((1 + 0.2 * r) if key.endswith("weight") else 0.1 * r)
            elif key.endswith("scale_shift_table"):
                p.copy_(0.3 * r)
            elif p.dim() >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * r)


def build(name, config, seed):
    torch.manual_seed(0)
    model = SanaTransformer2DModel(**config).eval()
    draw(model, seed)
    save_model(model, f"{here}/{name}")
    return SanaTransformer2DModel.from_pretrained(f"{here}/{name}").eval()


# Sana 1600M's shape, scaled down: 2 heads x 16 self-attention, 3 cross heads x 16 (so the cross width 48 differs from
# the inner width 32), caption 24 wide, mlp_ratio 2.5 (GLUMBConv hidden int(2.5 x 32) = 80), no position embedding.
sana_config = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                   num_cross_attention_heads=3, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
                   mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=1,
                   norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None)
# Sin-cos positions (interpolation_scale 2.0, Sana 4K's) on a 2x2 patch grid: not a released combination, but every
# option is the model's own; norm2 affine, biased q / k / v, out_channels None (= in_channels), mlp_ratio 2 (hidden 64).
pe_config = dict(in_channels=8, out_channels=None, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                 num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
                 mlp_ratio=2.0, dropout=0.0, attention_bias=True, sample_size=8, patch_size=2,
                 norm_elementwise_affine=True, norm_eps=1e-6, interpolation_scale=2.0)
# Sana Sprint's options: the guidance embedding, RMS q / k norms across heads, Sprint's config scales (unused by the
# model itself; its pipeline reads them).
sprint_config = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                     num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
                     mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=1,
                     norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None, guidance_embeds=True,
                     guidance_embeds_scale=0.1, qk_norm="rms_norm_across_heads", timestep_scale=1.0)
sana = build("sana", sana_config, 20261211)
pe = build("pe", pe_config, 20261212)
sprint = build("sprint", sprint_config, 20261213)

out = {}
g = torch.Generator("cpu").manual_seed(20261214)


def run(name, model, x, text, t, mask=None, guidance=None, dtype=None):
    with torch.no_grad():
        if dtype is None:
            y = model(hidden_states=x, encoder_hidden_states=text, timestep=t, guidance=guidance,
                      encoder_attention_mask=mask, return_dict=False)[0]
        else:  # the pipeline's call: latents and text in the transformer's dtype, the mask and timestep as they are
            y = model(hidden_states=x.to(dtype), encoder_hidden_states=text.to(dtype), timestep=t,
                      guidance=None if guidance is None else guidance.to(dtype), encoder_attention_mask=mask,
                      return_dict=False)[0]
    return y


# sana: batch 2, a non-square 8 x 12 latent, 7 caption tokens of which the first sample keeps 5 and the second 3
# (the mask as the pipeline passes it: [B, N] of 1 / 0, int64), timesteps as SanaPipeline passes them (0..1000).
x = torch.randn(2, 8, 8, 12, generator=g)
text = torch.randn(2, 7, 24, generator=g)
mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
t = torch.tensor([999.0, 321.5])
out.update({"sana.x": x, "sana.text": text, "sana.mask": mask.float(), "sana.t": t})
out["sana.out"] = run("sana", sana, x, text, t, mask)
out["sana.nomask.out"] = run("sana", sana, x, text, t)
# diffusers' own bfloat16 run of the same call (model cast with .to(torch.bfloat16)), stored in float32.
out["sana.bf16.out"] = run("sana", SanaTransformer2DModel.from_pretrained(f"{here}/sana").eval().to(torch.bfloat16),
                           x, text, t, mask, dtype=torch.bfloat16).float()

# pe: batch 2, a 12 x 8 latent (a 6 x 4 patch grid, not the 4 x 4 of sample_size 8), 5 caption tokens, no mask.
x = torch.randn(2, 8, 12, 8, generator=g)
text = torch.randn(2, 5, 24, generator=g)
t = torch.tensor([500.0, 20.0])
out.update({"pe.x": x, "pe.text": text, "pe.t": t})
out["pe.out"] = run("pe", pe, x, text, t)

# sprint: batch 2, an 8 x 8 latent, 6 caption tokens (the second sample keeps 4), timesteps as SanaSprintPipeline passes
# them (scm_timestep in [0, 1]), guidance = guidance_scale x guidance_embeds_scale (4.5 and 3.0 x 0.1).
x = torch.randn(2, 8, 8, 8, generator=g)
text = torch.randn(2, 6, 24, generator=g)
mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
t = torch.tensor([0.9, 0.35])
guidance = torch.tensor([4.5, 3.0]) * 0.1
out.update({"sprint.x": x, "sprint.text": text, "sprint.mask": mask.float(), "sprint.t": t, "sprint.guidance": guidance})
out["sprint.out"] = run("sprint", sprint, x, text, t, mask, guidance)

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
ref = out["sana.out"].double()
print("diffusers bf16 vs float32 relative L2:", ((out["sana.bf16.out"].double() - ref).norm() / ref.norm()).item())

# Full-size configs: diffusers' scripts/convert_sana_to_diffusers.py (1600M at 1024 px: sample_size 1024 // 32;
# 600M at 512 px: 512 // 32).
common = dict(in_channels=32, out_channels=32, attention_head_dim=32, caption_channels=2304, mlp_ratio=2.5,
              attention_bias=False, patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None)
full_configs = {
    "transformer.sana-1600m-1024px": dict(common, num_attention_heads=70, num_layers=20, num_cross_attention_heads=20,
                                          cross_attention_head_dim=112, cross_attention_dim=2240, sample_size=32),
    "transformer.sana-600m-512px": dict(common, num_attention_heads=36, num_layers=28, num_cross_attention_heads=16,
                                        cross_attention_head_dim=72, cross_attention_dim=1152, sample_size=16),
    # Sana Sprint 1600M: the 1600M shape with its q / k norms and guidance embedding.
    "transformer.sana-sprint-1600m-1024px": dict(common, num_attention_heads=70, num_layers=20, num_cross_attention_heads=20,
                                                 cross_attention_head_dim=112, cross_attention_dim=2240, sample_size=32,
                                                 qk_norm="rms_norm_across_heads", guidance_embeds=True),
}
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters
_conv_reset = nn.Conv2d.reset_parameters


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


counts = {}
nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
nn.Conv2d.reset_parameters = lambda self: None
for key, config in full_configs.items():
    state = SanaTransformer2DModel(**config).state_dict()
    counts[key] = {"config": config, "tensors": len(state), "elements": sum(v.numel() for v in state.values())}
    print(f"{key}: {len(state)} tensors, {counts[key]['elements']:,} elements")
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
nn.Conv2d.reset_parameters = _conv_reset
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
