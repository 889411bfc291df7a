# Our own script (DiffusersSharp): the parameter counts of full-size SDXL ControlNet-Union models as diffusers builds them,
# without memory: ControlNetUnionModel.from_unet(UNet2DConditionModel(**config), load_weights_from_unet=False) on the SDXL
# base UNet config of tests/DiffusersSharp.Tests/Models/UNetConfigs, every parameter moved to `meta` as it is registered:
#   sdxl-union         from_unet as it is (num_control_type 6, diffusers' default: xinsir/controlnet-union-sdxl-1.0's six modes)
#   sdxl-union-promax  the same with num_control_type 8 (brad-twinkl/controlnet-union-sdxl-1.0-promax: tile and repaint too)
# Writes each model's config to tests/DiffusersSharp.Tests/Models/ControlNetConfigs/NAME.json and prints the counts that
# ControlNetUnionModelTests asserts. Run from the repository root:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet_union_counts.py
import json
from torch import nn

_register = nn.Module.register_parameter


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


nn.Module.register_parameter = _register_on_meta
from diffusers import UNet2DConditionModel, ControlNetUnionModel  # noqa: E402

cfg = json.load(open("tests/DiffusersSharp.Tests/Models/UNetConfigs/sdxl-base.json"))
unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
for name, types in [("sdxl-union", None), ("sdxl-union-promax", 8)]:
    # from_unet builds with `cls(...)`; for promax the same call with num_control_type added.
    build = ControlNetUnionModel if types is None else (lambda **kw: ControlNetUnionModel(**kw, num_control_type=types))
    cn = ControlNetUnionModel.from_unet.__func__(build, unet, load_weights_from_unet=False)
    print(name, sum(p.numel() for p in cn.parameters()), "parameters;", len(cn.state_dict()), "tensors; num_control_type",
          cn.config.num_control_type)
    config = {"_class_name": "ControlNetUnionModel", "_diffusers_version": "0.36.0"}
    config.update({k: v for k, v in cn.config.items() if not k.startswith("_")})
    with open(f"tests/DiffusersSharp.Tests/Models/ControlNetConfigs/{name}.json", "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
