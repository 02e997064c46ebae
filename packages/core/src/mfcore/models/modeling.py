"""PreTrainedModel: the base of every mfcore network (a `mindspore.nn.Cell`).

It knows how to build a model from a preset, one of our directories or a Hugging Face directory; how to
save (MindSpore safetensors or ckpt, sharded with an index) and load checkpoints with errors that name
every missing, unexpected or wrongly shaped parameter; and it carries `generate` (generation.py).

A subclass sets `config_class`, builds its layers in `__init__(config, init_weights=True)`, implements
`construct` with the shared causal-LM signature and the KV-cache protocol used by generation:
`kv_cache_shapes(batch, length)` and `forward_with_cache(input_ids, position_ids, attention_bias,
cache_slot, *caches)`.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore
from mindspore import Tensor, nn

from mfcore.errors import CheckpointError, ConfigError
from mfcore.generation.config import GENERATION_CONFIG_NAME, GenerationConfig
from mfcore.utils.runtime import device_target, ensure_runtime, supports_compute_dtype

from .configuration import PretrainedConfig, normalize_dtype
from .quantization import SCALE_SUFFIX, quantize_rtn_int8
from .weight_files import (DEFAULT_MAX_SHARD_SIZE, TRAINING_STATE, checkpoint_shapes, find_weight_files, name_list,
                           parse_size, read_checkpoint, save_tensors_file)

MS_DTYPES = {"float32": mindspore.float32, "float16": mindspore.float16, "bfloat16": mindspore.bfloat16}
PathLike = Union[str, os.PathLike]

# -- the model base class ----------------------------------------------------------------------------

class PreTrainedModel(nn.Cell):
    """Base class of mfcore networks. Subclasses set `config_class` and build the layers."""

    config_class = None
    # construct(gather_index=(B, K) positions) returns only those positions' logits (scoring uses it).
    supports_gather_index = False
    # Parameter names a checkpoint may carry that this model ignores (e.g. a tied output head).
    ignored_checkpoint_names: Tuple[str, ...] = ()

    def __init__(self, config: PretrainedConfig, **kwargs):
        ensure_runtime()
        super().__init__(**kwargs)
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)

    # -- dtypes ---------------------------------------------------------------------------------
    @staticmethod
    def resolve_dtypes(config: PretrainedConfig, dtype=None) -> None:
        """Set config.param_init_type / compute_dtype from `dtype=`; bf16 on CPU keeps bf16 storage only."""
        if dtype is not None:
            name = normalize_dtype(dtype)
            config.param_init_type = name
            config.compute_dtype = name
        compute = getattr(config, "compute_dtype", "float32")
        if not supports_compute_dtype(compute):
            warnings.warn("bfloat16 compute does not exist on MindSpore's CPU backend: weights stay in bfloat16 "
                          "(storage) and the network computes in float32. Use Ascend for bfloat16 compute.",
                          UserWarning, stacklevel=3)
            config.compute_dtype = "float32"

    @staticmethod
    def settle_cpu_storage(config: PretrainedConfig, dtype=None) -> None:
        """On CPU, 16-bit weights stay 16-bit and compute in float32 through mfcore's weight kernels (a
        quantized model keeps its other weights in bfloat16 unless `dtype=` says otherwise)."""
        if device_target() != "CPU":
            return
        if dtype is None and getattr(config, "quantization_config", None):
            config.param_init_type = "bfloat16"
            config.compute_dtype = "float32"
        elif dtype is not None and normalize_dtype(dtype) == "float16":
            config.compute_dtype = "float32"

    @property
    def param_dtype(self):
        return MS_DTYPES[getattr(self.config, "param_init_type", "float32")]

    @property
    def compute_dtype(self):
        return MS_DTYPES[getattr(self.config, "compute_dtype", "float32")]

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def _config_from(cls, source, overrides) -> PretrainedConfig:
        if cls.config_class is not None:
            return cls.config_class.from_pretrained(source, **overrides)
        from .auto import AutoConfig

        return AutoConfig.from_pretrained(source, **overrides)

    @classmethod
    def from_config(cls, config: PretrainedConfig, dtype=None) -> "PreTrainedModel":
        """A randomly initialised model of this config (what training from scratch starts from)."""
        cls.resolve_dtypes(config, dtype)
        return cls(config)

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike, config: Optional[PretrainedConfig] = None, dtype=None,
                        **config_overrides) -> "PreTrainedModel":
        """Load from one of our directories, a Hugging Face directory, a checkpoint file, or a preset name.

        A preset with real dimensions has no bundled weights and fails at once (before allocating
        anything); tiny presets (`random_init_ok`) are initialised randomly. `torch_dtype=` (transformers'
        name) is taken as `dtype=`, not as a config key that would leave the weights in float32.
        """
        if "torch_dtype" in config_overrides:
            torch_dtype = config_overrides.pop("torch_dtype")
            if dtype is None and torch_dtype not in (None, "auto"):
                dtype = str(torch_dtype).replace("torch.", "")  # torch.float16 or "float16"
        if config is not None and config_overrides:
            config = type(config).from_dict(config.to_dict(), **config_overrides)
        path = Path(name_or_path)
        if path.exists():
            directory = path if path.is_dir() else path.parent
            if config is None:
                config = cls._config_from(directory, config_overrides)
            cls.resolve_dtypes(config, dtype)
            cls.settle_cpu_storage(config, dtype)
            weights = find_weight_files(directory) if path.is_dir() else [path]
            model = cls(config, init_weights=False)
            model.load_checkpoint(weights)
            if (directory / GENERATION_CONFIG_NAME).exists():
                model.generation_config = GenerationConfig.from_pretrained(directory)
            return model
        from mfcore.plugins.manager import get_plugins

        preset = get_plugins().preset(str(name_or_path))  # unknown names raise with suggestions
        if not preset.random_init_ok:
            raise CheckpointError(
                f"preset {preset.name!r} has real dimensions and no bundled weights; mfcore will not allocate "
                f"random weights for it. Get the weights (e.g. the Hugging Face checkpoint) and convert them "
                f"once: `mfcore convert <hf_dir> $MFCORE_HOME/models/{preset.name}` (MFCORE_HOME defaults to "
                f"~/.mfcore), after which {preset.name!r} loads them; or pass the directory itself "
                f"(`--load_checkpoint <dir>`, from_pretrained(<dir>))")
        if config is None:
            config = cls._config_from(preset.name, config_overrides)
        cls.resolve_dtypes(config, dtype)
        model = cls(config)
        if preset.generation:
            model.generation_config = model.generation_config.update(**dict(preset.generation))
        return model

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: PathLike, max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
                        format: str = "safetensors") -> Path:
        """Write config.json, generation_config.json and the weights (sharded above `max_shard_size`)."""
        if getattr(self, "weights_packed", False):
            raise ConfigError("save_pretrained", "this model's weights were packed for serving "
                                                 "(pack_weights_for_inference); load it again to save it")
        if format not in ("safetensors", "ckpt"):
            raise ConfigError("format", f"{format!r}; use 'safetensors' or 'ckpt'")
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        self.generation_config.save_pretrained(directory)
        items = [(name, param) for name, param in self.parameters_and_names()]
        limit = parse_size(max_shard_size)
        shards: List[List[Tuple[str, Tensor]]] = [[]]
        size = 0
        for name, param in items:
            nbytes = int(param.nbytes)
            if shards[-1] and size + nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append((name, param))
            size += nbytes
        stem, suffix = ("mindspore_model", ".safetensors") if format == "safetensors" else ("mindspore_model", ".ckpt")
        written = []
        if len(shards) == 1:
            file = directory / f"{stem}{suffix}"
            save_tensors_file(shards[0], file, format)
            written.append(file.name)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                file = directory / f"{stem}-{i:05d}-of-{len(shards):05d}{suffix}"
                save_tensors_file(shard, file, format)
                written.append(file.name)
                weight_map.update({name: file.name for name, _ in shard})
            index = {"metadata": {"total_size": sum(int(p.nbytes) for _, p in items), "format": format},
                     "weight_map": weight_map}
            from mfcore.utils.atomic import atomic_write_text

            atomic_write_text(directory / f"{stem}{suffix}.index.json", json.dumps(index, indent=2) + "\n")
            written.append(f"{stem}{suffix}.index.json")
        # Remove weights of an earlier save that this one replaces (other shard counts or formats).
        for old in directory.glob(f"{stem}*"):
            if old.name not in written:
                old.unlink()
        return directory

    # -- loading --------------------------------------------------------------------------------
    def _name_translator(self, names: Sequence[str]):
        """A function foreign name -> native name for the names in a checkpoint (native, or a WeightMap)."""
        native = {name for name, _ in self.parameters_and_names()}
        ignored = set(self.ignored_checkpoint_names)
        names = [n for n in names if not TRAINING_STATE.match(n)]
        if all(n in native or n in ignored for n in names):
            return lambda n: n
        from mfcore.plugins.manager import get_plugins

        model_type = getattr(self.config, "model_type", "")
        best, best_hits = None, 0
        for entry in get_plugins().converters.entries():
            weight_map = entry.load()
            if weight_map.model_type != model_type:
                continue
            hits = sum(1 for n in names if weight_map.to_native(n) in native)
            if hits > best_hits:
                best, best_hits = weight_map, hits
        if best is None:
            return lambda n: n
        return lambda n: n if n in native else best.to_native(n)

    def load_checkpoint(self, path: Union[PathLike, Sequence[PathLike]], strict: bool = True) -> None:
        """Load weights from a directory, a file or a list of files; names may be native or foreign.

        With `strict`, any missing, unexpected or wrongly shaped parameter raises CheckpointError that
        names them all (mindspore.load_param_into_net would silently skip missing/unexpected ones).
        """
        if isinstance(path, (list, tuple)):
            files = [Path(p) for p in path]
        else:
            path = Path(path)
            if not path.exists():
                raise CheckpointError(f"{path}: no such file or directory")
            files = find_weight_files(path) if path.is_dir() else [path]
        source = ", ".join(str(f) for f in files)
        shapes = checkpoint_shapes(files)
        translate = self._name_translator([name for name, _ in shapes])
        params = dict(self.parameters_and_names())
        ignored = set(self.ignored_checkpoint_names)
        # Check every name and shape first (from headers), then stream the tensors in: a checkpoint
        # that does not fit changes nothing, and memory stays near one tensor above the model's.
        plan, seen, unexpected, wrong_shape = {}, set(), [], []
        for name, shape in shapes:
            native = translate(name)
            if native is None or native in ignored or (native not in params and TRAINING_STATE.match(name)):
                continue
            param = params.get(native)
            if param is None:
                unexpected.append(name)
            elif shape != tuple(param.shape):
                wrong_shape.append(f"{native}: checkpoint {shape} vs model {tuple(param.shape)}")
            else:
                plan[name] = param
                seen.add(native)
        # Scales of int8 weights loaded from float ones are computed while loading, not read.
        computed = {native + SCALE_SUFFIX for native in seen if params[native].dtype == mindspore.int8}
        missing = sorted(set(params) - seen - computed)
        problems = []
        if missing:
            problems.append(f"missing parameter(s): {name_list(missing)}")
        if unexpected:
            problems.append(f"unexpected parameter(s): {name_list(sorted(unexpected))}")
        if wrong_shape:
            problems.append(f"wrongly shaped parameter(s): {name_list(wrong_shape)}")
        if problems and (strict or wrong_shape):
            raise CheckpointError(f"{source} does not fit {type(self).__name__} "
                                  f"({getattr(self.config, 'model_type', '?')}): " + " | ".join(problems)
                                  + ". Check that config.json matches the weights, or convert the checkpoint "
                                    "with `mfcore convert`")
        if problems:
            warnings.warn(" | ".join(problems), UserWarning, stacklevel=2)
        for name, value in read_checkpoint(files):
            param = plan.get(name)
            if param is None:
                continue
            if param.dtype == mindspore.int8 and value.dtype != mindspore.int8:  # quantize while loading
                quantized, scale = quantize_rtn_int8(_weight_array(value))
                param.set_data(Tensor.from_numpy(quantized))
                params[translate(name) + SCALE_SUFFIX].set_data(Tensor.from_numpy(scale))
            else:  # same dtype: the tensor read is taken as it is, no copy
                param.set_data(value if value.dtype == param.dtype else value.astype(param.dtype))

    # -- generation -----------------------------------------------------------------------------
    def generate(self, input_ids, generation_config: Optional[GenerationConfig] = None, **kwargs):
        """Greedy / sampled generation with an incremental KV cache (mfcore.generation.generate); with
        num_beams > 1 beam search; num_return_sequences, return_dict_in_generate and output_scores as in
        transformers (mfcore.generation.outputs)."""
        from mfcore.generation.outputs import generate_with_outputs

        return generate_with_outputs(self, input_ids, generation_config=generation_config, **kwargs)

    def loglikelihood(self, contexts, continuations, **kwargs):
        """(sum of log-probs, is_greedy) of each continuation after its context; see
        mfcore.generation.scoring.loglikelihood (token lists, or strings with tokenizer=)."""
        from mfcore.generation.scoring import loglikelihood

        return loglikelihood(self, contexts, continuations, **kwargs)

    def loglikelihood_rolling(self, texts, **kwargs):
        """Sum of log-probs of every token of each text, in windows of seq_length (stride= for overlap);
        see mfcore.generation.scoring.loglikelihood_rolling."""
        from mfcore.generation.scoring import loglikelihood_rolling

        return loglikelihood_rolling(self, texts, **kwargs)

    def kv_cache_shapes(self, batch_size: int, cache_length: int) -> List[Tuple[Tuple[int, ...], object]]:
        """(shape, dtype) of every KV-cache tensor for one generate call; the order forward_with_cache takes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement the KV-cache protocol")

    def forward_with_cache(self, input_ids, position_ids, attention_bias, cache_slot, *caches, logits_at=None,
                           in_place=False, hidden_at=None):
        """Run the tokens not yet cached; return (logits of the last position (B, V) float32, *new caches).
        With logits_at (K,) int32 (models with supports_logits_at), the logits of those positions of a
        several-token call instead, (B, K, V): the last token of each prompt packed into one row. With
        hidden_at (K,) int32 (models with supports_hidden_at), the final hidden states of those positions in
        place of logits, (B, K, H), which `logits(hidden (R, H))` turns into logits (R, V) later: a server's
        packed prefill runs the output head once for all its prompts, not on K positions of every chunk. With
        in_place=True (one token per row on models that decode_leading_rows, or a prompt chunk on models that
        write_chunks_in_place), the caches given are written themselves and only (logits,) comes back."""
        raise NotImplementedError(f"{type(self).__name__} does not implement the KV-cache protocol")

    supports_logits_at = False
    supports_hidden_at = False

    def logits(self, hidden):
        """Final norm and output head of hidden states from forward_with_cache(hidden_at=): (R, H) -> (R, V)
        float32 (models with supports_hidden_at)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement hidden_at")

    def pack_weights_for_inference(self) -> int:
        """Store weights in the layout the CPU kernels read fastest, for a model that will only run inference
        from now on (a server's): call it before anything is compiled, since the compiled graphs pick their
        kernels when traced. Returns how many weights were packed (0: none, the default); the model then
        refuses save_pretrained."""
        return 0

    def decodes_leading_rows(self) -> bool:
        """Whether a one-token-per-row call may hold fewer rows than the caches: the first rows decode and the
        others come back unchanged (a server's row buckets then never slice the caches apart), and may write
        the caches in place (forward_with_cache(in_place=True))."""
        return False

    def writes_chunks_in_place(self) -> bool:
        """Whether a prompt-chunk call (cache_slot (T,)) may write the caches given in place
        (forward_with_cache(in_place=True) returns only the logits): a server's packed prefill then copies
        no cache per chunk."""
        return False

    # A model that takes a prompt in pieces (forward_with_cache with past_length > 0 and several tokens) sets
    # this; generate then runs long prompts in chunks of GenerationConfig.prefill_chunk_size tokens.
    supports_chunked_prefill = False

    def prompt_in_chunk_form(self) -> bool:
        """Whether the first prompt call takes the chunk form too (past_length 0), so that one compiled graph
        serves every prompt call of a cache length (each graph keeps its own buffers on MindSpore's CPU)."""
        return False

    def prepare_inputs_for_generation(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                                      cache_length: int, past_length: int = 0) -> Dict[str, np.ndarray]:
        """The inputs of one forward_with_cache call, as numpy arrays, for a decoder-only model.

        `input_ids` (B, S) are the tokens not yet in the cache and `attention_mask` (B, past + S) marks
        the real (1) and padding (0) columns of everything seen so far, left-padded. Cache slot j holds
        column j. Returns input_ids, position_ids (rotary positions counted over real tokens only, as
        transformers does), attention_bias and cache_slot, in one of three forms:
        - the first call (past_length 0): bias (B, 1, S, S), causal + padding; cache_slot (1, 1, T, 1)
          all False (the prompt fills slots 0..S-1);
        - one token per row: bias (B, 1, 1, T), 0 where a slot may be attended and -1e9 elsewhere;
          cache_slot (1, 1, T, 1), True at the slot the token is written to;
        - a later chunk of a long prompt (S > 1 tokens after past_length, models with
          supports_chunked_prefill): bias (B, 1, S, T), causal over the whole cache; cache_slot (T,) int32,
          for each slot the chunk's token written there (slot past_length + i takes token i), S elsewhere;
          also the first call's form when prompt_in_chunk_form() says so.
        """
        batch, length = input_ids.shape
        total = past_length + length
        mask = np.asarray(attention_mask, dtype=np.int64)[:, :total]
        positions = np.cumsum(mask, axis=1) - 1
        positions = np.where(mask == 0, 1, positions)[:, past_length:total].astype(np.int32)
        chunk_form = length > 1 and (past_length > 0 or self.prompt_in_chunk_form())
        if not chunk_form and past_length == 0:
            causal = np.tril(np.ones((length, length), dtype=bool))
            allowed = causal[None] & (mask[:, None, :] != 0)
        else:
            if length != 1 and not self.supports_chunked_prefill:
                raise ValueError(f"{type(self).__name__} takes one token per row after the first step "
                                 "(it does not support chunked prefill)")
            visible = np.zeros((batch, cache_length), dtype=bool)
            visible[:, :total] = mask != 0
            causal = np.arange(cache_length)[None, :] <= (past_length + np.arange(length))[:, None]  # (S, T)
            allowed = causal[None] & visible[:, None, :]
        bias = np.where(allowed, 0.0, -1e9).astype(np.float32)[:, None]
        if chunk_form:
            slot = np.full(cache_length, length, dtype=np.int32)
            slot[past_length:total] = np.arange(length)
        else:
            slot = np.zeros((1, 1, cache_length, 1), dtype=bool)
            if past_length:
                slot[0, 0, past_length, 0] = True
        return {"input_ids": np.asarray(input_ids, dtype=np.int32), "position_ids": positions,
                "attention_bias": bias, "cache_slot": slot}

    def prepare_inputs_for_predict_layout(self, input_ids=None, batch_size: int = 1, seq_length=None, **kwargs):
        """Dummy `construct` inputs used to lay out (shard) the weights before a distributed load.

        As in MindFormers, the result is the positional argument tuple of `construct`, here
        (input_ids, labels, input_position, position_ids, attention_mask): feed it to
        `mindspore.Model.infer_predict_layout(*inputs)` or call the model with it to compile the graph
        the checkpoint is then loaded into.
        """
        if input_ids is None:
            length = seq_length or getattr(self.config, "seq_length", 128)
            input_ids = np.full((batch_size, length), getattr(self.config, "pad_token_id", 0) or 0, dtype=np.int32)
        input_ids = Tensor(np.asarray(input_ids, dtype=np.int32))
        labels = kwargs.get("labels")
        labels = Tensor(np.asarray(labels, dtype=np.int32)) if labels is not None else None
        return input_ids, labels, None, None, None


def _weight_array(value) -> np.ndarray:
    """A float tensor read from a checkpoint as numpy, as quantize_rtn_int8 takes it (bfloat16 as its bits,
    widened there a chunk at a time)."""
    if value.dtype == mindspore.bfloat16:
        return value.view(mindspore.int16).asnumpy().view(np.uint16)
    return value.asnumpy()
