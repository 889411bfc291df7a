"""A stand-in for transformers, which cannot be installed offline: only lets diffusers' pipeline modules import.

No text encoder runs: the reference scripts build pipelines with text_encoder=None / tokenizer=None and pass
prompt embeddings. Any class name asked for is an empty class.
"""
__version__ = "4.57.0"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    cls = type(name, (), {})
    globals()[name] = cls
    return cls
