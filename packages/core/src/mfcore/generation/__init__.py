"""Generation for every causal LM: `config` (GenerationConfig), `sampling` (how the next token is chosen,
pure numpy), `decoding` (`generate`: the compiled prompt and decode graphs over a static KV cache),
`streamers` (TextStreamer), `scoring` (log-likelihoods and per-token log-probs of given text),
`beam_search`, `outputs` (num_return_sequences, return_dict_in_generate / output_scores). A model joins by
the KV-cache protocol of PreTrainedModel; nothing here imports a model. The numpy/MindSpore parts load on
first access."""
from mfcore.utils.lazy import lazy_exports

from .config import GENERATION_CONFIG_NAME, GenerationConfig

_SAMPLING = ("apply_repetition_penalty", "apply_temperature", "apply_top_k", "apply_top_p", "softmax", "sample",
             "next_tokens")
_LAZY = {
    **{name: "mfcore.generation.sampling" for name in _SAMPLING},
    **{name: "mfcore.generation.decoding" for name in ("generate", "bucket_length", "left_pad", "TOKENS_PER_CALL")},
    "TextStreamer": "mfcore.generation.streamers",
    **{name: "mfcore.generation.scoring" for name in ("loglikelihood", "loglikelihood_tokens", "loglikelihood_rolling",
                                                       "prompt_logprobs", "token_logprobs", "rolling_windows")},
    "GenerateOutput": "mfcore.generation.outputs",
}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = ["GENERATION_CONFIG_NAME", "GenerationConfig", *_LAZY]
