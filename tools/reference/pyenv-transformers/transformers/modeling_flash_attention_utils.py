"""Named placeholders: FlashAttentionKwargs only types the **kwargs of the Qwen3 / GLM forwards; _flash_attention_forward
is imported by modeling_glm.py (4.47) for its flash-attention class, which never runs here (flash attention is not part
of the reference environment; the models run their "eager" attention)."""
from typing import TypedDict


class FlashAttentionKwargs(TypedDict, total=False):
    pass


def _flash_attention_forward(*args, **kwargs):
    raise NotImplementedError("flash attention is not part of the reference environment")
