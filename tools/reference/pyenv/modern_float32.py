"""Opt-in (`import modern_float32` before diffusers): two float32 functions as the project's own environment computes
them, where Debian 12's torch 1.13 / numpy 1.24 round differently. Not imported by sitecustomize, so the older
fixtures' scripts keep their bits. Used by schedulers.py (and sd_schedulers.py), whose schedules must be bit-exact.

1. torch.linspace (float32) as PyTorch 2.x computes it on the CPU.

torch 1.13's float32 linspace rounds differently from PyTorch 2.x's, which moves Stable Diffusion's scaled_linear betas,
hence the training sigmas and every sigma schedule, by an ulp or two. PyTorch 2.x's CPU kernel (ATen
RangeFactoriesKernel, scalar loop) takes step = (end - start) / (steps - 1) in float32 and computes start + step * i for
the first half, end - step * (steps - 1 - i) for the second, each compiled to one fused multiply-add (one rounding). Checked
equal, all 1000 values, to libtorch 2.10's on SD's betas (and so to the shared fixtures' torch 2.11 schedules). The fused
multiply-add is written here as a float64 product (exact: 24-bit step times an integer below 2^29) and sum, rounded to
float32. Only float32 calls with number bounds are replaced.

2. np.log of float32 arrays (diffusers' log_sigmas), correctly rounded: numpy 1.24's AVX512F float32 log is an ulp off
in 188 of SD's 1000 training sigmas, which moves _sigma_to_t (Karras timesteps). Computed in float64 and rounded, as
the project's NumpyMath.LogF32 does (which equals the shared fixtures' numpy on every Karras schedule there).

3. numpy 2's type promotion (NEP 50), which numpy 1.24 offers as np._set_promotion_state("weak"): under numpy 1.x's
value-based casting, diffusers' _sigma_to_t subtracts a float64 log-sigma from the float32 log_sigmas in float32;
numpy 2 (the shared fixtures' and every current diffusers install's) does it in float64, as NumpyMath.SigmaToT.
"""
import numpy as np
import torch

np._set_promotion_state("weak")

_original = torch.linspace


def linspace(start, end, steps, *, out=None, dtype=None, layout=torch.strided, device=None, requires_grad=False):
    dtype = dtype or torch.get_default_dtype()
    if (out is not None or requires_grad or dtype != torch.float32 or steps < 2 or steps >= 2**29
            or not isinstance(start, (int, float)) or not isinstance(end, (int, float))):
        return _original(start, end, steps, out=out, dtype=dtype, layout=layout, device=device, requires_grad=requires_grad)
    s = torch.tensor(float(start), dtype=torch.float32)
    e = torch.tensor(float(end), dtype=torch.float32)
    step = ((e - s) / (steps - 1)).double()
    i = torch.arange(steps, dtype=torch.float64)
    values = torch.where(i < steps // 2, s.double() + step * i, e.double() - step * (steps - 1 - i)).float()
    return values.to(device) if device is not None else values


torch.linspace = linspace


_np_log = np.log


def log(x, *args, **kwargs):
    if not args and not kwargs and isinstance(x, np.ndarray) and x.dtype == np.float32:
        return _np_log(x.astype(np.float64)).astype(np.float32)
    return _np_log(x, *args, **kwargs)


np.log = log


# 4. In the context below only (global, it would move other entries): np.log of float32 torch tensors (KDPM2's
# _sigma_to_t gets its interpolated sigmas as 0-dim tensors, which numpy logs with the SIMD float32 log of 2 and wraps
# back into a tensor), and torch 1.13's float32 Tensor.exp / Tensor.log, an ulp off the correctly rounded value where
# PyTorch 2.x's is not (KDPM2's interpolated sigma exp(lerp(log s_i, log s_(i-1), 0.5)) at 10 steps of SD's schedule),
# all computed in float64 and rounded once. schedulers.py opens it around the set_timesteps of the classes that need it,
# and around DEIS's step (its logrho coefficients take np.log of 0-dim float32 tensors).
class correctly_rounded_exp_log:
    """Tensor.exp / Tensor.log and np.log of float32 tensors computed in float64 and rounded once."""

    def __enter__(self):
        self._saved = torch.Tensor.exp, torch.Tensor.log, np.log
        exp, lg, np_log = self._saved

        def rounded(f):
            return lambda t: f(t.double()).float() if t.dtype == torch.float32 else f(t)

        def np_log_any(x, *args, **kwargs):
            if not args and not kwargs and isinstance(x, torch.Tensor) and x.dtype == torch.float32:
                return torch.from_numpy(np.asarray(_np_log(x.detach().cpu().numpy().astype(np.float64)), dtype=np.float32))
            return np_log(x, *args, **kwargs)

        torch.Tensor.exp, torch.Tensor.log, np.log = rounded(exp), rounded(lg), np_log_any
        return self

    def __exit__(self, *exc):
        torch.Tensor.exp, torch.Tensor.log, np.log = self._saved
        return False
