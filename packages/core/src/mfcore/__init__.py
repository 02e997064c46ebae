"""mfcore: plugin-based LLM framework on MindSpore.

`import mfcore` is cheap and MindSpore-free: the plugin contract (hookimpl, PretrainedConfig, Preset,
WeightMap) is imported eagerly; names that need MindSpore (PreTrainedModel, generation, trainer...)
are imported on first access.
"""

import os

# MindSpore's CPU kernels run OpenMP regions (libgomp, loaded by `import mindspore`). Busy-waiting OpenMP
# threads hold the cores the next kernels need: on 2 cores decode is ~20% faster with passive waiting
# (benchmarks/RESULTS.md, "Generate"). libgomp reads the variable once, when it loads, so it is set here,
# before mfcore imports mindspore; a value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CheckpointError, ConfigError, DuplicateNameError, MfcoreError, PluginError, UnknownNameError
from .models.auto import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from .models.configuration import PretrainedConfig
from .plugins.hookspecs import hookimpl
from .plugins.manager import get_plugins, reset_plugins
from .plugins.types import Preset, WeightMap
from .utils.lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562) to keep `import mfcore` light.
_LAZY = {
    "PreTrainedModel": "mfcore.models.modeling",
    "GenerationConfig": "mfcore.generation.config",
    "PreTrainedTokenizer": "mfcore.tokenization.base",
    "PreTrainedTokenizerFast": "mfcore.tokenization.fast",
}


__getattr__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = [
    "AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "PretrainedConfig", "Preset", "WeightMap",
    "hookimpl", "get_plugins", "reset_plugins", "MfcoreError", "ConfigError", "PluginError",
    "DuplicateNameError", "UnknownNameError", "CheckpointError", *_LAZY,
]
