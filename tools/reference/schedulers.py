"""diffusers' own schedulers: schedules and full sampling runs with a synthetic model, for the UNet-pipeline schedulers
that no shared fixture covers. Writes local-diffusers/schedulers/{expected.safetensors, meta.json}.

Usage (see README.md for the environment):
    python3 tools/reference/schedulers.py tests/DiffusersSharp.Tests/Fixtures

For every scheduler (a class with from_config overrides, as DiffusionSchedulers' short names), every base config
(tiny-sd15's and tiny-sdxl's scheduler configs, and variants with other spacings / v_prediction) and N steps:
`timesteps` and `sigmas` after set_timesteps(N), `init_noise_sigma`, then a sampling run: latents = randn(shape,
generator) * init_noise_sigma, and for each t: x_in = scale_model_input(latents, t); model_output = 0.3 * x_in +
0.1 * sin(t / 100) (float32); latents = step(model_output, t, latents, generator=generator).prev_sample, each saved.
Stochastic schedulers get the same generator in step, so the draws follow diffusers' order. For the learned
variance types (LEARNED_VARIANCE) the model output has a second half of channels, 0.5 * tanh(x_in), the predicted
variance; TCD's step runs with its default eta (gamma) 0.3.
"""
import inspect
import json
import math
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, correctly rounded float32 np.log; see that file)
import torch
from safetensors.torch import save_file

import diffusers

root = sys.argv[1]
SHAPE = (1, 4, 4, 4)
STEPS = (1, 4, 10, 25)


def read(path):
    with open(path) as f:
        return json.load(f)


sd15 = read(f"{root}/tiny-sd15/model/scheduler/scheduler_config.json")
sdxl = read(f"{root}/tiny-sdxl/model/scheduler/scheduler_config.json")
BASES = {
    "sd15": sd15,
    "sdxl": sdxl,
    "sd15_v_trailing": dict(sd15, prediction_type="v_prediction", timestep_spacing="trailing"),
    "sdxl_linspace": dict(sdxl, timestep_spacing="linspace"),
}
# Classes whose set_timesteps runs float32 torch exp / log (modern_float32.correctly_rounded_exp_log).
ROUNDED_EXP_LOG = {"KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler"}
# Classes whose set_timesteps runs float32 torch.sin / torch.atan2 (IPNDM's schedule): computed in float64 and rounded
# once (correctly_rounded_sin_atan2 below), as the project does: torch 1.13's and libtorch 2.10's SIMD float32 sin /
# atan2 disagree by an ulp in some lanes (e.g. IPNDM's 25-step timestep 15), and neither is always correctly rounded.
ROUNDED_SIN_ATAN2 = {"IPNDMScheduler"}
# Classes whose step runs np.log on float32 tensors (DEIS's logrho coefficients), in the same context.
ROUNDED_STEP_EXP_LOG = {"DEISMultistepScheduler"}


class correctly_rounded_sin_atan2:
    """torch.sin / torch.atan2 of float32 tensors computed in float64 and rounded once."""

    def __enter__(self):
        self._saved = torch.sin, torch.atan2
        sin, atan2 = self._saved
        torch.sin = lambda t: sin(t.double()).float() if t.dtype == torch.float32 else sin(t)
        torch.atan2 = lambda y, x: (atan2(y.double(), x.double()).float()
                                    if y.dtype == torch.float32 and x.dtype == torch.float32 else atan2(y, x))
        return self

    def __exit__(self, *exc):
        torch.sin, torch.atan2 = self._saved
        return False


SCHEDULERS = {
    "unipc": ("UniPCMultistepScheduler", {}),
    "unipc_bh1_o3": ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "heun": ("HeunDiscreteScheduler", {}),
    "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "kdpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmpp_singlestep": ("DPMSolverSinglestepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "deis_o3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "lcm": ("LCMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "ddpm_noclip": ("DDPMScheduler", {"clip_sample": False}),
    "ddpm_small_log": ("DDPMScheduler", {"variance_type": "fixed_small_log"}),
    "ddpm_large": ("DDPMScheduler", {"variance_type": "fixed_large"}),
    "ddpm_learned_range": ("DDPMScheduler", {"variance_type": "learned_range"}),
    "tcd": ("TCDScheduler", {}),
    "ipndm": ("IPNDMScheduler", {}),
}
# Variance types that read a predicted variance: the synthetic model output gets a second half of channels,
# 0.5 * tanh(x_in), which DDPMScheduler splits off as predicted_variance.
LEARNED_VARIANCE = {"ddpm_learned_range"}
if len(sys.argv) > 2:
    SCHEDULERS = {k: v for k, v in SCHEDULERS.items() if k in sys.argv[2:]}

out, meta = {}, {}
for name, (cls_name, overrides) in SCHEDULERS.items():
    cls = getattr(diffusers, cls_name)
    for base_name, base in BASES.items():
        for n in STEPS:
            key = f"{name}.{base_name}.n{n}"
            scheduler = cls.from_config(base, **overrides)
            try:
                if cls_name in ROUNDED_EXP_LOG:
                    with modern_float32.correctly_rounded_exp_log():
                        scheduler.set_timesteps(n)
                elif cls_name in ROUNDED_SIN_ATAN2:
                    with correctly_rounded_sin_atan2():
                        scheduler.set_timesteps(n)
                else:
                    scheduler.set_timesteps(n)
            except Exception as e:  # recorded, so the C# side can expect the same refusal
                meta[key] = {"error": f"{type(e).__name__}: {e}"}
                continue
            out[f"{key}.timesteps"] = scheduler.timesteps.clone()
            if getattr(scheduler, "sigmas", None) is not None:
                out[f"{key}.sigmas"] = scheduler.sigmas.clone()
            generator = torch.Generator("cpu").manual_seed(1000 + n)
            takes_generator = "generator" in inspect.signature(scheduler.step).parameters
            latents = torch.randn(SHAPE, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
            out[f"{key}.init"] = latents.clone()
            for i, t in enumerate(scheduler.timesteps):
                x_in = scheduler.scale_model_input(latents, t)
                model_output = 0.3 * x_in + 0.1 * torch.sin(t.float() / 100)
                if name in LEARNED_VARIANCE:
                    model_output = torch.cat([model_output, 0.5 * torch.tanh(x_in)], dim=1)
                kwargs = {"generator": generator} if takes_generator else {}
                if cls_name in ROUNDED_STEP_EXP_LOG:
                    with modern_float32.correctly_rounded_exp_log():
                        latents = scheduler.step(model_output, t, latents, **kwargs).prev_sample
                else:
                    latents = scheduler.step(model_output, t, latents, **kwargs).prev_sample
                out[f"{key}.step{i}"] = latents.clone()
            meta[key] = {"class": cls_name, "overrides": overrides, "base": base_name, "steps": n, "seed": 1000 + n,
                         "order": scheduler.order, "init_noise_sigma": float(scheduler.init_noise_sigma),
                         "timesteps_dtype": str(scheduler.timesteps.dtype), "model_evals": len(scheduler.timesteps)}
            if name in LEARNED_VARIANCE:
                meta[key]["learned_variance"] = True

folder = f"{root}/local-diffusers/schedulers"
save_file({k: v.contiguous() for k, v in out.items()}, f"{folder}/expected.safetensors")
with open(f"{folder}/meta.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "shape": list(SHAPE),
               "bases": BASES, "cases": meta}, f, indent=1, sort_keys=True)
print(f"wrote {len(out)} tensors, {len(meta)} cases")
