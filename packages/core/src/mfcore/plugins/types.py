"""Plain data types that plugins hand to core: presets and weight maps.

They live in core (and import nothing heavy) so that a model plugin never imports mf-convert or
MindSpore just to describe itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union


@dataclass(frozen=True)
class Preset:
    """A named, ready-to-use model: a model type plus config values (and usually a tokenizer).

    `config` holds values that override the config class defaults. `tokenizer` names a registered
    tokenizer class plus its arguments, e.g. {"type": "LlamaTokenizer", "vocab_file": "..."}, or is
    None when the weights directory brings its own tokenizer files.
    """

    name: str
    model_type: str
    config: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: Optional[Union[str, Mapping[str, Any]]] = None
    aliases: Sequence[str] = ()
    description: str = ""
    # A preset with real dimensions (7B...) must get its weights from a checkpoint; tiny ones may be
    # initialised randomly for tests and demos.
    random_init_ok: bool = False
    generation: Mapping[str, Any] = field(default_factory=dict)


# A name map turns one checkpoint parameter name into another (or None: "not mapped").
NameMap = Callable[[str], Optional[str]]
# A tensor transform gets (native name, array, config) and returns the array to store. Arrays are numpy;
# bfloat16 arrives as its raw uint16 bits, so transforms should only move elements (reshape, transpose).
TensorTransform = Callable[[str, Any, Any], Any]


@dataclass(frozen=True)
class WeightMap:
    """How one model type's weights are named and shaped in a foreign checkpoint format.

    `source` is the foreign format ("hf", "meta", "mindformers"). `to_native` maps a foreign name to
    mfcore's native name (MindFormers' Llama names), `from_native` the other way. `to_native_transform`
    / `from_native_transform` change a tensor on the way in / out (e.g. RoPE q/k permutation for Meta).
    Transforms must be exact inverses of each other so conversions round-trip bit for bit.
    """

    model_type: str
    source: str
    to_native: NameMap
    from_native: NameMap
    to_native_transform: Optional[TensorTransform] = None
    from_native_transform: Optional[TensorTransform] = None
    # Optional: turn the foreign format's config (dict) into config kwargs, and back.
    # config_to_native(foreign_config, shapes) also gets {foreign name: shape} of the checkpoint's
    # tensors, for formats whose config leaves values to the weights (Meta's vocab_size = -1).
    config_to_native: Optional[Callable[[Mapping[str, Any], Mapping[str, Tuple[int, ...]]], dict]] = None
    config_from_native: Optional[Callable[[Any], dict]] = None
    description: str = ""
    # Foreign names that are not parameters (cached buffers such as rotary inv_freq): dropped silently.
    ignore: Optional[Callable[[str], bool]] = None
    # Every parameter the native network may hold, with its shape, for a config: lets the converter
    # refuse a wrong shape, a missing tensor or an unexpected one before writing anything.
    native_shapes: Optional[Callable[[Any], Mapping[str, Tuple[int, ...]]]] = None
    # Native names that may be absent because they share storage with another when the config ties
    # them (tie_word_embeddings): {"lm_head.weight": "model.tok_embeddings.embedding_weight"}.
    tied: Mapping[str, str] = field(default_factory=dict)
    # Formats split into model-parallel shards (Meta's consolidated.NN.pth): the dimension along which
    # a tensor is split, given (foreign name, one shard's shape, the format's own config dict such as
    # params.json); None means every shard holds the whole tensor (replicated).
    split_dim: Optional[Callable[[str, Tuple[int, ...], Any], Optional[int]]] = None
    # Native parameters the format may store fused into one tensor (MindFormers' qkv_concat: w_qkv holds
    # wq, wk, wv). An object with parts(fused name) -> part names or None, fused_name(part) -> fused name
    # or None, split(fused name, array, config) -> part arrays and fuse(fused name, arrays, config) ->
    # array, exact inverses. The converter splits fused source tensors and fuses on request.
    fusions: Optional[Any] = None
