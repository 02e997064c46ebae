"""A toy causal LM for core's tests: its next token is a known function of what it was shown.

next token = (sum of the real tokens seen so far + rotary position of the last one) % vocab_size,
computed from the KV cache, the cache slot and the attention bias that the generation loop builds. So
any mistake in masks, slots, positions, EOS handling or padding changes the tokens, and the expected
output is computed here in plain Python (`expected_generation`), independently of MindSpore.
"""
import numpy as np
import mindspore
from mindspore import Parameter, Tensor, mint, ops

from mfcore import PretrainedConfig, PreTrainedModel


class ToyConfig(PretrainedConfig):
    model_type = "toy-counter"

    def __init__(self, vocab_size=11, width=3, **kwargs):
        self.vocab_size = vocab_size
        self.width = width
        super().__init__(**kwargs)


class ToyCounterLM(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config, init_weights=True):
        super().__init__(config)
        self.vocab_size = config.vocab_size
        init = np.arange(config.width * 2, dtype=np.float32).reshape(2, config.width) + 1 if init_weights \
            else np.zeros((2, config.width), np.float32)
        # Weights that only scale the logits: enough to test saving and loading.
        self.scale = Parameter(Tensor(init), name="scale")
        self.bias = Parameter(Tensor(np.zeros(config.width, np.float32)), name="bias")

    def kv_cache_shapes(self, batch_size, cache_length):
        return [((batch_size, 1, cache_length, 1), mindspore.float32)]

    def forward_with_cache(self, input_ids, position_ids, attention_bias, cache_slot, cache):
        ids = ops.cast(input_ids, mindspore.float32)
        length = ids.shape[1]
        if length > 1:
            cache = mint.cat((ids.reshape(ids.shape[0], 1, length, 1), cache[:, :, length:]), dim=2)
            visible = ops.cast(attention_bias[:, 0, length - 1, :] == 0, mindspore.float32)
            total = (ids * visible).sum(-1)
        else:
            cache = mint.where(cache_slot, ids.reshape(ids.shape[0], 1, 1, 1), cache)
            visible = ops.cast(attention_bias[:, 0, 0, :] == 0, mindspore.float32)
            total = (cache[:, 0, :, 0] * visible).sum(-1)
        target = ops.cast(total + ops.cast(position_ids[:, -1], mindspore.float32), mindspore.int32) % self.vocab_size
        onehot = ops.cast(ops.arange(0, self.vocab_size, dtype=mindspore.int32).expand_dims(0)
                          == target.expand_dims(1), mindspore.float32)
        return onehot, cache


def expected_generation(prompts, vocab_size, max_new_tokens, eos=None, pad=0):
    """Plain-Python reference of what generate must return for ToyCounterLM (rows left-padded)."""
    width = max(map(len, prompts))
    rows = [list(p) for p in prompts]
    outputs = [[pad] * (width - len(p)) + list(p) for p in prompts]
    finished = [False] * len(prompts)
    for _ in range(max_new_tokens):
        for i, row in enumerate(rows):
            token = (sum(row) + len(row) - 1) % vocab_size
            token = pad if finished[i] else token
            row.append(token)  # a finished row keeps feeding pad tokens, as transformers does
            outputs[i].append(token)
            if eos is not None and token == eos:
                finished[i] = True
        if all(finished):
            break
    return np.array(outputs)
