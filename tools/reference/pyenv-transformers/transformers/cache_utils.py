"""Named placeholders: only T5's decoder uses key/value caches; the encoder passes past_key_values=None."""


class Cache:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("key/value caches are not part of the reference environment")


class DynamicCache(Cache):
    pass


class EncoderDecoderCache(Cache):
    pass


class StaticCache(Cache):
    pass
