"""diffusers' own Flux2Transformer2DModel (FLUX.2) forwards on two tiny models: writes local-diffusers/flux2-transformer/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/flux2_transformer.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/flux2-transformer/:
- klein/: a tiny FLUX.2 [klein]-shaped transformer (guidance_embeds False), diffusers' random initialisation after
  torch.manual_seed(0), then seeded values for what that initialisation leaves at 1 (the q / k RMSNorm weights), so a
  missing norm shows;
- dev/: a tiny FLUX.2 [dev]-shaped one (guidance_embeds True; mlp_ratio 2.7, so int(dim * mlp_ratio) truncates, and
  uneven rotary axes), made the same way;
- expected.safetensors: forwards called as Flux2KleinPipeline / Flux2Pipeline call the model (position ids from the
  pipeline's own _prepare_text_ids / _prepare_latent_ids / _prepare_image_ids, with their batch dimension), inputs and
  outputs;
- counts.json: state-dict tensor and element counts of the full-size FLUX.2 [klein] 4B / 9B and FLUX.2 [dev]
  transformers (the configs of diffusers' scripts/convert_flux2_to_diffusers.py), built on the meta device.
"""
import json
import sys

import torch
from torch import nn
from safetensors.torch import save_file

from diffusers import Flux2Transformer2DModel
from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-transformer"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


def build(name, config, seed):
    torch.manual_seed(0)
    model = Flux2Transformer2DModel(**config).eval()
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if ".norm_" in key:  # norm_q / norm_k / norm_added_q / norm_added_k: torch.nn.RMSNorm, initialised to 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
    save_model(model, f"{here}/{name}")
    return Flux2Transformer2DModel.from_pretrained(f"{here}/{name}").eval()


klein_config = dict(patch_size=1, in_channels=8, out_channels=None, num_layers=2, num_single_layers=2, attention_head_dim=16,
                    num_attention_heads=2, joint_attention_dim=24, timestep_guidance_channels=256, mlp_ratio=3.0,
                    axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=False)
dev_config = dict(patch_size=1, in_channels=8, out_channels=6, num_layers=2, num_single_layers=2, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=24, timestep_guidance_channels=256, mlp_ratio=2.7,
                  axes_dims_rope=(2, 6, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=True)
klein = build("klein", klein_config, 20261201)
dev = build("dev", dev_config, 20261202)

P = Flux2KleinPipeline  # its static id helpers (Flux2Pipeline's, copied)
out = {}
g = torch.Generator("cpu").manual_seed(20261203)


def run(name, model, latents, text, t, refs=(), guidance=None):
    """latents [B, C, H, W] (already patchified), text [B, L, D]; refs: reference latents [1, C, h, w] appended as
    Flux2KleinPipeline appends them (tokens after the image's, ids with t = 10, 20, ...)."""
    b = latents.shape[0]
    x = P._pack_latents(latents)
    img_ids = P._prepare_latent_ids(latents)
    if refs:
        ref_tokens = torch.cat([P._pack_latents(r) for r in refs], dim=1).repeat(b, 1, 1)
        ref_ids = P._prepare_image_ids(list(refs)).repeat(b, 1, 1)
        x = torch.cat([x, ref_tokens], dim=1)
        img_ids = torch.cat([img_ids, ref_ids], dim=1)
    txt_ids = P._prepare_text_ids(text)
    with torch.no_grad():
        y = model(hidden_states=x, timestep=t, guidance=guidance, encoder_hidden_states=text, txt_ids=txt_ids,
                  img_ids=img_ids, return_dict=False)[0]
    out[f"{name}.x"], out[f"{name}.text"], out[f"{name}.t"] = x, text, t
    out[f"{name}.img_ids"], out[f"{name}.txt_ids"] = img_ids.float(), txt_ids.float()
    if guidance is not None:
        out[f"{name}.guidance"] = guidance
    out[f"{name}.out"] = y


# klein: a batch of two on a 3 x 5 latent grid, 7 text tokens, two timesteps (the pipeline passes t / 1000).
run("klein.t2i", klein, torch.randn(2, 8, 3, 5, generator=g), torch.randn(2, 7, 24, generator=g), torch.tensor([0.73, 0.2]))
# klein with two reference images (2 x 4 and 3 x 3 latent grids, t coordinates 10 and 20) appended after the 3 x 5 image.
run("klein.ref", klein, torch.randn(2, 8, 3, 5, generator=g), torch.randn(2, 6, 24, generator=g), torch.tensor([0.73, 0.73]),
    refs=(torch.randn(1, 8, 2, 4, generator=g), torch.randn(1, 8, 3, 3, generator=g)))
# dev: a batch of two on a 4 x 3 grid, 5 text tokens, the embedded guidance scale (Flux2Pipeline: guidance_scale per sample).
run("dev.t2i", dev, torch.randn(2, 8, 4, 3, generator=g), torch.randn(2, 5, 24, generator=g), torch.tensor([0.5, 0.9]),
    guidance=torch.tensor([4.0, 2.5]))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")

# Full-size configs: diffusers' scripts/convert_flux2_to_diffusers.py (FLUX.2 [dev] is also the class defaults).
common = dict(patch_size=1, in_channels=128, attention_head_dim=128, timestep_guidance_channels=256, mlp_ratio=3.0,
              axes_dims_rope=[32, 32, 32, 32], rope_theta=2000, eps=1e-6)
full_configs = {
    "transformer.flux2-klein-4b": dict(common, num_layers=5, num_single_layers=20, num_attention_heads=24,
                                       joint_attention_dim=7680, guidance_embeds=False),
    "transformer.flux2-klein-9b": dict(common, num_layers=8, num_single_layers=24, num_attention_heads=32,
                                       joint_attention_dim=12288, guidance_embeds=False),
    "transformer.flux2-dev": dict(common, num_layers=8, num_single_layers=48, num_attention_heads=48,
                                  joint_attention_dim=15360, guidance_embeds=True),
}
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


counts = {}
nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
for key, config in full_configs.items():
    state = Flux2Transformer2DModel(**config).state_dict()
    counts[key] = {"config": config, "tensors": len(state), "elements": sum(v.numel() for v in state.values())}
    print(f"{key}: {len(state)} tensors, {counts[key]['elements']:,} elements")
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
