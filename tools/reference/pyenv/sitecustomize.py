"""Lets diffusers' current source import and run on Debian 12's python3-torch 1.13 (CPU, float32).

Python imports this file by itself when its folder is on PYTHONPATH. It adds only what torch 1.13 lacks and the
reference scripts reach: device namespaces and dtypes that diffusers names at import time, torch.compiler /
torch.library decorators (no-ops), F.scaled_dot_product_attention, nn.RMSNorm and nn.LayerNorm(bias=False) written
from their definitions in PyTorch's documentation (float32 math, no fused kernel).
"""
import math
import sys
import types

import torch
import torch.distributed
import torch.nn.functional as F


def _no_device():
    return types.SimpleNamespace(
        empty_cache=lambda: None, is_available=lambda: False, device_count=lambda: 0, synchronize=lambda *a: None,
        manual_seed=lambda *a: None, current_device=lambda: 0, get_device_name=lambda *a: "",
        memory_allocated=lambda *a: 0, max_memory_allocated=lambda *a: 0, reset_peak_memory_stats=lambda *a: None,
        reset_max_memory_allocated=lambda *a: None, current_allocated_memory=lambda: 0,
        driver_allocated_memory=lambda: 0, recommended_max_memory=lambda: 0)


for _device in ("xpu", "mps", "mtia", "npu"):
    if not hasattr(torch, _device):
        setattr(torch, _device, _no_device())

# Named in diffusers' dtype tables only; never used by these scripts.
for _dtype in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"):
    if not hasattr(torch, _dtype):
        setattr(torch, _dtype, types.SimpleNamespace(name=_dtype, itemsize=1, is_floating_point=True))

if not hasattr(torch.distributed, "device_mesh"):
    torch.distributed.device_mesh = types.SimpleNamespace(DeviceMesh=type("DeviceMesh", (), {}), init_device_mesh=None)
if "torch.distributed._functional_collectives" not in sys.modules:
    try:
        import torch.distributed._functional_collectives  # noqa: F401
    except ImportError:
        sys.modules["torch.distributed._functional_collectives"] = types.ModuleType("torch.distributed._functional_collectives")

if not hasattr(torch, "compiler"):
    torch.compiler = types.SimpleNamespace(
        disable=lambda fn=None, recursive=True: fn if fn is not None else (lambda f: f), is_compiling=lambda: False)
# SanaPipeline's decode names the accelerator's OutOfMemoryError in an except clause (torch < 2.5: torch.cpu's); torch
# 1.13 has none on torch.cpu. The name only: nothing here raises it.
if not hasattr(torch.cpu, "OutOfMemoryError"):
    torch.cpu.OutOfMemoryError = torch.cuda.OutOfMemoryError
# The ControlNet pipelines' check_inputs asks whether the ControlNet is a torch.compile'd module; none is here.
if not hasattr(torch, "_dynamo"):
    torch._dynamo = types.SimpleNamespace(eval_frame=types.SimpleNamespace(OptimizedModule=type("OptimizedModule", (), {})))
if not hasattr(torch.library, "custom_op"):
    torch.library.custom_op = lambda *a, **k: (lambda f: f)
    torch.library.register_fake = lambda *a, **k: (lambda f: f)

# diffusers v0.39 imports names from torch.nn.attention (sdpa_kernel, flex_attention's BlockMask ...) at module load,
# for backends these scripts never select; torch 1.13 has no such module. Names only: calling one is an error.
try:
    import torch.nn.attention  # noqa: F401
except ImportError:
    class _NamesOnly(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            def unavailable(*args, **kwargs):
                raise RuntimeError(f"torch.nn.attention.{name} is not in torch {torch.__version__}")
            return type(name, (), {"__init__": unavailable, "__call__": unavailable})
    _attention = _NamesOnly("torch.nn.attention")
    _attention.flex_attention = _NamesOnly("torch.nn.attention.flex_attention")
    sys.modules["torch.nn.attention"] = _attention
    sys.modules["torch.nn.attention.flex_attention"] = _attention.flex_attention
    torch.nn.attention = _attention

if not hasattr(F, "scaled_dot_product_attention"):
    def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                     enable_gqa=False):
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        weights = torch.matmul(query, key.transpose(-2, -1)) * scale
        if is_causal:
            keep = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
            weights = weights.masked_fill(keep.logical_not(), float("-inf"))
        if attn_mask is not None:
            weights = weights.masked_fill(attn_mask.logical_not(), float("-inf")) if attn_mask.dtype == torch.bool else weights + attn_mask
        result = torch.matmul(torch.softmax(weights, dim=-1), value)
        if result.dim() == 4:
            # PyTorch 2.x's fused kernels (CPU flash attention, CUDA) write the output as [B, N, heads, d] and return its
            # transpose: same values, but `.transpose(1, 2).view(B, -1, heads * d)` works on it, which diffusers'
            # SD3IPAdapterJointAttnProcessor2_0 relies on. The layout only; nothing is computed differently.
            result = result.transpose(1, 2).contiguous().transpose(1, 2)
        return result

    F.scaled_dot_product_attention = scaled_dot_product_attention

if not hasattr(torch.nn, "RMSNorm"):
    class RMSNorm(torch.nn.Module):
        def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
            super().__init__()
            self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
            self.eps = eps
            self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype)) if elementwise_affine else None

        def forward(self, x):
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
            dims = tuple(range(-len(self.normalized_shape), 0))
            y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
            return y if self.weight is None else y * self.weight

    torch.nn.RMSNorm = RMSNorm

# nn.LayerNorm's bias argument (PyTorch 2.1; diffusers' FP32LayerNorm / AdaLayerNormZero pass bias=False): without a bias
# the parameter is simply absent, which F.layer_norm accepts as None. Nothing is computed differently.
if "bias" not in torch.nn.LayerNorm.__init__.__code__.co_varnames:
    class LayerNorm(torch.nn.LayerNorm):
        def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
            super().__init__(normalized_shape, eps, elementwise_affine, device=device, dtype=dtype)
            if elementwise_affine and not bias:
                self.bias = None

    torch.nn.LayerNorm = LayerNorm

# torch 1.13's float32 CPU group_norm sums large maps imprecisely: on a 256 x 256 VAE encode its posterior mean is
# 6.4e-4 from a float64 run of the same code, against 8e-6 for libtorch 2.10. Computing it in float64 and rounding to
# float32 gives 8e-6 too; the rounding error of the reference is then that of current torch, not of an old kernel.
_group_norm = F.group_norm


def _group_norm_float64(input, num_groups, weight=None, bias=None, eps=1e-5):
    if input.dtype != torch.float32:
        return _group_norm(input, num_groups, weight, bias, eps)
    double = None if weight is None else weight.double(), None if bias is None else bias.double()
    return _group_norm(input.double(), num_groups, double[0], double[1], eps).float()


F.group_norm = _group_norm_float64
