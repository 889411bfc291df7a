# Our own script (DiffusersSharp): the parameter counts of full-size ControlNets as diffusers builds them, without
# memory: ControlNetModel.from_unet(UNet2DConditionModel(**config), load_weights_from_unet=False) on the UNet configs of
# tests/DiffusersSharp.Tests/Models/UNetConfigs (SD 1.5, SD 2.1, SDXL base), every parameter moved to `meta` as it is
# registered. Writes each ControlNet's config to tests/DiffusersSharp.Tests/Models/ControlNetConfigs/NAME.json and
# prints the counts that ControlNetModelTests asserts. Run from the repository root:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/controlnet_counts.py sd15 sd21 sdxl-base
import json, sys
from torch import nn

_register = nn.Module.register_parameter


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


nn.Module.register_parameter = _register_on_meta
from diffusers import UNet2DConditionModel, ControlNetModel  # noqa: E402

for name in sys.argv[1:]:
    cfg = json.load(open(f"tests/DiffusersSharp.Tests/Models/UNetConfigs/{name}.json"))
    unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    print(name, sum(p.numel() for p in unet.parameters()), "unet;", sum(p.numel() for p in cn.parameters()), "controlnet;",
          len(cn.state_dict()), "tensors")
    config = {"_class_name": "ControlNetModel", "_diffusers_version": "0.36.0"}
    config.update({k: v for k, v in cn.config.items() if not k.startswith("_")})
    with open(f"tests/DiffusersSharp.Tests/Models/ControlNetConfigs/{name}.json", "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
