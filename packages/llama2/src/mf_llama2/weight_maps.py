"""Llama weights in foreign checkpoint formats: names, tensor transforms, shard rules and configs.

Native names are MindFormers' Llama names, so a MindFormers checkpoint loads as is. Hugging Face
stores q/k in the same rotary layout as the native network (rotate-half), so the HF map only renames.
Meta's original checkpoints interleave the two halves of every rotary pair in wq/wk: going in we
permute them as transformers' convert_llama_weights_to_hf does, going out we apply the exact inverse.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

from mfcore import WeightMap

# One row per parameter: (native, Hugging Face, Meta) templates, {n} = layer index. None: the format
# has no such tensor (Meta's Llama has no q/k/v biases).
_NAMES = [
    ("model.tok_embeddings.embedding_weight", "model.embed_tokens.weight", "tok_embeddings.weight"),
    ("model.norm_out.weight", "model.norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight", "output.weight"),
    ("model.layers.{n}.attention.wq.weight", "model.layers.{n}.self_attn.q_proj.weight", "layers.{n}.attention.wq.weight"),
    ("model.layers.{n}.attention.wk.weight", "model.layers.{n}.self_attn.k_proj.weight", "layers.{n}.attention.wk.weight"),
    ("model.layers.{n}.attention.wv.weight", "model.layers.{n}.self_attn.v_proj.weight", "layers.{n}.attention.wv.weight"),
    ("model.layers.{n}.attention.wo.weight", "model.layers.{n}.self_attn.o_proj.weight", "layers.{n}.attention.wo.weight"),
    ("model.layers.{n}.attention.wq.bias", "model.layers.{n}.self_attn.q_proj.bias", None),
    ("model.layers.{n}.attention.wk.bias", "model.layers.{n}.self_attn.k_proj.bias", None),
    ("model.layers.{n}.attention.wv.bias", "model.layers.{n}.self_attn.v_proj.bias", None),
    ("model.layers.{n}.feed_forward.w1.weight", "model.layers.{n}.mlp.gate_proj.weight", "layers.{n}.feed_forward.w1.weight"),
    ("model.layers.{n}.feed_forward.w2.weight", "model.layers.{n}.mlp.down_proj.weight", "layers.{n}.feed_forward.w2.weight"),
    ("model.layers.{n}.feed_forward.w3.weight", "model.layers.{n}.mlp.up_proj.weight", "layers.{n}.feed_forward.w3.weight"),
    ("model.layers.{n}.attention_norm.weight", "model.layers.{n}.input_layernorm.weight", "layers.{n}.attention_norm.weight"),
    ("model.layers.{n}.ffn_norm.weight", "model.layers.{n}.post_attention_layernorm.weight", "layers.{n}.ffn_norm.weight"),
    # MindFormers' fused projections (qkv_concat: True); the other formats hold only their parts.
    ("model.layers.{n}.attention.w_qkv.weight", None, None),
    ("model.layers.{n}.attention.w_qkv.bias", None, None),
    ("model.layers.{n}.feed_forward.w_gate_hidden.weight", None, None),
]
_NATIVE, _HF, _META = 0, 1, 2
TIED = {"lm_head.weight": "model.tok_embeddings.embedding_weight"}


def _pattern(template: str) -> "re.Pattern":
    return re.compile(re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)"))


class _NameTable:
    """Renames between two columns of _NAMES."""

    def __init__(self, source: int, target: int):
        self.rows = [(_pattern(row[source]), row[target]) for row in _NAMES
                     if row[source] is not None and row[target] is not None]

    def __call__(self, name: str) -> Optional[str]:
        for pattern, template in self.rows:
            match = pattern.fullmatch(name)
            if match:
                return template.replace("{n}", match.group("n")) if "{n}" in template else template
        return None


hf_to_native = _NameTable(_HF, _NATIVE)
native_to_hf = _NameTable(_NATIVE, _HF)
meta_to_native = _NameTable(_META, _NATIVE)
native_to_meta = _NameTable(_NATIVE, _META)
_native_names = _NameTable(_NATIVE, _NATIVE)


def mindformers_name(name: str) -> Optional[str]:
    """MindFormers' names are the native ones: a name maps to itself when it is a Llama parameter."""
    return _native_names(name)


# Buffers some checkpoints carry that are not parameters (recomputed by the network).
_HF_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
_META_IGNORED = re.compile(r"rope\.freqs|layers\.\d+\.attention\.inner_attention\.rope\.freqs")


# -- shapes -------------------------------------------------------------------------------------------
def native_shapes(config) -> Dict[str, Tuple[int, ...]]:
    """Every parameter of the native Llama network for `config`, with its shape."""
    hidden, vocab, inter = config.hidden_size, config.vocab_size, config.intermediate_size
    head_dim = hidden // config.num_heads
    q_out, kv_out = config.num_heads * head_dim, config.n_kv_heads * head_dim
    shapes = {"model.tok_embeddings.embedding_weight": (vocab, hidden), "model.norm_out.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for n in range(config.num_layers):
        prefix = f"model.layers.{n}."
        shapes.update({
            prefix + "attention.wq.weight": (q_out, hidden), prefix + "attention.wk.weight": (kv_out, hidden),
            prefix + "attention.wv.weight": (kv_out, hidden), prefix + "attention.wo.weight": (hidden, q_out),
            prefix + "feed_forward.w1.weight": (inter, hidden), prefix + "feed_forward.w2.weight": (hidden, inter),
            prefix + "feed_forward.w3.weight": (inter, hidden),
            prefix + "attention_norm.weight": (hidden,), prefix + "ffn_norm.weight": (hidden,)})
        if getattr(config, "qkv_has_bias", False):
            shapes.update({prefix + "attention.wq.bias": (q_out,), prefix + "attention.wk.bias": (kv_out,),
                           prefix + "attention.wv.bias": (kv_out,)})
    return shapes


# -- MindFormers' fused projections (qkv_concat) ------------------------------------------------------
_FUSED = {"attention.w_qkv.weight": ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
          "attention.w_qkv.bias": ("attention.wq.bias", "attention.wk.bias", "attention.wv.bias"),
          "feed_forward.w_gate_hidden.weight": ("feed_forward.w1.weight", "feed_forward.w3.weight")}
_LAYER = re.compile(r"(model\.layers\.\d+\.)(.+)")


class LlamaFusions:
    """MindFormers r1.5.0's fused layouts (qkv_concat: True), between native names.

    w_qkv rows come per key/value head g: the n_rep query heads that share it, then its key head, then
    its value head. LLamaAttention reshapes the projection to (n_kv_heads, (n_rep + 2) * head_dim) and
    splits it so; its convert_weight.py builds it with qkv_concat_hf2mg. The bias follows the rows.
    w_gate_hidden rows alternate w1 and w3 row by row (LlamaFeedForward reshapes to (hidden_dim, 2)).
    (MindFormers up to r1.3 stacked [wq; wk; wv] and [w1; w3] plainly: not this layout.)
    split and fuse only move elements, so bfloat16 bits pass unchanged and round trips are exact.
    """

    @staticmethod
    def parts(fused: str) -> Optional[Tuple[str, ...]]:
        match = _LAYER.fullmatch(fused)
        if not match or match.group(2) not in _FUSED:
            return None
        return tuple(match.group(1) + part for part in _FUSED[match.group(2)])

    @staticmethod
    def fused_name(part: str) -> Optional[str]:
        match = _LAYER.fullmatch(part)
        for fused, parts in _FUSED.items():
            if match and match.group(2) in parts:
                return match.group(1) + fused
        return None

    @staticmethod
    def _groups(config) -> Tuple[int, int]:
        """(n_kv_heads, head_dim)."""
        return config.n_kv_heads, config.hidden_size // config.num_heads

    def split(self, fused: str, array, config):
        rows = array.shape[0]
        tail = array.shape[1:]
        if "w_gate_hidden" in fused:
            pairs = array.reshape((rows // 2, 2) + tail)
            return [pairs[:, 0], pairs[:, 1]]
        kv_heads, head_dim = self._groups(config)
        rep = config.num_heads // kv_heads
        groups = array.reshape((kv_heads, (rep + 2) * head_dim) + tail)
        q = groups[:, :rep * head_dim].reshape((rep * head_dim * kv_heads,) + tail)
        k = groups[:, rep * head_dim:(rep + 1) * head_dim].reshape((kv_heads * head_dim,) + tail)
        v = groups[:, (rep + 1) * head_dim:].reshape((kv_heads * head_dim,) + tail)
        return [q, k, v]

    def fuse(self, fused: str, arrays, config):
        import numpy as np

        if "w_gate_hidden" in fused:
            w1, w3 = arrays
            return np.stack([w1, w3], axis=1).reshape((2 * w1.shape[0],) + w1.shape[1:])
        q, k, v = arrays
        kv_heads, head_dim = self._groups(config)
        tail = q.shape[1:]
        groups = [a.reshape((kv_heads, -1) + tail) for a in (q, k, v)]
        return np.concatenate(groups, axis=1).reshape((q.shape[0] + k.shape[0] + v.shape[0],) + tail)


FUSIONS = LlamaFusions()


# -- Meta's rotary layout -------------------------------------------------------------------------------
def _heads_for(native_name: str, config) -> Optional[int]:
    if native_name.endswith("attention.wq.weight"):
        return config.num_heads
    if native_name.endswith("attention.wk.weight"):
        return config.n_kv_heads
    return None


def meta_to_native_transform(native_name: str, array, config):
    """Meta wq/wk rows (pairs interleaved per head) -> rotate-half layout (halves split per head)."""
    heads = _heads_for(native_name, config)
    if heads is None:
        return array
    rows, cols = array.shape
    return array.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def native_to_meta_transform(native_name: str, array, config):
    """Exact inverse of meta_to_native_transform."""
    heads = _heads_for(native_name, config)
    if heads is None:
        return array
    rows, cols = array.shape
    return array.reshape(heads, 2, rows // heads // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def meta_split_dim(meta_name: str, shard_shape: Tuple[int, ...], params: Mapping[str, Any]) -> Optional[int]:
    """Which dimension Meta's model-parallel code splits a tensor on (None: replicated in every shard).

    Column-parallel layers (wq, wk, wv, w1, w3, output) are split on their output rows, row-parallel
    ones (wo, w2) on their input columns. The embedding is split on the hidden dimension in Llama 2
    (ParallelEmbedding) and on the vocabulary in Llama 3 (VocabParallelEmbedding): the shard's shape says
    which. `params` is Meta's params.json.
    """
    if meta_name == "tok_embeddings.weight":
        return 0 if shard_shape[1] == params["dim"] else 1
    if meta_name == "output.weight" or re.search(r"\.(wq|wk|wv|w1|w3)\.weight$", meta_name):
        return 0
    if re.search(r"\.(wo|w2)\.weight$", meta_name):
        return 1
    return None


# -- configs ----------------------------------------------------------------------------------------------
_LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192}


def meta_config_to_native(params: Mapping[str, Any], shapes: Mapping[str, Tuple[int, ...]]) -> dict:
    """Meta params.json -> LlamaConfig kwargs. Values params.json leaves open come from the weights."""
    out = {"hidden_size": params["dim"], "num_layers": params["n_layers"], "num_heads": params["n_heads"],
           "n_kv_heads": params.get("n_kv_heads") or params["n_heads"],
           "rms_norm_eps": params.get("norm_eps", 1e-5), "multiple_of": params.get("multiple_of", 256),
           "ffn_dim_multiplier": params.get("ffn_dim_multiplier"), "theta": params.get("rope_theta", 10000.0)}
    vocab = params.get("vocab_size", -1)
    if (vocab is None or vocab <= 0) and "tok_embeddings.weight" in shapes:
        vocab = shapes["tok_embeddings.weight"][0]
    if vocab and vocab > 0:
        out["vocab_size"] = vocab
    if "layers.0.feed_forward.w1.weight" in shapes:  # exact even where multiple_of rounding is ambiguous
        out["intermediate_size"] = shapes["layers.0.feed_forward.w1.weight"][0]
    if params.get("max_seq_len"):
        out["seq_length"] = params["max_seq_len"]
    if params.get("use_scaled_rope"):
        out["rope_scaling"] = dict(_LLAMA31_SCALING)
    out["tie_word_embeddings"] = "output.weight" not in shapes
    return out


def _meta_ffn_params(config) -> Tuple[int, Optional[float]]:
    """(multiple_of, ffn_dim_multiplier) that make Meta's FFN rule give config.intermediate_size.

    The config's own values come first (a Meta checkpoint round-trips unchanged); a config from
    Hugging Face only knows the width, so look for values that reproduce it.
    """
    from .configuration_llama import meta_intermediate_size

    hidden, width = config.hidden_size, config.intermediate_size
    base = int(2 * (4 * hidden) / 3)
    for multiplier in (config.ffn_dim_multiplier, None, width / base):
        for multiple_of in (config.multiple_of, *(2 ** i for i in range(12, -1, -1))):
            if meta_intermediate_size(hidden, multiple_of, multiplier) == width:
                return multiple_of, multiplier
    warnings.warn(f"no multiple_of/ffn_dim_multiplier makes Meta's FFN rule give intermediate_size {width}; "
                  f"Meta's own code would build a different FFN width (mfcore reads it from the weights)",
                  UserWarning, stacklevel=3)
    return config.multiple_of, config.ffn_dim_multiplier


def meta_config_from_native(config) -> dict:
    """LlamaConfig -> Meta params.json (Meta's code derives the FFN width from multiple_of)."""
    multiple_of, multiplier = _meta_ffn_params(config)
    params = {"dim": config.hidden_size, "n_layers": config.num_layers, "n_heads": config.num_heads,
              "n_kv_heads": config.n_kv_heads, "vocab_size": config.vocab_size, "multiple_of": multiple_of,
              "ffn_dim_multiplier": multiplier, "norm_eps": config.rms_norm_eps, "rope_theta": config.theta}
    if config.rope_scaling:
        params["use_scaled_rope"] = True
    return params


def hf_config_from_native(config) -> dict:
    """LlamaConfig -> a Hugging Face config.json that transformers' LlamaForCausalLM loads."""
    data = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.n_kv_heads, "head_dim": config.hidden_size // config.num_heads,
            "hidden_act": "silu", "max_position_embeddings": config.max_position_embedding,
            "initializer_range": config.initializer_range, "rms_norm_eps": config.rms_norm_eps,
            "rope_theta": config.theta, "attention_bias": bool(config.qkv_has_bias), "attention_dropout": 0.0,
            "mlp_bias": False, "pretraining_tp": 1, "tie_word_embeddings": bool(config.tie_word_embeddings),
            "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id}
    if config.rope_scaling:
        data["rope_scaling"] = dict(config.rope_scaling)
    return data


def _matches(pattern):
    return lambda name: bool(pattern.fullmatch(name))


HF_WEIGHT_MAP = WeightMap(
    model_type="llama", source="hf", to_native=hf_to_native, from_native=native_to_hf,
    config_from_native=hf_config_from_native, ignore=_matches(_HF_IGNORED), native_shapes=native_shapes,
    tied=TIED, description="Hugging Face LlamaForCausalLM (transformers) names; no tensor changes")
META_WEIGHT_MAP = WeightMap(
    model_type="llama", source="meta", to_native=meta_to_native, from_native=native_to_meta,
    to_native_transform=meta_to_native_transform, from_native_transform=native_to_meta_transform,
    config_to_native=meta_config_to_native, config_from_native=meta_config_from_native,
    ignore=_matches(_META_IGNORED), native_shapes=native_shapes, tied=TIED, split_dim=meta_split_dim,
    description="Meta's original consolidated.NN.pth + params.json; wq/wk permuted to rotate-half")
# MindFormers' Llama names are the native ones.
MINDFORMERS_WEIGHT_MAP = WeightMap(
    model_type="llama", source="mindformers", to_native=mindformers_name, from_native=mindformers_name,
    native_shapes=native_shapes, tied=TIED, fusions=FUSIONS,
    description="MindFormers LlamaForCausalLM names (native); fused w_qkv / w_gate_hidden with qkv_concat")
