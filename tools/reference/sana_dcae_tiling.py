"""diffusers' own AutoencoderDC (v0.39.0) tiling on the tiny "sana" model of local-diffusers/sana-dcae: writes
local-diffusers/sana-dcae-tiling/expected.safetensors.

Usage (environment: README.md; diffusers v0.39.0 under /tmp/refpy39; run sana_dcae.py first, it writes the model):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 /usr/bin/python3 tools/reference/sana_dcae_tiling.py tests/DiffusersSharp.Tests/Fixtures

The model compresses 8x (four levels). An 88 x 136 image (latents 11 x 17) is encoded and 11 x 17 latents decoded:
- untiled (enable_tiling never called);
- "square": enable_tiling(64, 64, 48, 48): image tiles start at 0 / 48 (rows) and 0 / 48 / 96 (columns), the last ones
  40 px; latent tiles of 8 with stride 6 start at 0 / 6 and 0 / 6 / 12, the last ones 5 latents; blends of 2 latents
  (encode) and 16 px (decode);
- "rect": enable_tiling(48, 80, 32, 56): height and width differ (tiles 48 x 80 px = 6 x 10 latents, strides 32 x 56 px
  = 4 x 7 latents, blends 2 x 3 latents / 16 x 24 px), three rows and three columns;
- "edge": enable_tiling(64, 64, 48, 48) on a 64 x 64 image and 8 x 8 latents, exactly one tile: diffusers does not tile
  (its switch is "larger than a tile"), so these equal the untiled outputs of the same inputs (also stored).
"""
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderDC

root = sys.argv[1]
model_folder = f"{root}/local-diffusers/sana-dcae/sana"
here = f"{root}/local-diffusers/sana-dcae-tiling"

model = AutoencoderDC.from_pretrained(model_folder).eval()
assert model.spatial_compression_ratio == 8
g = torch.Generator("cpu").manual_seed(20261128)
# Smooth-ish images so that the encoded tiles are not noise: a random low-resolution image upsampled, plus a little noise.
def image(h, w):
    low = torch.rand(1, 3, h // 8, w // 8, generator=g) * 2 - 1
    up = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (up + 0.1 * torch.randn(1, 3, h, w, generator=g)).clamp(-1, 1)


out = {
    "x": image(88, 136),
    "z": torch.randn(1, 4, 11, 17, generator=g),
    "edge.x": image(64, 64),
    "edge.z": torch.randn(1, 4, 8, 8, generator=g),
}


def run(prefix, x, z):
    latent = model.encode(x).latent
    sample = model.decode(z).sample
    out[f"{prefix}.latent"] = latent
    out[f"{prefix}.sample"] = sample
    print(f"{prefix}: latent {list(latent.shape)}, sample {list(sample.shape)}")


with torch.no_grad():
    run("untiled", out["x"], out["z"])
    run("edge.untiled", out["edge.x"], out["edge.z"])
    for name, args in (("square", (64, 64, 48, 48)), ("rect", (48, 80, 32, 56))):
        model.enable_tiling(*args)
        assert model.use_tiling
        run(name, out["x"], out["z"])
        d_lat = (out[f"{name}.latent"] - out["untiled.latent"]).abs().max().item()
        d_smp = (out[f"{name}.sample"] - out["untiled.sample"]).abs().max().item()
        print(f"{name}: max |tiled - untiled| latent {d_lat:.4g}, sample {d_smp:.4g}")
        model.disable_tiling()
    model.enable_tiling(64, 64, 48, 48)
    run("edge.tiled", out["edge.x"], out["edge.z"])
    assert torch.equal(out["edge.tiled.latent"], out["edge.untiled.latent"])
    assert torch.equal(out["edge.tiled.sample"], out["edge.untiled.sample"])

save_file({k: v.contiguous() for k, v in out.items()}, f"{here}/expected.safetensors", metadata={"format": "pt"})
