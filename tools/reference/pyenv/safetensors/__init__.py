"""See torch.py: the safetensors format in plain Python for the reference scripts."""
__version__ = "0.4.5"
from .torch import safe_open  # noqa: E402,F401
