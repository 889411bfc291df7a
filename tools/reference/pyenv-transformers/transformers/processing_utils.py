"""The one name the model files import from transformers.processing_utils: typing's Unpack (Python 3.11)."""
from typing import Unpack  # noqa: F401
