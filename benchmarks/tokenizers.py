"""Tokenizer throughput: our slow and Fast tokenizers against the raw libraries, in one run.

    python benchmarks/tokenizers.py [--texts 10000] [--repeat 3] [--testdata ../shared/testdata]

For Llama 2 (sentencepiece model) and Llama 3 (tiktoken ranks), encodes one batch of N texts with
  raw sentencepiece / tiktoken (their batch calls), raw `tokenizers` (the Rust tokenizer our Fast
  class wraps), mfcore's slow class and mfcore's Fast class (`tokenizer(batch)`: ids + attention mask),
then decodes the ids back. Prints best-of-`repeat` times (candidates take turns) and each one as a ratio to the vendor library
(ratio < 1: faster than the vendor). Run by hand; results go to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

# This file is called tokenizers.py: drop its folder from the import path so that `import tokenizers`
# finds Hugging Face's library, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will more out up into do "
         "model token layer weight training language attention dataset gradient tensor checkpoint inference "
         "naïve café résumé Zürich Ελληνικά русский 日本語 中文 한국어 العربية emoji 😀 🎉 👍🏽").split()
PUNCT = [".", ",", ";", ":", "!", "?", " -", " (see", ")", "\n", "\n\n", "  "]


def make_texts(n: int, vector_texts, seed: int = 0):
    """N texts: the llama.cpp vectors plus deterministic pseudo-sentences of 5-120 words with numbers,
    punctuation, code-ish lines and non-Latin scripts."""
    rng = random.Random(seed)
    texts = list(vector_texts)
    while len(texts) < n:
        words = []
        for _ in range(rng.randint(5, 120)):
            roll = rng.random()
            if roll < 0.08:
                words.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
            elif roll < 0.12:
                words.append(f"x_{rng.randint(0, 99)} = f(y[{rng.randint(0, 9)}]);")
            else:
                words.append(rng.choice(WORDS))
            if rng.random() < 0.1:
                words[-1] += rng.choice(PUNCT)
        texts.append(" ".join(words))
    return texts[:n]


def timed(repeat: int, candidates):
    """Best-of-`repeat` seconds per (label, fn), taking turns so that load from other processes on a
    shared machine spreads over all candidates instead of hitting one."""
    best = {label: float("inf") for label, _ in candidates}
    results = {}
    for _ in range(repeat):
        for label, fn in candidates:
            start = time.perf_counter()
            results[label] = fn()
            best[label] = min(best[label], time.perf_counter() - start)
    return best, results


def bench_family(name, texts, repeat, vendor_encode, vendor_decode, slow, fast):
    backend = fast.backend_tokenizer
    slow_name, fast_name = f"mfcore {type(slow).__name__}", f"mfcore {type(fast).__name__}"
    vendor, rust = f"{name} vendor", "raw tokenizers (Rust)"
    encode_times, encoded = timed(repeat, [
        (vendor, lambda: vendor_encode(texts)),
        (rust, lambda: [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]),
        (slow_name, lambda: slow(texts, add_special_tokens=False)["input_ids"]),
        (fast_name, lambda: fast(texts, add_special_tokens=False)["input_ids"]),
    ])
    ids = encoded[vendor]
    assert all(result == ids for result in encoded.values()), "ids differ"
    decode_times, decoded = timed(repeat, [
        (vendor, lambda: vendor_decode(ids)),
        (rust, lambda: backend.decode_batch(ids, skip_special_tokens=False)),
        (slow_name, lambda: slow.batch_decode(ids)),
        (fast_name, lambda: fast.batch_decode(ids)),
    ])
    assert all(result == decoded[vendor] for result in decoded.values()), "decoded texts differ"

    n_tokens = sum(len(i) for i in ids)
    print(f"\n### {name}: {len(texts)} texts, {sum(map(len, texts)):,} characters, {n_tokens:,} tokens\n")
    print("| op | implementation | best time (s) | texts/s | time vs vendor |")
    print("|---|---|---:|---:|---:|")
    for op, times in (("encode", encode_times), ("decode", decode_times)):
        for label, seconds in times.items():
            print(f"| {op} | {label} | {seconds:.3f} | {len(texts) / seconds:,.0f} | {seconds / times[vendor]:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--testdata", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata"))
    args = parser.parse_args()
    data = Path(args.testdata)

    import sentencepiece
    import tiktoken
    from mf_llama2 import LlamaTokenizer, LlamaTokenizerFast
    from mf_llama3 import Llama3Tokenizer, Llama3TokenizerFast
    from mf_llama3.tokenization_llama3 import PAT_STR, load_tiktoken_ranks

    vectors = (data / "llama2" / "ggml-vocab-llama-spm.gguf.inp").read_text(encoding="utf-8").split(
        "\n__ggml_vocab_test__\n")[:-1]
    texts = make_texts(args.texts, vectors)
    print(f"tokenizer benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, sentencepiece {sentencepiece.__version__}, "
          f"tiktoken {tiktoken.__version__}, tokenizers {__import__('tokenizers').__version__}")

    model2 = str(data / "llama2" / "tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=model2)
    bench_family("Llama 2 (sentencepiece)", texts, args.repeat, sp.encode, sp.decode,
                 LlamaTokenizer(vocab_file=model2), LlamaTokenizerFast(vocab_file=model2))

    model3 = str(data / "llama3" / "tokenizer.model")
    encoding = tiktoken.Encoding("llama3", pat_str=PAT_STR, mergeable_ranks=load_tiktoken_ranks(model3),
                                 special_tokens={})
    bench_family("Llama 3 (tiktoken)", texts, args.repeat, encoding.encode_ordinary_batch, encoding.decode_batch,
                 Llama3Tokenizer(vocab_file=model3), Llama3TokenizerFast(vocab_file=model3))


if __name__ == "__main__":
    main()
