"""The parts of transformers.utils that the model files import: docstring decorators (no-ops here: they only edit
__doc__), feature probes answered for torch 1.13 on the CPU, ModelOutput, and T5's dummy-input constants."""
import torch

from . import logging
from ..modeling_outputs import ModelOutput  # noqa: F401

DUMMY_INPUTS = [[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]]
DUMMY_MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1]]


def _keep(fn):
    return fn


def add_start_docstrings(*docstr):
    return _keep


def add_start_docstrings_to_model_forward(*docstr):
    return _keep


def replace_return_docstrings(output_type=None, config_class=None):
    return _keep


def add_code_sample_docstrings(*args, **kwargs):
    return _keep


def is_torch_flex_attn_available():
    return False


def is_flash_attn_2_available():
    return False


def is_flash_attn_greater_or_equal_2_10():
    return False


def is_torch_fx_proxy(x):
    return False


def is_torchdynamo_compiling():
    return False


def torch_int(x):
    # transformers: int(x) unless torch.jit is tracing; only the position-embedding interpolation path uses it.
    return x.to(torch.int64) if torch.jit.is_tracing() and isinstance(x, torch.Tensor) else int(x)
