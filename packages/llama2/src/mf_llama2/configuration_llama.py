"""LlamaConfig: one config for Llama 2, Llama 3 and 3.1 (the network is the same; values differ).

Canonical names are MindFormers' (num_layers, num_heads, n_kv_heads, theta, seq_length, ...); Hugging
Face (num_hidden_layers, rope_theta, ...) and Meta params.json (dim, n_layers, norm_eps, ...) spellings
are aliases of them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from mfcore import ConfigError, PretrainedConfig
from mfcore.models.configuration import normalize_dtype

# Hugging Face keys that describe things this network fixes; accepted when they hold that value.
_HF_FIXED = {"hidden_act": "silu", "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1}
_ROPE_SCALING_KEYS = {"rope_type", "factor", "low_freq_factor", "high_freq_factor",
                      "original_max_position_embeddings"}


def llama_intermediate_size(hidden_size: int, multiple_of: int, ffn_dim_multiplier: Optional[float]) -> int:
    """MindFormers' FFN width rule (LlamaFeedForward), used when a config gives no intermediate_size:
    4*hidden, times (ffn_dim_multiplier + 0.01), then 2/3 of it, rounded up to multiple_of.

    The + 0.01 is MindFormers' own: it makes its 70B YAMLs (multiple_of 256, ffn_dim_multiplier 1.3) give
    the published 28672, where Meta's rule (meta_intermediate_size) gives 28416 at multiple_of 256. With
    Meta's own params.json values (multiple_of 4096 / 1024) both rules give the published widths."""
    width = 4 * hidden_size
    if ffn_dim_multiplier is not None:
        width = int((ffn_dim_multiplier + 0.01) * width)
    width = int(2 * width / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def meta_intermediate_size(hidden_size: int, multiple_of: int, ffn_dim_multiplier: Optional[float]) -> int:
    """Meta's FFN width rule (llama/model.py FeedForward): 2/3 of 4*hidden, scaled, rounded up to multiple_of.
    What Meta's code builds from a params.json (mf-llama2's Meta weight map writes values that fit it)."""
    width = int(2 * (4 * hidden_size) / 3)
    if ffn_dim_multiplier is not None:
        width = int(ffn_dim_multiplier * width)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def extend_method_rope_scaling(extend_method, scaling_factor, where: str = "model.model_config") -> Optional[dict]:
    """MindFormers' rotary extension keys -> a Hugging Face rope_scaling dict (None: plain rotary).

    extend_method LLAMA3 with scaling_factor {factor, low_freq_factor, high_freq_factor,
    original_max_position_embedding} is Llama 3.1's scaling; PI (position interpolation: positions divided
    by scaling_factor) is transformers' "linear" rope type."""
    method = "None" if extend_method is None else str(extend_method)
    if method == "None":
        return None
    if method == "LLAMA3":
        if not isinstance(scaling_factor, dict):
            raise ConfigError(f"{where}.scaling_factor", "extend_method LLAMA3 needs a mapping {factor, "
                                                         "low_freq_factor, high_freq_factor, "
                                                         f"original_max_position_embedding}}, got {scaling_factor!r}")
        keys = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embedding"}
        unknown, missing = set(scaling_factor) - keys, keys - set(scaling_factor)
        if unknown or missing:
            raise ConfigError(f"{where}.scaling_factor", f"extend_method LLAMA3 takes exactly {sorted(keys)}; "
                                                         f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        return {"rope_type": "llama3", "factor": float(scaling_factor["factor"]),
                "low_freq_factor": float(scaling_factor["low_freq_factor"]),
                "high_freq_factor": float(scaling_factor["high_freq_factor"]),
                "original_max_position_embeddings": int(scaling_factor["original_max_position_embedding"])}
    if method == "PI":
        if isinstance(scaling_factor, bool) or not isinstance(scaling_factor, (int, float)) or scaling_factor <= 0:
            raise ConfigError(f"{where}.scaling_factor", f"extend_method PI needs a positive number, got "
                                                         f"{scaling_factor!r}")
        return None if float(scaling_factor) == 1.0 else {"rope_type": "linear", "factor": float(scaling_factor)}
    raise ConfigError(f"{where}.extend_method", f"{method!r} is not supported here; use 'None', 'PI' or 'LLAMA3' "
                                                "(MindFormers' NTK and YARN rotary extensions are not implemented)")


class LlamaConfig(PretrainedConfig):
    model_type = "llama"
    attribute_map = {
        # Hugging Face
        "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
        "num_key_value_heads": "n_kv_heads", "rope_theta": "theta",
        "max_position_embeddings": "max_position_embedding", "attention_bias": "qkv_has_bias",
        # Meta params.json
        "dim": "hidden_size", "n_layers": "num_layers", "n_heads": "num_heads", "norm_eps": "rms_norm_eps",
        # MindFormers spellings that differ from the canonical ones
        "layernorm_compute_dtype": "layernorm_compute_type", "softmax_compute_dtype": "softmax_compute_type",
    }

    # MindFormers LlamaConfig keys that change nothing here, each with why: they choose Ascend kernels,
    # memory layouts or schedules that compute the same numbers, or belong to the task, not the network.
    # (Keys that do change the result are fields: embedding_init_type, qkv_concat, extend_method, ...;
    # ignore_token_id is checked in validate.)
    inert_keys = {
        "batch_size": "the batch size comes from the task (runner_config.batch_size / predict_batch_size)",
        "use_past": "generation always uses a KV cache, which gives the tokens a full recompute gives",
        "use_flash_attention": "attention is computed directly: the same softmax(QK^T)V a flash kernel computes",
        "use_flash_attention_mask": "an Ascend flash-attention kernel option; no such kernel here",
        "block_size": "paged attention (a KV-cache memory layout) is not used: same attention",
        "num_blocks": "paged attention (a KV-cache memory layout) is not used: same attention",
        "fine_grain_interleave": "Ascend communication / compute overlap under model parallel",
        "pp_interleave_num": "pipeline-parallel scheduling (pipeline_stage > 1 is refused here)",
        "offset": "layers per pipeline stage (pipeline_stage > 1 is refused here)",
        "parallel_config": "sharding of the network over devices; the task's parallel_config is read",
        "checkpoint_name_or_path": "read by `mfcore run` from the task (the weights when load_checkpoint is "
                                   "empty), not by the network",
        "ignore_token_id": "labels -100 are left out of the loss, MindFormers' default (another value is refused)",
        "use_rope_slice": "an Ascend kernel choice for the same rotary embedding",
        "is_dynamic": "dynamic-shape graphs on Ascend; here shapes are bucketed, same results",
        "auto_map": "remote code is never run; model classes come from installed plugins",
    }

    def __init__(self, vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, n_kv_heads=None,
                 intermediate_size=None, multiple_of=256, ffn_dim_multiplier=None, rms_norm_eps=1e-5,
                 theta=10000.0, rope_scaling=None, seq_length=2048, max_position_embedding=None,
                 initializer_range=0.02, qkv_has_bias=False, compute_dtype="float32",
                 param_init_type="float32", layernorm_compute_type="float32", softmax_compute_type="float32",
                 rotary_dtype="float32", bos_token_id=1, eos_token_id=2, pad_token_id=0,
                 tie_word_embeddings=False, qkv_concat=False, extend_method=None, scaling_factor=None,
                 embedding_init_type=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.n_kv_heads = n_kv_heads
        self.intermediate_size = intermediate_size
        self.multiple_of = multiple_of
        self.ffn_dim_multiplier = ffn_dim_multiplier
        self.rms_norm_eps = rms_norm_eps
        self.theta = theta
        self.seq_length = seq_length
        self.max_position_embedding = max_position_embedding
        self.initializer_range = initializer_range
        self.qkv_has_bias = qkv_has_bias
        self.compute_dtype = compute_dtype
        self.param_init_type = param_init_type
        self.layernorm_compute_type = layernorm_compute_type
        self.softmax_compute_type = softmax_compute_type
        self.rotary_dtype = rotary_dtype
        self.embedding_init_type = embedding_init_type  # MindFormers: the embedding table's dtype (None: param_init_type)
        # MindFormers: q/k/v and gate/up projections stored fused (w_qkv, w_gate_hidden), as its checkpoints
        self.qkv_concat = qkv_concat
        if rope_scaling is None:  # MindFormers' spelling of the rotary extension (a rope_scaling given wins)
            rope_scaling = extend_method_rope_scaling(extend_method, scaling_factor, "model_config")
        self.rope_scaling = rope_scaling
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def normalize_keys(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        data = dict(data)
        # transformers >= 5 nests theta and scaling in rope_parameters.
        rope_parameters = data.pop("rope_parameters", None)
        if isinstance(rope_parameters, dict):
            if "rope_theta" in rope_parameters:
                data.setdefault("rope_theta", rope_parameters["rope_theta"])
            if rope_parameters.get("rope_type", "default") != "default":
                data.setdefault("rope_scaling", {k: v for k, v in rope_parameters.items() if k != "rope_theta"})
        for key, expected in _HF_FIXED.items():
            if key in data:
                value = data.pop(key)
                if value != expected:
                    raise ConfigError(key, f"Llama uses {expected!r}; {value!r} is not supported")
        head_dim = data.pop("head_dim", None)
        # The storage dtype of HF weights: 16-bit checkpoints stay 16-bit (transformers 5's dtype="auto"; an
        # 8B model upcast to float32 does not fit a 24 GB machine); compute_dtype stays as configured, and
        # `dtype=` of from_pretrained still decides when given.
        stored = [data.pop(key, None) for key in ("torch_dtype", "dtype")]
        stored = next((str(value).replace("torch.", "") for value in stored if value), None)
        if stored in ("bfloat16", "float16") and "param_init_type" not in data:
            data["param_init_type"] = stored
        data = super().normalize_keys(data)
        if head_dim is not None and data.get("hidden_size") and data.get("num_heads") and \
                head_dim != data["hidden_size"] // data["num_heads"]:
            raise ConfigError("head_dim", f"{head_dim} != hidden_size / num_heads; not supported")
        return data

    def validate(self) -> None:
        super().validate()
        for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "seq_length", "multiple_of"):
            self.check_positive_int(field, getattr(self, field))
        if self.n_kv_heads is None:
            self.n_kv_heads = self.num_heads
        self.check_positive_int("n_kv_heads", self.n_kv_heads)
        if self.hidden_size % self.num_heads:
            raise ConfigError("num_heads", f"{self.num_heads} must divide hidden_size {self.hidden_size}")
        if self.num_heads % self.n_kv_heads:
            raise ConfigError("n_kv_heads", f"{self.n_kv_heads} must divide num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ConfigError("num_heads", f"head size hidden_size/num_heads = {self.hidden_size // self.num_heads} "
                                           "must be even for rotary embeddings")
        if self.ffn_dim_multiplier is not None:
            self.check_positive_number("ffn_dim_multiplier", self.ffn_dim_multiplier)
        if self.intermediate_size is None:
            self.intermediate_size = llama_intermediate_size(self.hidden_size, self.multiple_of,
                                                             self.ffn_dim_multiplier)
        self.check_positive_int("intermediate_size", self.intermediate_size)
        self.check_positive_number("rms_norm_eps", self.rms_norm_eps)
        self.check_positive_number("theta", self.theta)
        if self.max_position_embedding is None:
            self.max_position_embedding = self.seq_length
        self.check_positive_int("max_position_embedding", self.max_position_embedding)
        for field in ("compute_dtype", "param_init_type", "layernorm_compute_type", "softmax_compute_type",
                      "rotary_dtype"):
            setattr(self, field, normalize_dtype(getattr(self, field), field))
        ignored = getattr(self, "ignore_token_id", -100)
        if ignored != -100:
            raise ConfigError("ignore_token_id", f"{ignored!r}: the loss leaves out labels -100 (MindFormers' "
                                                 "default); write masked labels as -100")
        if self.embedding_init_type is not None:
            self.embedding_init_type = normalize_dtype(self.embedding_init_type, "embedding_init_type")
        self._validate_rope_scaling()
        if not isinstance(self.qkv_concat, bool):
            raise ConfigError("qkv_concat", f"must be true or false, got {self.qkv_concat!r}")
        for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, field)
            for token in value if isinstance(value, (list, tuple)) else [value]:
                if token is not None and token >= self.vocab_size:
                    raise ConfigError(field, f"{token} is outside the vocabulary (vocab_size {self.vocab_size})")

    def _validate_rope_scaling(self) -> None:
        scaling = self.rope_scaling
        if scaling is None:
            return
        if not isinstance(scaling, dict):
            raise ConfigError("rope_scaling", f"must be a mapping or null, got {scaling!r}")
        scaling = dict(scaling)
        if "type" in scaling:  # older transformers spelling
            scaling.setdefault("rope_type", scaling.pop("type"))
        rope_type = scaling.get("rope_type")
        if rope_type in (None, "default"):
            self.rope_scaling = None
            return
        if rope_type == "linear":
            if set(scaling) - {"rope_type", "factor"}:
                raise ConfigError("rope_scaling", f"rope_type 'linear' takes only factor, got {sorted(scaling)}")
            self.check_positive_number("rope_scaling.factor", scaling.get("factor"))
            self.rope_scaling = scaling
            return
        if rope_type != "llama3":
            raise ConfigError("rope_scaling.rope_type", f"{rope_type!r} is not supported; use 'llama3', 'linear' "
                                                        "or null")
        unknown = set(scaling) - _ROPE_SCALING_KEYS
        if unknown:
            raise ConfigError("rope_scaling", f"unknown key(s) {sorted(unknown)}")
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if key not in scaling:
                raise ConfigError(f"rope_scaling.{key}", "required for rope_type 'llama3'")
            self.check_positive_number(f"rope_scaling.{key}", scaling[key])
        if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
            raise ConfigError("rope_scaling.high_freq_factor", "must be greater than low_freq_factor")
        self.rope_scaling = scaling
