"""The parts of transformers.utils that the model files import: docstring decorators (no-ops here: they only edit
__doc__), feature probes answered for torch 1.13 on the CPU, ModelOutput, T5's dummy-input constants, and Qwen3's
can_return_tuple (the output container as a tuple when return_dict=False) and LossKwargs (a typing-only TypedDict)."""
import functools
from typing import Optional, TypedDict

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


def is_flash_attn_greater_or_equal(library_version):
    return False


def is_torch_greater_or_equal(library_version):
    # transformers compares the installed torch's base version; Gemma2's file asks for "2.5" (flex attention).
    from packaging import version

    return version.parse(version.parse(torch.__version__).base_version) >= version.parse(library_version)


def is_torch_fx_proxy(x):
    return False


def is_torchdynamo_compiling():
    return False


def torch_int(x):
    # transformers: int(x) unless torch.jit is tracing; only the position-embedding interpolation path uses it.
    return x.to(torch.int64) if torch.jit.is_tracing() and isinstance(x, torch.Tensor) else int(x)


def is_torch_available():
    return True


class LossKwargs(TypedDict, total=False):
    num_items_in_batch: Optional[int]


def can_return_tuple(func):
    # transformers: pops return_dict; the ModelOutput becomes a tuple when it is False (or config.use_return_dict is).
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        as_tuple = kwargs.pop("return_dict", True) is False
        configured_tuple = self.config.use_return_dict is False if hasattr(self, "config") else False
        output = func(self, *args, **kwargs)
        return output.to_tuple() if as_tuple or configured_tuple else output

    return wrapper
