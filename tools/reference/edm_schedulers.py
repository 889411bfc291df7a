"""diffusers' own EDM schedulers (EDMEulerScheduler, EDMDPMSolverMultistepScheduler): schedules and full sampling runs
with a synthetic model. Writes local-diffusers/edm-schedulers/{expected.safetensors, meta.json}.

Usage (see README.md for the environment):
    python3 tools/reference/edm_schedulers.py tests/DiffusersSharp.Tests/Fixtures

For every scheduler (a class with from_config overrides, as DiffusionSchedulers' short names), every base config (the
EDM defaults as Playground v2.5's scheduler config spells them, CosXL's EDMEulerScheduler arguments, and a variant with
final_sigmas_type sigma_min, rho 5 and sigma_data 0.6) and N steps: `timesteps` and `sigmas` after set_timesteps(N),
`init_noise_sigma`, then a sampling run: latents = randn(shape, generator) * init_noise_sigma, and for each t:
x_in = scale_model_input(latents, t); model_output = 0.3 * x_in + 0.1 * sin(t) (float32); latents = step(model_output,
t, latents, generator=generator).prev_sample, each saved. The SDE variants draw from that generator in step, so the draws
follow diffusers' order. `edm_euler_churn` passes s_churn=2.0, s_tmin=0.1, s_tmax=50 to every step (noise drawn where
sigma is in range). set_timesteps runs with float32 exp / log correctly rounded (modern_float32.correctly_rounded_exp_log for Tensor.exp
and the torch.log function patched below: computed in float64 and rounded once), as DiffusersSharp computes them.
"""
import json
import sys

import modern_float32  # PyTorch 2.x linspace, correctly rounded exp (see that file)
import torch
from safetensors.torch import save_file

import diffusers

root = sys.argv[1]
SHAPE = (1, 4, 4, 4)
STEPS = (1, 4, 10, 25)

BASES = {
    # Playground v2.5's scheduler_config.json values (the class defaults, spelled out).
    "playground": {"_class_name": "EDMDPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
                   "dynamic_thresholding_ratio": 0.995, "euler_at_final": False, "final_sigmas_type": "zero",
                   "lower_order_final": True, "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0,
                   "sample_max_value": 1.0, "sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002,
                   "sigma_schedule": "karras", "solver_order": 2, "solver_type": "midpoint", "thresholding": False},
    # CosXL: EDMEulerScheduler(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0, prediction_type="v_prediction",
    # sigma_schedule="exponential").
    "cosxl": {"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 120.0, "sigma_data": 1.0,
              "prediction_type": "v_prediction", "sigma_schedule": "exponential"},
    "sigma_min_final": {"_class_name": "EDMEulerScheduler", "sigma_min": 0.01, "sigma_max": 40.0, "sigma_data": 0.6,
                        "rho": 5.0, "final_sigmas_type": "sigma_min"},
}
SCHEDULERS = {
    "edm_euler": ("EDMEulerScheduler", {}),
    "edm_euler_churn": ("EDMEulerScheduler", {}),
    "edm_dpmpp_2m": ("EDMDPMSolverMultistepScheduler", {}),
    "edm_dpmpp_2m_sde": ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "edm_dpmpp_2m_heun": ("EDMDPMSolverMultistepScheduler", {"solver_type": "heun"}),
    "edm_dpmpp_2m_sde_heun": ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
    "edm_dpmpp_3m": ("EDMDPMSolverMultistepScheduler", {"solver_order": 3}),
    "edm_dpmpp_1": ("EDMDPMSolverMultistepScheduler", {"solver_order": 1}),
    "edm_dpmpp_euler_at_final": ("EDMDPMSolverMultistepScheduler", {"euler_at_final": True, "lower_order_final": False}),
    "edm_dpmpp_thresholding": ("EDMDPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.5,
                                                                  "dynamic_thresholding_ratio": 0.9}),
}
CHURN = {"edm_euler_churn": {"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": 50.0}}



class correctly_rounded_torch_log:
    """torch.log (the function, which precondition_noise calls) of float32 tensors computed in float64 and rounded once."""

    def __enter__(self):
        self._saved = torch.log
        log = self._saved
        torch.log = lambda t: log(t.double()).float() if t.dtype == torch.float32 else log(t)
        return self

    def __exit__(self, *exc):
        torch.log = self._saved
        return False


out, meta = {}, {}
for name, (cls_name, overrides) in SCHEDULERS.items():
    cls = getattr(diffusers, cls_name)
    for base_name, base in BASES.items():
        for n in STEPS:
            key = f"{name}.{base_name}.n{n}"
            scheduler = cls.from_config(base, **overrides)
            # The exponential schedule's float32 Tensor.exp and precondition_noise's torch.log, correctly rounded
            # (float64, rounded once): torch's SIMD float32 exp / log are an ulp off on some lanes, differently by version
            # (torch 1.13's exp on CosXL's 10-step sigma 6; libtorch 2.10's log on Playground's 25-step sigma 18).
            with modern_float32.correctly_rounded_exp_log(), correctly_rounded_torch_log():
                scheduler.set_timesteps(n)
            out[f"{key}.timesteps"] = scheduler.timesteps.clone()
            out[f"{key}.sigmas"] = scheduler.sigmas.clone()
            generator = torch.Generator("cpu").manual_seed(2000 + n)
            latents = torch.randn(SHAPE, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
            out[f"{key}.init"] = latents.clone()
            for i, t in enumerate(scheduler.timesteps):
                x_in = scheduler.scale_model_input(latents, t)
                model_output = 0.3 * x_in + 0.1 * torch.sin(t.float())
                latents = scheduler.step(model_output, t, latents, generator=generator, **CHURN.get(name, {})).prev_sample
                out[f"{key}.step{i}"] = latents.clone()
            meta[key] = {"class": cls_name, "overrides": overrides, "base": base_name, "steps": n, "seed": 2000 + n,
                         "order": scheduler.order, "init_noise_sigma": float(scheduler.init_noise_sigma),
                         "timesteps_dtype": str(scheduler.timesteps.dtype), "model_evals": len(scheduler.timesteps)}
            if name in CHURN:
                meta[key]["churn"] = CHURN[name]

folder = f"{root}/local-diffusers/edm-schedulers"
save_file({k: v.contiguous() for k, v in out.items()}, f"{folder}/expected.safetensors")
with open(f"{folder}/meta.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "shape": list(SHAPE),
               "bases": BASES, "cases": meta}, f, indent=1, sort_keys=True)
print(f"wrote {len(out)} tensors, {len(meta)} cases")
