"""The weight file names diffusers' pipeline loader imports from transformers.utils."""
SAFE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAME = "pytorch_model.bin"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return None
