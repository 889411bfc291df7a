"""Named placeholders: only decoders that generate use key/value caches; T5's encoder passes past_key_values=None, and
qwen3.py calls Qwen3Model and gemma2.py Gemma2Model with use_cache=False."""


class Cache:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("key/value caches are not part of the reference environment")


class DynamicCache(Cache):
    pass


class EncoderDecoderCache(Cache):
    pass


class StaticCache(Cache):
    pass


class SlidingWindowCache(Cache):
    pass


class HybridCache(Cache):
    pass
