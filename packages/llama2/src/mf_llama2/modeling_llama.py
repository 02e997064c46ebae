"""The Llama network (Llama 2, 3 and 3.1) on MindSpore, whole, in one file.

Token embedding -> N x [RMSNorm -> grouped-query attention with rotary embeddings -> residual ->
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> output head (tied to the embedding or not).

Parameter names are MindFormers' Llama names (model.tok_embeddings.embedding_weight,
model.layers.N.attention.wq.weight, ...), so MindFormers checkpoints load as they are. Rotary embeddings
use the rotate-half layout of Hugging Face checkpoints (their q/k need no permutation).

Two entry points share the layers:
- `construct(input_ids, labels=None, ...)`: the whole sequence at once; logits, or the loss with labels.
- `forward_with_cache(...)`: generation; keys/values live in fixed-size cache tensors (one per layer
  for k and for v, shape (batch, kv_heads, cache_length, head_dim)) so that one compiled graph serves
  every decode step. See mfcore.generation. The one-token step is the hot path: it runs on 2-D hidden
  states and applies rotary embeddings as one batched matmul, because on CPU MindSpore's cost is mostly
  per kernel launched, not per flop.
Norms, softmax and rotary run in float32 whatever the compute dtype (as the config's *_compute_type).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import mindspore
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import Normal, One, Zero, initializer

from mfcore.errors import ConfigError
from mfcore.kernels import decode_kernels, status as kernels_status
from mfcore.kernels.cpu import pack_bf16_blocks
from mfcore.models.modeling import MS_DTYPES, PreTrainedModel
from mfcore.models.quantization import QuantizationConfig

from .configuration_llama import LlamaConfig

MASK_VALUE = -1e9  # additive attention bias of a masked position (finite: a fully masked row gives no NaN)
IGNORE_INDEX = -100


# -- pure math: rotary frequencies ----------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float, rope_scaling: Optional[dict] = None) -> np.ndarray:
    """Inverse frequencies of rotary embeddings (float32, head_dim // 2), with Llama 3.1's scaling.

    Llama 3.1 ("llama3" rope type) divides low frequencies by `factor`, keeps high ones, and blends
    linearly in between, by wavelength relative to the original context length.
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)
    if not rope_scaling:
        return inv_freq
    factor = np.float32(rope_scaling["factor"])
    if rope_scaling.get("rope_type") == "linear":  # position interpolation (MindFormers' PI): positions / factor
        return (inv_freq / factor).astype(np.float32)
    low, high = np.float32(rope_scaling["low_freq_factor"]), np.float32(rope_scaling["high_freq_factor"])
    old_context = np.float32(rope_scaling["original_max_position_embeddings"])
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rotate_half_matrix(head_dim: int) -> np.ndarray:
    """P with x @ P == rotate_half(x) == cat(-x[half:], x[:half]): one matmul instead of four ops, exact."""
    half = head_dim // 2
    matrix = np.zeros((head_dim, head_dim), dtype=np.float32)
    matrix[np.arange(half) + half, np.arange(half)] = -1.0
    matrix[np.arange(half), np.arange(half) + half] = 1.0
    return matrix


def _cast(x, dtype):
    """Cast only when needed: the dtype is known while the graph is built, so no op is emitted otherwise."""
    return x if x.dtype == dtype else ops.cast(x, dtype)


# -- layers ---------------------------------------------------------------------------------------

def quantized_layers(config: LlamaConfig, parent: str):
    """name -> whether the linear layer `parent.name` holds int8 weights (config.quantization_config)."""
    quantization = QuantizationConfig.from_value(getattr(config, "quantization_config", None))
    if quantization is None:
        return lambda name: False
    return lambda name: quantization.converts(f"{parent}.{name}" if parent else name)


def fused_kernels(dtype):
    """mfcore's fused CPU kernels for float32 decode steps, or None (then MindSpore's ops); see
    mfcore.kernels.cpu."""
    return decode_kernels() if dtype == mindspore.float32 else None


def single_row(x) -> bool:
    """x is one decode row (1, features): where the fused matrix-vector kernels serve (at batch 8
    MindSpore's MatMul is the faster, while the fused RMSNorm pays at any batch; benchmarks/RESULTS.md,
    "Generate"). Static shapes: decided while the graph is traced."""
    return x.ndim == 2 and x.shape[0] == 1


def storage_linear(param_dtype, compute_dtype):
    """The kernel computing x W^T in float32 straight from 16-bit weights (CPU, float32 compute), or None:
    MindSpore would otherwise upcast the whole weight on every call (mfcore.kernels.cpu)."""
    if compute_dtype != mindspore.float32 or param_dtype not in (mindspore.bfloat16, mindspore.float16):
        return None
    kernels = decode_kernels()
    if kernels is None:
        return None
    return kernels.linear_bf16 if param_dtype == mindspore.bfloat16 else kernels.linear_f16


def bfloat16_projections(param_dtype, compute_dtype):
    """The kernels computing several bfloat16 projections of one x in one call (q, k and v; the MLP's gate and
    up with its activation), or None: one parallel region and one rounding of x instead of two or three
    (mfcore.kernels.cpu). Generation only: they have no gradient."""
    if compute_dtype != mindspore.float32 or param_dtype != mindspore.bfloat16:
        return None
    return decode_kernels()


def int8_linear():
    kernels = decode_kernels()
    if kernels is None:
        raise ConfigError("quantization_config", "int8 weights run on mfcore's CPU kernels, which are off here "
                                                 f"({kernels_status()}); load the model without quantization")
    return kernels.linear_int8


def linear(x, weight, bias=None, gemv=None):
    """x W^T (+ b); a single decode row goes to `gemv` when there is one (forward only)."""
    if gemv is not None and bias is None and single_row(x):
        return gemv(x, weight)
    return mint.nn.functional.linear(x, weight, bias)


class LlamaLinear(nn.Cell):
    """y = x W^T (+ b). Weights are stored in the param dtype and used in the compute dtype."""

    def __init__(self, in_features, out_features, has_bias=False, param_dtype=mindspore.float32,
                 compute_dtype=mindspore.float32, init_std=0.02, init_weights=True, quantized=False):
        super().__init__()
        weight_init = Normal(init_std) if init_weights else Zero()
        self.weight_scale = None
        if quantized:  # round-to-nearest int8, one scale per output channel (mfcore.models.quantization)
            self.weight = Parameter(initializer(Zero(), (out_features, in_features), mindspore.int8), name="weight",
                                    requires_grad=False)
            self.weight_scale = Parameter(initializer(One(), (out_features,), mindspore.float32),
                                          name="weight_scale", requires_grad=False)
            self.storage_op = int8_linear()
        else:
            self.weight = Parameter(initializer(weight_init, (out_features, in_features), param_dtype), name="weight")
            self.storage_op = storage_linear(param_dtype, compute_dtype)
        self.bias = Parameter(initializer(Zero(), (out_features,), param_dtype), name="bias") if has_bias else None
        self.compute_dtype = compute_dtype
        kernels = fused_kernels(compute_dtype) if self.storage_op is None else None
        self.gemv = kernels.gemv if kernels else None
        # x W^T on a bfloat16 weight read by the storage kernel, nothing else: generation may then compute this
        # layer together with its siblings (bfloat16_projections). A LoRA cell in its place says False.
        self.bf16_fusable = (not quantized and not has_bias and self.storage_op is not None
                             and param_dtype == mindspore.bfloat16)
        self.packed = False  # the weight stored by pack_bf16_blocks (pack_for_inference)

    def pack_for_inference(self) -> bool:
        """Store the bfloat16 weight in the tiles' blocks (mfcore.kernels.cpu.pack_bf16_blocks) and read it with
        the packed kernel; False where that does not apply (other dtypes, a bias, K not a multiple of 32, or
        no vdpbf16ps here, where every call would unpack it)."""
        kernels = decode_kernels()
        if self.packed or not self.bf16_fusable or kernels is None or not kernels.has_bf16_dot \
                or self.weight.shape[1] % 32:
            return False
        bits = self.weight.view(mindspore.int16).asnumpy().view(np.uint16)
        self.weight.set_data(Tensor.from_numpy(pack_bf16_blocks(bits).view(np.int16)).view(mindspore.bfloat16))
        self.storage_op = kernels.linear_bf16_packed
        self.packed = True
        return True

    def construct(self, x):
        bias = None if self.bias is None else _cast(self.bias, self.compute_dtype)
        if self.storage_op is not None:  # weights read in their storage dtype, float32 out
            y = self.storage_op(x, self.weight) if self.weight_scale is None else \
                self.storage_op(x, self.weight, self.weight_scale)
            return y if bias is None else y + bias
        return linear(x, _cast(self.weight, self.compute_dtype), bias, self.gemv)


class LlamaEmbedding(nn.Cell):
    def __init__(self, vocab_size, hidden_size, param_dtype, compute_dtype, init_std=0.02, init_weights=True):
        super().__init__()
        self.compute_dtype = compute_dtype
        weight_init = Normal(init_std) if init_weights else Zero()
        self.embedding_weight = Parameter(initializer(weight_init, (vocab_size, hidden_size), param_dtype),
                                          name="embedding_weight")
        kernels = decode_kernels() if param_dtype == mindspore.bfloat16 and compute_dtype == mindspore.float32 \
            else None
        self.gather_bf16 = kernels.embed_bf16 if kernels else None  # rows widened, the table never is

    def construct(self, input_ids):
        if self.gather_bf16 is not None:
            return self.gather_bf16(input_ids, self.embedding_weight)
        # mint's embedding has no CPU kernel; Gather has none for bfloat16 either, hence the cast first.
        return ops.gather(_cast(self.embedding_weight, self.compute_dtype), input_ids, 0)


class LlamaRMSNorm(nn.Cell):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (as Hugging Face and MindFormers do)."""

    def __init__(self, hidden_size, eps, param_dtype):
        super().__init__()
        self.weight = Parameter(initializer(One(), (hidden_size,), param_dtype), name="weight")
        self.eps = eps
        kernels = decode_kernels()  # float32 math whatever the weight's dtype (cast once per call: H values)
        self.fused = kernels.rms_norm if kernels else None
        self.eps_tensor = Tensor([eps], mindspore.float32)

    def construct(self, x):
        if x.ndim == 2:  # decode rows (any batch): only generation runs 2-D hidden states
            return self.inference(x)
        return self.norm(x)

    def inference(self, x):
        """The same norm for generation (forward only): one fused kernel instead of six where there is one."""
        if self.fused is not None and x.dtype == mindspore.float32:
            return self.fused(x, _cast(self.weight, mindspore.float32), self.eps_tensor)
        return self.norm(x)

    def norm(self, x):
        x32 = _cast(x, mindspore.float32)
        variance = mint.mean(x32 * x32, -1, keepdim=True)
        return _cast(self.weight, x.dtype) * _cast(x32 * mint.rsqrt(variance + self.eps), x.dtype)


class LlamaAttention(nn.Cell):
    """Grouped-query attention: `n_kv_heads` key/value heads, each shared by num_heads / n_kv_heads queries."""

    def __init__(self, config: LlamaConfig, param_dtype, compute_dtype, init_weights=True):
        super().__init__()
        self.num_heads = config.num_heads
        self.n_kv_heads = config.n_kv_heads
        self.n_rep = config.num_heads // config.n_kv_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.scaling = self.head_dim ** -0.5
        self.compute_dtype = compute_dtype
        kv_size = self.n_kv_heads * self.head_dim
        std = config.initializer_range
        linear = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, init_std=std, init_weights=init_weights)
        quantized = quantized_layers(config, "attention")
        if config.qkv_concat:  # MindFormers' fused w_qkv, laid out as in its r1.5.0 checkpoints (qkv below)
            self.w_qkv = LlamaLinear(config.hidden_size, config.hidden_size + 2 * kv_size, config.qkv_has_bias,
                                     **linear, quantized=quantized("w_qkv"))
            self.wq = self.wk = self.wv = None
        else:
            self.w_qkv = None
            self.wq = LlamaLinear(config.hidden_size, config.hidden_size, config.qkv_has_bias, **linear,
                                  quantized=quantized("wq"))
            self.wk = LlamaLinear(config.hidden_size, kv_size, config.qkv_has_bias, **linear,
                                  quantized=quantized("wk"))
            self.wv = LlamaLinear(config.hidden_size, kv_size, config.qkv_has_bias, **linear,
                                  quantized=quantized("wv"))
        self.wo = LlamaLinear(config.hidden_size, config.hidden_size, False, **linear, quantized=quantized("wo"))
        self.matmul_qk = ops.BatchMatMul(transpose_b=True)
        kernels = fused_kernels(compute_dtype)  # float32 prompt attention that skips masked cache slots
        self.prompt_attention = kernels.attention if kernels else None
        self.decode_attention = kernels.decode_attention if kernels else None
        self.decode_attention_in_place = kernels.decode_attention_in_place if kernels else None
        self.cache_attention = kernels.cache_attention if kernels else None
        self.cache_attention_in_place = kernels.cache_attention_in_place if kernels else None
        projections = bfloat16_projections(param_dtype, compute_dtype)
        self.qkv_bf16 = projections.linear_qkv_bf16 if projections else None
        self.qkv_bf16_packed = projections.linear_qkv_bf16_packed if projections else None

    def qkv_inference(self, x):
        """qkv() for generation (forward only): one kernel for the three projections where they allow it (at 16
        rows 1.01-1.03x a decode step, 1.02-1.04x at 1-4; a 16-prompt packed prefill 1.027x)."""
        if self.qkv_bf16 is None or self.w_qkv is not None or not self.wq.bf16_fusable or not self.wk.bf16_fusable \
                or not self.wv.bf16_fusable:
            return self.qkv(x)
        if self.wq.packed and self.wk.packed and self.wv.packed:
            return self.qkv_bf16_packed(x, self.wq.weight, self.wk.weight, self.wv.weight)
        if not (self.wq.packed or self.wk.packed or self.wv.packed):
            return self.qkv_bf16(x, self.wq.weight, self.wk.weight, self.wv.weight)
        return self.qkv(x)

    def qkv(self, x):
        """The q, k and v projections of x (flat heads), from wq/wk/wv or the fused w_qkv. MindFormers r1.5.0
        groups w_qkv's rows per key/value head: its n_rep query heads, its key head, its value head
        (LLamaAttention reshapes to (n_kv_heads, (n_rep + 2) * head_dim); mf_llama2.weight_maps.LlamaFusions)."""
        if self.w_qkv is None:
            return self.wq(x), self.wk(x), self.wv(x)
        qkv = self.w_qkv(x)
        lead, q_size = qkv.shape[:-1], self.n_rep * self.head_dim
        groups = qkv.reshape(lead + (self.n_kv_heads, q_size + 2 * self.head_dim))
        q = groups[..., :q_size].reshape(lead + (self.num_heads * self.head_dim,))
        k = groups[..., q_size:q_size + self.head_dim].reshape(lead + (self.n_kv_heads * self.head_dim,))
        v = groups[..., q_size + self.head_dim:].reshape(lead + (self.n_kv_heads * self.head_dim,))
        return q, k, v

    def project(self, x, cos, sin, rotate):
        """q, k, v as (B, S, heads, D), rotary embeddings applied to q and k."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x)
        q = q.reshape(batch, length, self.num_heads, self.head_dim)
        k = k.reshape(batch, length, self.n_kv_heads, self.head_dim)
        v = v.reshape(batch, length, self.n_kv_heads, self.head_dim)
        return self.apply_rotary(q, cos, sin, rotate), self.apply_rotary(k, cos, sin, rotate), v

    @staticmethod
    def apply_rotary(x, cos, sin, rotate):
        """x * cos + rotate_half(x) * sin in float32 (rotate: the rotate-half matrix, applied as one 2-D
        matmul over all rows)."""
        x32 = _cast(x, mindspore.float32)
        rotated = mint.matmul(x32.reshape(-1, x.shape[-1]), rotate).reshape(x.shape)
        return _cast(x32 * cos + rotated * sin, x.dtype)

    def attend(self, q, k, v, bias, scaled_q=False):
        """softmax(q k^T * scale + bias) v. q (B, kv_heads, n_rep, S, D) grouped by kv head, k and v
        (B, kv_heads, T, D), bias (B or 1, 1, 1, S, T) holding 0 or MASK_VALUE. scaled_q: q already
        carries the 1/sqrt(D) scale."""
        batch, _, _, length, _ = q.shape
        keys = k.shape[2]
        # Query head h = g * n_rep + r uses kv head g: fold the group into rows instead of copying k, v.
        q = q.reshape(batch, self.n_kv_heads, self.n_rep * length, self.head_dim)
        scores = self.matmul_qk(q, k)
        if not scaled_q:
            scores = scores * self.scaling
        scores = _cast(scores, mindspore.float32).reshape(batch, self.n_kv_heads, self.n_rep, length, keys)
        probs = _cast(mint.softmax(scores + bias, dim=-1), self.compute_dtype)
        out = mint.matmul(probs.reshape(batch, self.n_kv_heads, self.n_rep * length, keys), v)
        return out.reshape(batch, self.n_kv_heads, self.n_rep, length, self.head_dim)

    def attend_cached(self, q, k, v, bias):
        """attend() for generation (q scaled): mfcore's kernel where it is built, which computes only the
        columns the bias lets each query see (a prompt chunk early in a long cache sees few)."""
        if self.prompt_attention is None:
            return self.attend(q, k, v, bias, scaled_q=True)
        return self.prompt_attention(q, k, v, bias)

    def prefix_heads(self, prefix, batch):
        """Prefix-tuning keys and values (2, B, P, W) -> k, v (B, kv_heads, P', D) in the compute dtype, as
        MindFormers' _cat_prefix splits them (P' = P * W / (kv_heads * D)); no rotary embedding on them."""
        k = prefix[0].reshape(batch, -1, self.n_kv_heads, self.head_dim).permute(0, 2, 1, 3)
        v = prefix[1].reshape(batch, -1, self.n_kv_heads, self.head_dim).permute(0, 2, 1, 3)
        return _cast(k, self.compute_dtype), _cast(v, self.compute_dtype)

    def construct(self, x, cos, sin, rotate, bias, prefix=None):
        """bias covers the prefix columns first when a prefix (prefix-tuning / P-tuning v2) is given."""
        batch, length, _ = x.shape
        q, k, v = self.project(x, cos, sin, rotate)
        q = q.reshape(batch, length, self.n_kv_heads, self.n_rep, self.head_dim).permute(0, 2, 3, 1, 4)
        k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        if prefix is not None:
            prefix_k, prefix_v = self.prefix_heads(prefix, batch)
            k, v = mint.cat((prefix_k, k), dim=2), mint.cat((prefix_v, v), dim=2)
        out = self.attend(q, k, v, bias)
        return self.wo(out.permute(0, 3, 1, 2, 4).reshape(batch, length, self.num_heads * self.head_dim))

    def forward_with_cache(self, x, rope, bias, cache_slot, k_cache, v_cache, prefix=None, in_place=False):
        """rope = (rotation_q, rotation_k), each position's rotary matrix (B * S, D, D) (LlamaModel.rotation).
        A prompt x (B, S, hidden): attend within it and store it in cache slots 0..S-1 (after the prefix's
        slots when there is a prefix). A later chunk of a prompt, cache_slot (T,) naming the chunk's token
        each slot takes (S: none): write the chunk there and attend over the whole cache (one graph for every
        chunk, so a long prompt's intermediate buffers are a chunk's, not the prompt's). One token per row,
        x (B, hidden):
        write it at `cache_slot` and attend over the whole cache (decode_one)."""
        if x.ndim == 2:
            return self.decode_one(x, rope[0], rope[1], bias, cache_slot, k_cache, v_cache, in_place)
        batch, length, _ = x.shape
        chunk = cache_slot.ndim == 1
        q, k, v = self.qkv_inference(x)
        # Rotary as one batched matmul per q and k (3 kernels fewer each than project's cos/sin form).
        q = self.rotate_rows(q.reshape(batch * length, self.num_heads, self.head_dim), rope[0])
        k = self.rotate_rows(k.reshape(batch * length, self.n_kv_heads, self.head_dim), rope[1])
        v = v.reshape(batch, length, self.n_kv_heads, self.head_dim)
        q = q.reshape(batch, length, self.n_kv_heads, self.n_rep, self.head_dim).permute(0, 2, 3, 1, 4)
        k = k.reshape(batch, length, self.n_kv_heads, self.head_dim).permute(0, 2, 1, 3)
        v = v.permute(0, 2, 1, 3)
        if self.cache_attention is not None and (chunk or prefix is None):  # one kernel: cache write + attention
            if not chunk:  # the prompt: slot j takes token j, the attention sees the prompt's own S slots
                cache_slot = mint.clamp(ops.arange(0, k_cache.shape[2], dtype=mindspore.int32), max=length)
            if in_place:  # a chunk into the given caches themselves (LlamaForCausalLM.forward_with_cache)
                out = self.cache_attention_in_place(q, k, v, k_cache, v_cache, bias, cache_slot)
            else:
                out, k_cache, v_cache = self.cache_attention(q, k, v, k_cache, v_cache, bias, cache_slot)
        elif chunk:  # copy the chunk's keys and values to their slots (a gather from them + one zero row)
            written = (cache_slot < length).reshape(1, 1, -1, 1)
            zero = ops.zeros((batch, self.n_kv_heads, 1, self.head_dim), k_cache.dtype)
            k_cache = mint.where(written, ops.gather(mint.cat((_cast(k, k_cache.dtype), zero), dim=2), cache_slot, 2),
                                 k_cache)
            v_cache = mint.where(written, ops.gather(mint.cat((_cast(v, v_cache.dtype), zero), dim=2), cache_slot, 2),
                                 v_cache)
            out = self.attend_cached(q, k_cache, v_cache, bias)
        else:
            if prefix is not None:
                prefix_k, prefix_v = self.prefix_heads(prefix, batch)
                k, v = mint.cat((prefix_k, k), dim=2), mint.cat((prefix_v, v), dim=2)
                length = length + prefix_k.shape[2]
            out = self.attend_cached(q, k, v, bias)
            k_cache = mint.cat((k, k_cache[:, :, length:]), dim=2)
            v_cache = mint.cat((v, v_cache[:, :, length:]), dim=2)
        out = out.permute(0, 3, 1, 2, 4).reshape(batch, x.shape[1], self.num_heads * self.head_dim)
        return self.wo(out), k_cache, v_cache

    def rotate_rows(self, x, rotation):
        """Rotary embedding of x (rows, heads, D) with each row's matrix (rows, D, D), in float32."""
        return _cast(mint.bmm(_cast(x, mindspore.float32), rotation), self.compute_dtype)

    def decode_one(self, x, rotation_q, rotation_k, bias, cache_slot, k_cache, v_cache, in_place=False):
        """One new token per row on 2-D hidden states (B, hidden): the decode hot path.

        Rotary embedding is one batched matmul with each row's rotation matrix (B, D, D), built once per
        step (LlamaForCausalLM.rotation); rotation_q also carries the 1/sqrt(D) score scale. No
        transposes. bias (B, 1, 1, T), cache_slot (1, 1, T, 1)."""
        batch = x.shape[0]
        q, k, v = self.qkv_inference(x)
        q = self.rotate_rows(q.reshape(batch, self.num_heads, self.head_dim), rotation_q)
        k = self.rotate_rows(k.reshape(batch, self.n_kv_heads, self.head_dim), rotation_k)
        if in_place:  # the kernel writes the given caches themselves (LlamaForCausalLM.forward_with_cache)
            out = self.decode_attention_in_place(
                q.reshape(batch, self.n_kv_heads, self.n_rep, self.head_dim), k,
                v.reshape(batch, self.n_kv_heads, self.head_dim), k_cache, v_cache, bias, cache_slot)
            return self.wo(out.reshape(batch, self.num_heads * self.head_dim)), k_cache, v_cache
        if self.decode_attention is not None:  # one kernel: cache write + attention over the visible slots
            out, k_cache, v_cache = self.decode_attention(
                q.reshape(batch, self.n_kv_heads, self.n_rep, self.head_dim), k,
                v.reshape(batch, self.n_kv_heads, self.head_dim), k_cache, v_cache, bias, cache_slot)
            return self.wo(out.reshape(batch, self.num_heads * self.head_dim)), k_cache, v_cache
        k_cache = mint.where(cache_slot, k.reshape(batch, self.n_kv_heads, 1, self.head_dim), k_cache)
        v = v.reshape(batch, self.n_kv_heads, 1, self.head_dim)
        v_cache = mint.where(cache_slot, v, v_cache)
        # Query head h = g * n_rep + r reads kv head g.
        q = q.reshape(batch, self.n_kv_heads, self.n_rep, self.head_dim)
        scores = _cast(self.matmul_qk(q, k_cache), mindspore.float32)
        probs = _cast(mint.softmax(scores + bias, dim=-1), self.compute_dtype)
        out = mint.matmul(probs, v_cache)  # (B, kv_heads, n_rep, D)
        return self.wo(out.reshape(batch, self.num_heads * self.head_dim)), k_cache, v_cache


class LlamaFeedForward(nn.Cell):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: LlamaConfig, param_dtype, compute_dtype, init_weights=True):
        super().__init__()
        linear = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, init_std=config.initializer_range,
                      init_weights=init_weights)
        quantized = quantized_layers(config, "feed_forward")
        self.intermediate_size = config.intermediate_size
        if config.qkv_concat:  # MindFormers' fused w_gate_hidden: w1 and w3 rows alternate (r1.5.0)
            self.w_gate_hidden = LlamaLinear(config.hidden_size, 2 * config.intermediate_size, **linear,
                                             quantized=quantized("w_gate_hidden"))
            self.w1 = self.w3 = None
        else:
            self.w_gate_hidden = None
            self.w1 = LlamaLinear(config.hidden_size, config.intermediate_size, **linear, quantized=quantized("w1"))
            self.w3 = LlamaLinear(config.hidden_size, config.intermediate_size, **linear, quantized=quantized("w3"))
        self.w2 = LlamaLinear(config.intermediate_size, config.hidden_size, **linear, quantized=quantized("w2"))
        kernels = fused_kernels(compute_dtype)
        self.swiglu = kernels.swiglu if kernels else None
        self.silu_mul = kernels.silu_mul if kernels else None  # generation only: the kernel has no gradient
        projections = bfloat16_projections(param_dtype, compute_dtype)
        self.swiglu_bf16 = projections.swiglu_bf16 if projections else None  # generation only too
        self.pair_bf16 = projections.linear_pair_bf16 if projections else None
        self.pair_bf16_packed = projections.linear_pair_bf16_packed if projections else None
        self.compute_dtype = compute_dtype

    def construct(self, x):
        if self.w_gate_hidden is not None:
            gate_up = self.w_gate_hidden(x)
            pairs = gate_up.reshape(gate_up.shape[:-1] + (self.intermediate_size, 2))
            gate, up = pairs[..., 0], pairs[..., 1]
            return self.w2(mint.nn.functional.silu(gate) * up)
        # w1.gemv / w3.gemv are None where a layer must not be fused (e.g. wrapped by LoRA: its weight
        # alone is not the layer).
        if self.swiglu is not None and self.w1.gemv is not None and self.w3.gemv is not None and single_row(x):
            w1, w3 = _cast(self.w1.weight, self.compute_dtype), _cast(self.w3.weight, self.compute_dtype)
            return self.w2(self.swiglu(x, w1, w3))
        return self.w2(mint.nn.functional.silu(self.w1(x)) * self.w3(x))

    def inference(self, x):
        """The same MLP for generation (forward only): the activation in one kernel where there is one. Where the
        weights are bfloat16, gate and up in one call; in a decode step on unpacked weights the activation too
        (MfcoreSwigluBf16: in a 128-token chunk its epilogue was 0.98x the activation's own pass)."""
        if self.swiglu_bf16 is not None and x.ndim == 2 and self.w_gate_hidden is None and self.w1.bf16_fusable \
                and self.w3.bf16_fusable and not (self.w1.packed or self.w3.packed):
            return self.w2(self.swiglu_bf16(x, self.w1.weight, self.w3.weight))
        if self.pair_bf16 is not None and self.silu_mul is not None and self.w_gate_hidden is None \
                and self.w1.bf16_fusable and self.w3.bf16_fusable and self.w1.packed == self.w3.packed:
            if self.w1.packed:  # gate and up in one call (x rounded once), the activation a pass of its own
                gate, up = self.pair_bf16_packed(x, self.w1.weight, self.w3.weight)
            else:
                gate, up = self.pair_bf16(x, self.w1.weight, self.w3.weight)
            return self.w2(self.silu_mul(gate, up))
        if self.silu_mul is None or self.w_gate_hidden is not None:
            return self.construct(x)
        if single_row(x) and self.w1.gemv is not None:  # construct's float32 swiglu kernel takes it
            return self.construct(x)
        return self.w2(self.silu_mul(self.w1(x), self.w3(x)))


class LlamaDecodeLayer(nn.Cell):
    def __init__(self, config: LlamaConfig, param_dtype, compute_dtype, init_weights=True):
        super().__init__()
        self.attention_norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype)
        self.attention = LlamaAttention(config, param_dtype, compute_dtype, init_weights)
        self.ffn_norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype)
        self.feed_forward = LlamaFeedForward(config, param_dtype, compute_dtype, init_weights)

    def construct(self, x, cos, sin, rotate, bias, prefix=None):
        x = x + self.attention(self.attention_norm(x), cos, sin, rotate, bias, prefix)
        return x + self.feed_forward(self.ffn_norm(x))

    def forward_with_cache(self, x, rope, bias, cache_slot, k_cache, v_cache, prefix=None, in_place=False):
        attn, k_cache, v_cache = self.attention.forward_with_cache(self.attention_norm.inference(x), rope, bias,
                                                                   cache_slot, k_cache, v_cache, prefix, in_place)
        x = x + attn
        return x + self.feed_forward.inference(self.ffn_norm.inference(x)), k_cache, v_cache


class LlamaModel(nn.Cell):
    """Embedding, decoder layers and the final norm (MindFormers' LlamaModel, attribute `model`)."""

    def __init__(self, config: LlamaConfig, param_dtype, compute_dtype, init_weights=True):
        super().__init__()
        self.compute_dtype = compute_dtype
        # MindFormers' embedding_init_type: the table's own dtype (its bf16 files: bfloat16 table, float16 rest)
        embedding_dtype = MS_DTYPES[config.embedding_init_type] if config.embedding_init_type else param_dtype
        self.tok_embeddings = LlamaEmbedding(config.vocab_size, config.hidden_size, embedding_dtype, compute_dtype,
                                             config.initializer_range, init_weights)
        self.layers = nn.CellList([LlamaDecodeLayer(config, param_dtype, compute_dtype, init_weights)
                                   for _ in range(config.num_layers)])
        self.norm_out = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype)
        head_dim = config.hidden_size // config.num_heads
        self.inv_freq = Tensor(rope_inv_freq(head_dim, config.theta, config.rope_scaling))
        self.rotate = Tensor(rotate_half_matrix(head_dim))
        self.eye = Tensor(np.eye(head_dim, dtype=np.float32))
        self.scaling = head_dim ** -0.5

    def rotary(self, position_ids):
        """cos and sin (B, S, 1, head_dim) in float32 for integer positions (B, S)."""
        freqs = ops.cast(position_ids, mindspore.float32).expand_dims(-1) * self.inv_freq
        emb = mint.cat((freqs, freqs), dim=-1).expand_dims(2)
        return ops.cos(emb), ops.sin(emb)

    def rotation(self, cos, sin):
        """Per-row rotary matrices R (B, D, D) with x @ R == x * cos + rotate_half(x) * sin, for q (times
        the attention scale 1/sqrt(D)) and for k. cos, sin: (B, 1, D)."""
        rotation = self.eye * cos + self.rotate * sin
        return rotation * self.scaling, rotation

    def embed(self, input_ids, input_embeds=None):
        hidden = self.tok_embeddings(input_ids) if input_embeds is None else input_embeds
        return _cast(hidden, self.compute_dtype)


class LlamaForCausalLM(PreTrainedModel):
    """Llama causal LM (MindFormers' LlamaForCausalLM inputs; Hugging Face's numbers)."""

    config_class = LlamaConfig
    supports_gather_index = True  # construct(gather_index=) (mfcore.generation.scoring)
    supports_chunked_prefill = True

    def __init__(self, config: LlamaConfig, init_weights: bool = True):
        super().__init__(config)
        param_dtype = MS_DTYPES[config.param_init_type]
        compute_dtype = MS_DTYPES[config.compute_dtype]
        self.vocab_size = config.vocab_size
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.num_layers = config.num_layers
        self.kv_dtype = compute_dtype
        self.tie_word_embeddings = bool(config.tie_word_embeddings)
        self.model = LlamaModel(config, param_dtype, compute_dtype, init_weights)
        kernels = fused_kernels(compute_dtype) if self.tie_word_embeddings else None
        self.tied_head_gemv = kernels.gemv if kernels else None
        self.tied_head_storage = storage_linear(param_dtype, compute_dtype) if self.tie_word_embeddings else None
        if self.tie_word_embeddings:
            self.lm_head = None
            self.ignored_checkpoint_names = ("lm_head.weight",)  # Hugging Face may save the tied copy
        else:
            self.lm_head = LlamaLinear(config.hidden_size, config.vocab_size, False, param_dtype, compute_dtype,
                                       config.initializer_range, init_weights,
                                       quantized=quantized_layers(config, "")("lm_head"))
        self.compute_type = compute_dtype
        # Prefix-tuning / P-tuning v2 (mfcore.training.prefix): a cell giving each layer's prefix keys and
        # values, set by inject_prefix; None for a plain model.
        self.prefix_encoder = None
        self.weights_packed = False  # pack_weights_for_inference: inference only from then on

    def pack_weights_for_inference(self) -> int:
        """PreTrainedModel.pack_weights_for_inference: every bfloat16 projection that allows it (LlamaLinear.
        pack_for_inference). A server's 16-row decode step 1.04-1.10x, 8 rows 1.13x, one row 1.01-1.10x, a
        16-prompt prefill 1.03x; 4 rows 0.94-0.96x (benchmarks/RESULTS.md, "Serving")."""
        packed = sum(cell.pack_for_inference() for _, cell in self.cells_and_names() if isinstance(cell, LlamaLinear))
        self.weights_packed = self.weights_packed or packed > 0
        return packed

    def prepare_for_training(self) -> None:
        """Switch 16-bit weights from mfcore's forward-only storage kernels (no gradient) back to MindSpore's
        cast + matmul, so that the weights can train; called by the Trainer. int8 layers stay as they are
        (they hold no trainable weights)."""
        if self.weights_packed:
            raise ConfigError("prepare_for_training", "this model's weights were packed for serving "
                                                      "(pack_weights_for_inference); load it again to train it")
        for _, cell in self.cells_and_names():
            if isinstance(cell, LlamaLinear) and cell.weight_scale is None:
                cell.storage_op = None
            elif isinstance(cell, LlamaEmbedding):
                cell.gather_bf16 = None
        self.tied_head_storage = None

    def prefix_length(self) -> int:
        """Key/value positions the prefix adds in front of every sequence (0 without a prefix)."""
        if self.prefix_encoder is None:
            return 0
        return self.prefix_encoder.positions(self.n_kv_heads * self.head_dim)

    def prompt_in_chunk_form(self) -> bool:
        # with mfcore's cache kernel and no prefix to write first (the prefix comes with the first prompt call)
        return self.prefix_encoder is None and self.model.layers[0].attention.cache_attention is not None

    def decodes_leading_rows(self) -> bool:
        # the decode kernel attends the first rows of larger caches and keeps the others as they are
        return self.model.layers[0].attention.decode_attention is not None

    def writes_chunks_in_place(self) -> bool:
        return self.prefix_encoder is None and self.model.layers[0].attention.cache_attention_in_place is not None

    def with_prefix_columns(self, bias):
        """bias (..., T) with the prefix's columns (always visible) in front."""
        visible = ops.zeros(bias.shape[:-1] + (self.prefix_length(),), bias.dtype)
        return mint.cat((visible, bias), dim=-1)

    def load_checkpoint(self, path, strict: bool = True) -> None:
        """PreTrainedModel.load_checkpoint, with the checkpoint's q/k/v layout checked against qkv_concat."""
        from mfcore.errors import CheckpointError
        from mfcore.models.weight_files import checkpoint_shapes, find_weight_files
        from pathlib import Path

        files = [Path(p) for p in path] if isinstance(path, (list, tuple)) else \
            (find_weight_files(Path(path)) if Path(path).is_dir() else [Path(path)])
        try:
            names = [name for name, _ in checkpoint_shapes(files)]
        except Exception:  # unreadable files: the base class reports them
            names = []
        fused = any(name.endswith(("attention.w_qkv.weight", "feed_forward.w_gate_hidden.weight")) for name in names)
        split = any(name.endswith(("attention.wq.weight", "self_attn.q_proj.weight")) for name in names)
        want = bool(self.config.qkv_concat)
        if names and (fused and not want or split and want):
            layout = "fused w_qkv / w_gate_hidden" if fused else "separate wq/wk/wv, w1/w3"
            raise CheckpointError(
                f"{files[0]}: the checkpoint holds {layout} weights but model_config.qkv_concat is {want}; set "
                f"qkv_concat: {not want} to load it as it is, or rewrite it in the other layout: `mfcore convert "
                f"{files[0].parent if isinstance(path, (list, tuple)) else path} NEW_DIR --qkv-concat "
                f"{str(want).lower()}`")
        super().load_checkpoint(files, strict)

    def logits(self, hidden):
        """Final norm and output head, logits in float32."""
        hidden = self.model.norm_out(hidden)
        if self.lm_head is None and self.tied_head_storage is not None:
            logits = self.tied_head_storage(hidden, self.model.tok_embeddings.embedding_weight)
        elif self.lm_head is None:
            weight = _cast(self.model.tok_embeddings.embedding_weight, self.compute_type)
            logits = linear(hidden, weight, gemv=self.tied_head_gemv)
        else:
            logits = self.lm_head(hidden)
        return _cast(logits, mindspore.float32)

    def construct(self, input_ids, labels=None, input_position=None, position_ids=None, attention_mask=None,
                  input_embeds=None, init_reset=None, batch_valid_length=None, batch_index=None,
                  zactivate_len=None, block_tables=None, slot_mapping=None, prefix_keys_values=None,
                  llm_boost_inputs=None, q_seq_lens=None, loss_mask=None, gather_index=None, seq_range=None,
                  actual_seq_len=None):
        """Logits (B, S, vocab) float32; with `labels` (or `loss_mask`) the mean next-token loss.

        labels have the shape of input_ids and are shifted inside (position t predicts t+1), tokens
        labelled -100 are ignored; `loss_mask` (same shape, 1 = count) weights the tokens further, and
        alone it means labels = input_ids. `attention_mask` (B, S), 1 for real tokens, hides padding.
        `gather_index` (B, K) int32 positions: logits (B, K, vocab) of those positions only (the output head
        and its log-softmax are most of a scoring pass's memory at a large vocabulary).
        The inputs MindFormers uses for its paged-attention inference (init_reset, block_tables, ...)
        are accepted for compatibility and not used: generation goes through forward_with_cache.
        """
        hidden = self.model.embed(input_ids, input_embeds)
        length = hidden.shape[1]
        if position_ids is None:
            position_ids = ops.arange(0, length, dtype=mindspore.int32).expand_dims(0)
        cos, sin = self.model.rotary(position_ids)
        index = ops.arange(0, length, dtype=mindspore.int32)
        allowed = index.expand_dims(0) <= index.expand_dims(1)  # (S, S) causal
        allowed = allowed.expand_dims(0)
        if attention_mask is not None:
            allowed = mint.logical_and(allowed, (attention_mask != 0).expand_dims(1))
        bias = ops.cast(mint.logical_not(allowed), mindspore.float32) * MASK_VALUE
        bias = bias.reshape(bias.shape[0], 1, 1, length, length)
        prefixes = [None] * self.num_layers
        if self.prefix_encoder is not None:
            prefixes = self.prefix_encoder(hidden.shape[0])
            bias = self.with_prefix_columns(bias)
        for i, layer in enumerate(self.model.layers):
            hidden = layer(hidden, cos, sin, self.model.rotate, bias, prefixes[i])
        if gather_index is not None:  # (B, K) positions: only their logits (scoring needs a continuation's)
            index = gather_index.expand_dims(-1)
            hidden = mint.gather(hidden, 1, ops.broadcast_to(index, index.shape[:2] + (hidden.shape[-1],)))
        logits = self.logits(hidden)
        if labels is None and loss_mask is None:
            return logits
        if labels is None:
            labels = input_ids
        return self.loss(logits, labels, loss_mask)

    def loss(self, logits, labels, loss_mask=None):
        """Mean cross entropy of logits[:, t] against labels[:, t + 1] over counted tokens."""
        logits = logits[:, :-1]
        labels = ops.cast(labels[:, 1:], mindspore.int32)
        weight = ops.cast(labels != IGNORE_INDEX, mindspore.float32)
        if loss_mask is not None:
            weight = weight * ops.cast(loss_mask[:, 1:], mindspore.float32)
        safe_labels = labels * ops.cast(labels != IGNORE_INDEX, mindspore.int32)
        log_probs = ops.log_softmax(logits, -1)
        picked = mint.gather(log_probs, -1, safe_labels.expand_dims(-1)).squeeze(-1)
        return -(picked * weight).sum() / mint.clamp(weight.sum(), min=1.0)

    # -- generation protocol (mfcore.generation) ---------------------------------------------------
    def kv_cache_shapes(self, batch_size: int, cache_length: int):
        # a prefix (prefix-tuning) takes the first slots of every layer's cache
        shape = (batch_size, self.n_kv_heads, self.prefix_length() + cache_length, self.head_dim)
        return [(shape, self.kv_dtype)] * (2 * self.num_layers)

    supports_logits_at = True
    supports_hidden_at = True

    def forward_with_cache(self, input_ids, position_ids, attention_bias, cache_slot, *caches, logits_at=None,
                           in_place=False, hidden_at=None):
        if in_place and not (self.decodes_leading_rows() if input_ids.shape[1] == 1 else
                             cache_slot.ndim == 1 and self.writes_chunks_in_place()):
            raise ValueError("forward_with_cache(in_place=True) takes one token per row on the decode kernel, or a "
                             "prompt chunk (cache_slot (T,)) on the cache kernel")
        hidden = self.model.embed(input_ids)
        cos, sin = self.model.rotary(position_ids)
        batch, length = input_ids.shape
        rope = self.model.rotation(cos.reshape(batch * length, 1, -1), sin.reshape(batch * length, 1, -1))
        if length == 1:  # the decode hot path runs on 2-D hidden states (B, hidden)
            hidden = hidden.reshape(batch, -1)
            bias = attention_bias  # (B, 1, 1, T)
        else:
            bias = attention_bias.expand_dims(1)  # (B, 1, 1, S, T): broadcast over kv heads and groups
        prefixes = [None] * self.num_layers
        if self.prefix_encoder is not None:  # the prefix sits in the first cache slots, always visible
            bias = self.with_prefix_columns(bias)
            if cache_slot.ndim == 1:  # a prompt chunk: the prefix slots take none of its tokens
                cache_slot = mint.cat((ops.fill(mindspore.int32, (self.prefix_length(),), length), cache_slot))
            else:
                cache_slot = mint.cat((ops.zeros((1, 1, self.prefix_length(), 1), cache_slot.dtype), cache_slot), dim=2)
                if length > 1:  # the first prompt call writes the prefix
                    prefixes = self.prefix_encoder(batch)
        new_caches = ()
        for i, layer in enumerate(self.model.layers):
            hidden, k_cache, v_cache = layer.forward_with_cache(hidden, rope, bias, cache_slot, caches[2 * i],
                                                                caches[2 * i + 1], prefixes[i], in_place)
            new_caches = new_caches + (k_cache, v_cache)
        if hidden_at is not None:  # their final hidden states: logits() later, for several chunks at once
            out = ops.gather(hidden, hidden_at, 1)
        elif logits_at is not None:  # chosen positions of a several-token call (packed prompts' last tokens)
            out = self.logits(ops.gather(hidden, logits_at, 1))
        else:
            out = self.logits(hidden if length == 1 else hidden[:, -1])
        if in_place:  # the caches given were written: the logits (or hidden states) alone
            return (out,)
        return (out,) + new_caches
