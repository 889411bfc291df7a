"""Named placeholder: FlashAttentionKwargs only types the **kwargs of the Qwen3 forwards (flash attention is not part of
the reference environment; Qwen3 runs its "eager" attention here)."""
from typing import TypedDict


class FlashAttentionKwargs(TypedDict, total=False):
    pass
