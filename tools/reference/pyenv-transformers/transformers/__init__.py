"""Our loader for a few of transformers' OWN model files, run unmodified on Debian's torch 1.13 (no PyPI here).

transformers itself cannot be installed on this machine, so its model files are saved, byte for byte, under
$REFTF/src/transformers (default /tmp/reftf; tools/reference/README.md says which files, from which commits, and how).
This package makes `transformers` a package whose path is this folder first and that folder second:
- from $REFTF (transformers' code, unmodified): activations.py, modeling_rope_utils.py, models/t5/{configuration_t5,
  modeling_t5}.py, models/clip/{configuration_clip,modeling_clip}.py, models/siglip/{configuration_siglip,
  modeling_siglip}.py, models/qwen3/{configuration_qwen3,modeling_qwen3}.py: every computation that the reference
  scripts check;
- from here (ours): the few library modules those files import, cut down to what an eval-mode forward of
  T5EncoderModel / CLIPVisionModelWithProjection / SiglipVisionModel / Qwen3Model reaches (configuration_utils.PretrainedConfig, modeling_utils.
  PreTrainedModel as a thin nn.Module base, modeling_outputs dataclasses, utils decorators / logging) and named
  placeholders for what they only import (caches, generation, ONNX configs, attention-mask helpers of the decoder /
  text paths), which raise if ever called.
Nothing here computes a model output.
"""
import os

__version__ = "4.5x-reference-files"

REFTF = os.environ.get("REFTF", "/tmp/reftf")
_REF_PACKAGE = os.path.join(REFTF, "src", "transformers")
if not os.path.isdir(os.path.join(_REF_PACKAGE, "models")):
    raise ImportError(f"transformers' model files are not under {_REF_PACKAGE}: see tools/reference/README.md")
__path__.append(_REF_PACKAGE)
