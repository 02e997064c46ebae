"""Tokenizer bases: `base` (PreTrainedTokenizerBase, the pure-Python PreTrainedTokenizer, BatchEncoding,
chat templates) and `fast` (PreTrainedTokenizerFast on Hugging Face `tokenizers`, Rust). Imported on
first access, so `import mfcore.tokenization` costs nothing until a name is used."""
from mfcore.utils.lazy import lazy_exports

_BASE = ("PreTrainedTokenizerBase", "PreTrainedTokenizer", "BatchEncoding", "ChatTemplate", "ChatSegments", "Offsets",
         "copy_file", "require_file", "TOKENIZER_CONFIG_FILE", "SPECIAL_TOKENS_MAP_FILE")
_FAST = ("PreTrainedTokenizerFast", "import_tokenizers", "TOKENIZER_FILE")
_LAZY = {**{name: "mfcore.tokenization.base" for name in _BASE}, **{name: "mfcore.tokenization.fast" for name in _FAST}}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = list(_LAZY)
