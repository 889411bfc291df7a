"""diffusers' own AutoencoderKLFlux2 (v0.39.0) on a tiny model, and Flux2KleinPipeline's VAE helpers: writes local-diffusers/flux2-vae/.

Usage (see README.md for the environment; diffusers v0.39.0 under /tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/flux2_vae.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/flux2-vae/:
- vae/: a tiny AutoencoderKLFlux2 (three levels, encoder widths 8 / 16 / 16, decoder widths 4 / 8 / 12, so a decoder
  built from the encoder's widths cannot load; 4 latent channels, so bn has 16 = 2 x 2 x 4 channels) with diffusers'
  initialisation after torch.manual_seed(0), then seeded non-trivial bn.running_mean / running_var and
  num_batches_tracked (a fresh BatchNorm has 0 / 1 / 0, where a swapped or missing statistic would not show);
- expected.safetensors (float32 unless said): the inputs and diffusers' outputs of encode (latent_dist.parameters,
  mean, logvar) and decode for a 16 x 24 image (two items) and a 4 x 6 latent; the bn statistics as
  Flux2KleinPipeline computes them (bn.mean = running_mean.view(1, -1, 1, 1), bn.std = sqrt(running_var.view(...) +
  batch_norm_eps)), also from a bfloat16 load of the folder (bn.bf16.mean / bn.bf16.std, stored as float32);
  pipe.encoded: Flux2KleinPipeline._encode_vae_image of the image (argmax latents, _patchify_latents, bn normalise);
  pipe.latents (drawn, [B, 16, 2, 3]) and pipe.unpatchified / pipe.decoded: the end of Flux2KleinPipeline.__call__
  (bn de-normalise, _unpatchify_latents, vae.decode) on them;
- counts.json: state-dict key and element counts of the full-size model (diffusers' constructor defaults, which are
  FLUX.2's VAE config) and a few of its shapes.
"""
import json
import sys
import types

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKLFlux2
from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/flux2-vae"
folder = f"{here}/vae"

config = dict(block_out_channels=(8, 16, 16), decoder_block_out_channels=(4, 8, 12), layers_per_block=2,
              latent_channels=4, norm_num_groups=4, sample_size=32,
              down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
torch.manual_seed(0)
model = AutoencoderKLFlux2(**config).eval()
g = torch.Generator("cpu").manual_seed(20261128)
with torch.no_grad():
    channels = model.bn.running_mean.shape[0]
    model.bn.running_mean.copy_(0.5 * torch.randn(channels, generator=g))
    model.bn.running_var.copy_(0.2 + 2 * torch.rand(channels, generator=g))
    model.bn.num_batches_tracked.fill_(1234)
# save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
model.save_config(folder)
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{folder}/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
model = AutoencoderKLFlux2.from_pretrained(folder).eval()
assert model.bn.num_batches_tracked.item() == 1234

out = {}
h, w = 16, 24  # non-square, so a swapped height / width shows
x = torch.rand(2, 3, h, w, generator=g) * 2 - 1
z = torch.randn(1, 4, h // 4, w // 4, generator=g)
pipe_latents = torch.randn(2, 16, h // 8, w // 8, generator=g)
with torch.no_grad():
    dist = model.encode(x).latent_dist
    out["x"] = x
    out["parameters"] = dist.parameters
    out["mean"] = dist.mean
    out["logvar"] = dist.logvar
    out["z"] = z
    out["decoded"] = model.decode(z).sample

    # The statistics exactly as Flux2KleinPipeline writes them (float32 latents here, so .to is the identity).
    out["bn.mean"] = model.bn.running_mean.view(1, -1, 1, 1)
    out["bn.std"] = torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + model.config.batch_norm_eps)

    # _encode_vae_image on a stand-in self: the only attributes it reads are vae and _patchify_latents.
    stand_in = types.SimpleNamespace(vae=model, _patchify_latents=Flux2KleinPipeline._patchify_latents)
    out["pipe.encoded"] = Flux2KleinPipeline._encode_vae_image(stand_in, x, generator=None)

    # The end of Flux2KleinPipeline.__call__ (after _unpack_latents_with_ids), in its order.
    latents = pipe_latents
    latents_bn_mean = model.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    latents_bn_std = torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + model.config.batch_norm_eps).to(
        latents.device, latents.dtype)
    latents = latents * latents_bn_std + latents_bn_mean
    latents = Flux2KleinPipeline._unpatchify_latents(latents)
    out["pipe.latents"] = pipe_latents
    out["pipe.unpatchified"] = latents
    out["pipe.decoded"] = model.decode(latents, return_dict=False)[0]

    # A bfloat16 load converts the floating buffers too (num_batches_tracked stays int64): the statistics are then
    # computed in bfloat16 by the pipeline's lines.
    half = AutoencoderKLFlux2.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    assert half.bn.running_var.dtype == torch.bfloat16 and half.bn.num_batches_tracked.dtype == torch.int64
    out["bn.bf16.mean"] = half.bn.running_mean.view(1, -1, 1, 1).float()
    out["bn.bf16.std"] = torch.sqrt(half.bn.running_var.view(1, -1, 1, 1) + half.config.batch_norm_eps).float()

for k, v in out.items():
    print(f"{k}: {list(v.shape)} range {v.min().item():.4f}..{v.max().item():.4f}")
print("parameters:", sum(p.numel() for p in model.parameters()), "keys:", len(model.state_dict()))
save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors", metadata={"format": "pt"})

# The full-size model (the constructor defaults are FLUX.2's VAE): state-dict key and element counts, and a few shapes,
# built with every parameter on the meta device (torch 1.13 has no default-device context: nn.Module.register_parameter
# moves each parameter there as it is registered, so no full-size weights are allocated or initialised).
orig_register = torch.nn.Module.register_parameter


def register_on_meta(self, name, param):
    if param is not None:
        param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    orig_register(self, name, param)


torch.nn.Module.register_parameter = register_on_meta
try:
    full = AutoencoderKLFlux2()
finally:
    torch.nn.Module.register_parameter = orig_register
state = full.state_dict()
counts = {"keys": len(state), "elements": sum(v.numel() for v in state.values()),
          "shapes": {k: list(state[k].shape) for k in ("encoder.conv_in.weight", "encoder.conv_out.weight",
                                                      "encoder.mid_block.attentions.0.to_q.weight",
                                                      "decoder.conv_in.weight", "decoder.up_blocks.3.resnets.2.conv2.weight",
                                                      "quant_conv.weight", "post_quant_conv.weight", "decoder.conv_out.weight",
                                                      "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")}}
print("full size:", counts["keys"], "keys,", counts["elements"], "elements")
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
