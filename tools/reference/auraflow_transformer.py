"""diffusers' own AuraFlowTransformer2DModel forwards on a tiny model: writes local-diffusers/auraflow-transformer/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/auraflow_transformer.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/auraflow-transformer/:
- transformer/: a tiny AuraFlow transformer (2 MMDiT + 2 single DiT blocks, 3 heads x 8, caption_projection_dim = the
  inner width 24, joint_attention_dim 32, patch 2, pos_embed_max_size 80: an 8 x 8 position grid, int(sqrt(80)) = 8,
  of which a centred crop is taken);
- expected.safetensors: inputs and outputs of three float32 forwards, plus diffusers' own bfloat16 run of the first;
- counts.json: state-dict tensor and element counts of the full-size transformer built on the meta device.
Every parameter is redrawn from one seeded generator (nothing left at zero or one), see draw().

torch 1.13's nn.LayerNorm has no `bias` argument (torch 2.1 added it), which diffusers' FP32LayerNorm passes:
tools/reference/pyenv/sitecustomize.py gives it the torch 2.x one. AuraFlow passes it only with elementwise_affine=False,
where neither version makes any parameter, so no computation changes.
"""
import json
import math
import sys

import torch
from torch import nn
from safetensors.torch import save_file

from diffusers import AuraFlowTransformer2DModel

root = sys.argv[1]
here = f"{root}/local-diffusers/auraflow-transformer"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


def draw(model, seed):
    """Every parameter redrawn: weights N(0, 1) / sqrt(fan-in), biases 0.1·N(0, 1), the position table and the register
    tokens 0.5·N(0, 1), so no term of the forward is zero or negligible (diffusers draws the table 0.1·N, the register
    tokens 0.02·N; the model has no affine norm weights: every LayerNorm of AuraFlow is FP32LayerNorm without affine)."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if key in ("pos_embed.pos_embed", "register_tokens"):
                p.copy_(0.5 * r)
            elif p.dim() >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * r)


config = dict(sample_size=16, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2,
              attention_head_dim=8, num_attention_heads=3, joint_attention_dim=32, caption_projection_dim=24,
              out_channels=4, pos_embed_max_size=80)
torch.manual_seed(0)
model = AuraFlowTransformer2DModel(**config).eval()
draw(model, 20261128)
save_model(model, f"{here}/transformer")
model = AuraFlowTransformer2DModel.from_pretrained(f"{here}/transformer").eval()

out = {}
g = torch.Generator("cpu").manual_seed(20261129)


def run(m, x, text, t, dtype=None):
    with torch.no_grad():
        if dtype is not None:  # the pipeline's call: latents, text and t / 1000 all in the latents' dtype
            x, text, t = x.to(dtype), text.to(dtype), t.to(dtype)
        return m(x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]


# Timesteps as AuraFlowPipeline passes them: the scheduler's t / 1000, in [0, 1].
cases = {
    # a: a non-square 8 x 12 latent (a 4 x 6 patch grid: rows 2..5, columns 1..6 of the 8 x 8 table), 7 text tokens.
    "a": ((2, 4, 8, 12), 7, [0.999, 0.3215]),
    # b: a 10 x 6 latent (a 5 x 3 grid, odd both ways: rows 2..6, columns 3..5), 5 text tokens.
    "b": ((2, 4, 10, 6), 5, [0.5, 0.0625]),
    # c: the configured 16 x 16 (the whole 8 x 8 grid; the table's last 16 rows unused), 3 text tokens.
    "c": ((2, 4, 16, 16), 3, [1.0, 0.75]),
}
for name, (shape, tokens, ts) in cases.items():
    x = torch.randn(*shape, generator=g)
    text = torch.randn(shape[0], tokens, 32, generator=g)
    t = torch.tensor(ts)
    out.update({f"{name}.x": x, f"{name}.text": text, f"{name}.t": t})
    out[f"{name}.out"] = run(model, x, text, t)

# diffusers' own bfloat16 run of case a (model loaded and cast with .to(torch.bfloat16)), stored in float32.
bf16 = AuraFlowTransformer2DModel.from_pretrained(f"{here}/transformer").eval().to(torch.bfloat16)
out["a.bf16.out"] = run(bf16, out["a.x"], out["a.text"], out["a.t"], dtype=torch.bfloat16).float()

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
ref = out["a.out"].double()
print("max |a.out|:", ref.abs().max().item())
print("diffusers bf16 vs float32 relative L2:", ((out["a.bf16.out"].double() - ref).norm() / ref.norm()).item())

# Full-size configs. fal/AuraFlow-v0.3's transformer: the shape of the v0.1 config.json published at fal/AuraFlow
# (transformer/config.json) with pos_embed_max_size 9216 (a 96 x 96 grid, 1536 px), as the task states it; v0.1's own
# (4096) is counted too. Their parameter counts differ by the position table only.
common = dict(sample_size=64, patch_size=2, in_channels=4, num_mmdit_layers=4, num_single_dit_layers=32,
              attention_head_dim=256, num_attention_heads=12, joint_attention_dim=2048, caption_projection_dim=3072,
              out_channels=4)
full_configs = {
    "transformer.auraflow-v0.3": dict(common, pos_embed_max_size=9216),
    "transformer.auraflow-v0.1": dict(common, pos_embed_max_size=4096),
}
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters
_randn = torch.randn


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


def _randn_on_meta(*args, **kwargs):  # pos_embed and register_tokens are drawn with torch.randn before registering
    kwargs["device"] = "meta"
    return _randn(*args, **kwargs)


counts = {}
nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
torch.randn = _randn_on_meta
for key, cfg in full_configs.items():
    state = AuraFlowTransformer2DModel(**cfg).state_dict()
    counts[key] = {"config": cfg, "tensors": len(state), "elements": sum(v.numel() for v in state.values())}
    print(f"{key}: {len(state)} tensors, {counts[key]['elements']:,} elements")
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
torch.randn = _randn
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
