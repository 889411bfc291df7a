"""The names the model files import from transformers.pytorch_utils; head pruning is not supported here."""
from packaging import version

import torch

ALL_LAYERNORM_LAYERS = [torch.nn.LayerNorm]
is_torch_greater_or_equal_than_2_2 = version.parse(version.parse(torch.__version__).base_version) >= version.parse("2.2")


def find_pruneable_heads_and_indices(*args, **kwargs):
    raise NotImplementedError("head pruning is not part of the reference environment")


def prune_linear_layer(*args, **kwargs):
    raise NotImplementedError("head pruning is not part of the reference environment")
