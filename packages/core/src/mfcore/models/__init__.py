"""Configs, models and where their weights come from.

`configuration` (PretrainedConfig, reading our / Hugging Face / MindFormers config files), `auto`
(AutoConfig, AutoModelForCausalLM, AutoTokenizer: a preset name or a directory -> the registered class),
`modeling` (PreTrainedModel, a MindSpore Cell: from_pretrained, save_pretrained, load_checkpoint,
generate), `weight_files` (which files hold the weights, read tensor by tensor) and `safetensors_reader`
(one validating reader, shared with mf-convert). MindSpore loads only with `modeling`/`weight_files`.
"""
from mfcore.utils.lazy import lazy_exports

from .auto import AutoConfig, AutoModelForCausalLM, AutoTokenizer, installed_weights, models_home
from .configuration import CONFIG_NAME, PretrainedConfig, normalize_dtype

_LAZY = {"PreTrainedModel": "mfcore.models.modeling", "MS_DTYPES": "mfcore.models.modeling",
         "SafetensorsFile": "mfcore.models.safetensors_reader"}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = ["AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "installed_weights", "models_home", "CONFIG_NAME",
           "PretrainedConfig", "normalize_dtype", *_LAZY]
