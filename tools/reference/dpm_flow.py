"""diffusers' own DPMSolverMultistepScheduler with flow sigmas (use_flow_sigmas, flow_prediction), as Sana's pipelines
run it. Writes local-diffusers/dpm-flow/{expected.safetensors, meta.json}.

Usage (see README.md for the environment; diffusers v0.39.0):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/dpm_flow.py tests/DiffusersSharp.Tests/Fixtures

For every config below and N steps: `timesteps` and `sigmas` after set_timesteps(N), then a sampling run: latents =
randn(SHAPE, generator); for each t: model_output = 0.3 * latents + 0.1 * sin(t / 100) (float32); latents =
step(model_output, t, latents, generator=generator).prev_sample, each saved; and add_noise of a seeded sample at the
schedule's second timestep (a fresh scheduler with set_timesteps(N), as image-to-image calls it).
"""
import json
import math
import sys

import modern_float32  # noqa: F401  (PyTorch 2.x linspace, correctly rounded float32 np.log; see that file)
import torch
from safetensors.torch import save_file

from diffusers import DPMSolverMultistepScheduler

root = sys.argv[1]
out = f"{root}/local-diffusers/dpm-flow"
SHAPE = (1, 4, 4, 4)
STEPS = (1, 4, 10, 20, 25)

# The keys Sana's scheduler_config.json sets (Efficient-Large-Model/Sana_1600M_1024px_diffusers): DPM-Solver++(2M),
# flow sigmas shifted by 3, flow prediction, final sigma zero; the other configs vary one option each.
SANA = dict(
    algorithm_type="dpmsolver++", beta_schedule="linear", beta_start=0.0001, beta_end=0.02, final_sigmas_type="zero",
    flow_shift=3.0, lower_order_final=True, num_train_timesteps=1000, prediction_type="flow_prediction", solver_order=2,
    solver_type="midpoint", timestep_spacing="linspace", use_flow_sigmas=True,
)
CONFIGS = {
    "sana": SANA,
    "shift1_order3": dict(SANA, flow_shift=1.0, solver_order=3),
    "sde_heun": dict(SANA, algorithm_type="sde-dpmsolver++", solver_type="heun", flow_shift=4.5),
    "sigma_min_no_lof": dict(SANA, final_sigmas_type="sigma_min", lower_order_final=False, flow_shift=2.0),
}

tensors = {}
meta = {"configs": CONFIGS, "steps": list(STEPS), "shape": list(SHAPE)}
for name, cfg in CONFIGS.items():
    for n in STEPS:
        key = f"{name}/{n}"
        s = DPMSolverMultistepScheduler(**cfg)
        s.set_timesteps(n)
        tensors[f"{key}/timesteps"] = s.timesteps.clone()
        tensors[f"{key}/sigmas"] = s.sigmas.clone()
        g = torch.Generator().manual_seed(1234 + n)
        latents = torch.randn(SHAPE, generator=g, dtype=torch.float32)
        tensors[f"{key}/initial"] = latents.clone()
        for i, t in enumerate(s.timesteps):
            x_in = s.scale_model_input(latents, t)
            model_output = 0.3 * x_in + 0.1 * math.sin(float(t) / 100)
            latents = s.step(model_output, t, latents, generator=g).prev_sample
            tensors[f"{key}/step{i}"] = latents.clone()
        if n > 1:
            s2 = DPMSolverMultistepScheduler(**cfg)
            s2.set_timesteps(n)
            g2 = torch.Generator().manual_seed(99)
            x0 = torch.randn(SHAPE, generator=g2)
            noise = torch.randn(SHAPE, generator=g2)
            tensors[f"{key}/add_noise_x0"] = x0
            tensors[f"{key}/add_noise_noise"] = noise
            tensors[f"{key}/add_noise"] = s2.add_noise(x0, noise, s2.timesteps[1:2])

save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/expected.safetensors")
with open(f"{out}/meta.json", "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
    f.write("\n")
