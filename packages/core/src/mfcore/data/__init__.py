"""Training data: `formats` (text, jsonl, wikitext, alpaca, chat and their templates -> token segments),
`packing` (segments -> full sequences of seq_length, prompts masked with -100), `mindrecord` (sequences
written to and read from MindRecord). `mfcore data` (mfcore.cli.data) chains them. numpy and MindSpore
load on first access."""
from mfcore.utils.lazy import lazy_exports

_LAZY = {
    **{name: "mfcore.data.packing" for name in ("IGNORE_INDEX", "PackStats", "Packer", "expand_inputs", "pack_files")},
    **{name: "mfcore.data.mindrecord" for name in ("COLUMNS", "write_mindrecord", "read_mindrecord",
                                                   "mindrecord_files")},
    **{name: "mfcore.data.formats" for name in ("resolve_format", "list_datasets")},
}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = list(_LAZY)
