"""What diffusers' transformer_z_image.py relies on that Debian's torch 1.13 lacks, for z_image.py and z_image_prompt.py.

install() changes no computation:
1. `with torch.device("cpu"):` around the RoPE table. Every tensor made inside names device="cpu" (or follows one that
   does), so the context does nothing here; torch 1.13's device is no context manager. That module alone sees a torch
   whose device(...) also is one.
2. Indexing with an int32 tensor (the RoPE table is indexed by int32 position ids): torch 2.x takes it, torch 1.13
   wants int64. The same indices, widened.
"""
import types

import torch

import diffusers.models.transformers.transformer_z_image as transformer_z_image


class _DeviceContext:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        return self.device

    def __exit__(self, *exc):
        return False


_getitem = torch.Tensor.__getitem__


def _getitem_int32(self, index):
    if isinstance(index, torch.Tensor) and index.dtype == torch.int32:
        index = index.long()
    return _getitem(self, index)


def install():
    _torch = types.ModuleType("torch")
    _torch.__dict__.update(torch.__dict__)
    _torch.device = lambda *args, **kwargs: _DeviceContext(torch.device(*args, **kwargs))
    transformer_z_image.torch = _torch
    torch.Tensor.__getitem__ = _getitem_int32
