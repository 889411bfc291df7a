"""transformers.models: our deprecated/ placeholder here, the model folders (t5/, clip/) from $REFTF."""
import os

from .. import _REF_PACKAGE

__path__.append(os.path.join(_REF_PACKAGE, "models"))
