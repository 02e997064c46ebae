"""Where mfcore keeps its files: $MFCORE_HOME (default ~/.mfcore), shared by models and kernels."""
import os
from pathlib import Path


def mfcore_home() -> Path:
    """$MFCORE_HOME, or ~/.mfcore: converted preset weights (models/), compiled kernels (kernels/)."""
    return Path(os.environ.get("MFCORE_HOME", "~/.mfcore")).expanduser()
