"""Llama parameter names in foreign checkpoint formats, mapped to mfcore's native names.

Native names are MindFormers' Llama names, so a MindFormers checkpoint loads as is. Hugging Face
stores q/k in the same rotary layout as the native network (rotate-half), so the HF map only renames.
"""
from __future__ import annotations

import re
from typing import Optional

from mfcore import WeightMap

# (Hugging Face regex, native template) pairs; layer index captured as group 1.
_HF_TO_NATIVE = [
    (r"model\.embed_tokens\.weight", "model.tok_embeddings.embedding_weight"),
    (r"model\.norm\.weight", "model.norm_out.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"model.layers.\1.attention.wq.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", r"model.layers.\1.attention.wk.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", r"model.layers.\1.attention.wv.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"model.layers.\1.attention.wo.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"model.layers.\1.feed_forward.w1.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"model.layers.\1.feed_forward.w2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"model.layers.\1.feed_forward.w3.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"model.layers.\1.attention_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"model.layers.\1.ffn_norm.weight"),
]
# HF buffers that are not parameters (older checkpoints carry them): dropped on the way in.
_HF_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def _invert(pairs):
    """Native regex -> HF template, built from the same table so both directions stay in step."""
    inverted = []
    for pattern, template in pairs:
        groups = iter(re.findall(r"\((?:[^()]|\([^()]*\))*\)", pattern))
        native_pattern = re.escape(template)
        for index in (1, 2):
            native_pattern = native_pattern.replace(rf"\\{index}", next(groups, ""), 1)
        hf_template = pattern.replace(r"\.", ".")
        counter = iter(range(1, 3))
        hf_template = re.sub(r"\((?:[^()]|\([^()]*\))*\)", lambda _m: rf"\{next(counter)}", hf_template)
        inverted.append((native_pattern, hf_template))
    return inverted


def _rename(pairs, name: str) -> Optional[str]:
    for pattern, template in pairs:
        match = re.fullmatch(pattern, name)
        if match:
            return match.expand(template)
    return None


_NATIVE_TO_HF = _invert(_HF_TO_NATIVE)


def hf_to_native(name: str) -> Optional[str]:
    """'model.layers.0.self_attn.q_proj.weight' -> 'model.layers.0.attention.wq.weight' (None: unmapped)."""
    if _HF_IGNORED.fullmatch(name):
        return None
    return _rename(_HF_TO_NATIVE, name)


def native_to_hf(name: str) -> Optional[str]:
    return _rename(_NATIVE_TO_HF, name)


def _identity(name: str) -> Optional[str]:
    return name


HF_WEIGHT_MAP = WeightMap(model_type="llama", source="hf", to_native=hf_to_native, from_native=native_to_hf,
                          description="Hugging Face LlamaForCausalLM (transformers) names; no tensor changes")
# MindFormers' Llama names are the native ones.
MINDFORMERS_WEIGHT_MAP = WeightMap(model_type="llama", source="mindformers", to_native=_identity,
                                   from_native=_identity, description="MindFormers LlamaForCausalLM names")
