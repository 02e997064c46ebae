"""Log-likelihood scoring speed: lm-eval's backend "mfcore" against lm-eval's own `hf` backend (transformers +
torch, fp32), same checkpoint, same requests, same batch size, on this CPU. Run by hand, not a test:

    python benchmarks/eval.py [--model DIR | --size small] [--requests 256] [--batch-size 8] [--json FILE]

The requests are a multiple-choice workload shaped like hellaswag: each document is a context of 30-90 words
from a fixed vocabulary list (40-135 tokens) and 4 continuations of 3-12 words (5-21 tokens), scored as lm-eval's
`loglikelihood` requests (Instance objects through the backend's own loglikelihood, so both sides tokenize,
sort, batch and pad as they do inside lm_eval.simple_evaluate). Without --model, a random Llama of
--size (small: hidden 768, 12 layers, vocab 32000, ~110M parameters; medium: hidden 1536, 16 layers, 4 of 12
key/value heads, ~450M) is built by transformers and saved with a byte-level BPE tokenizer trained on the
word list.

Each backend runs in its own worker process, one after the other (OMP_WAIT_POLICY=PASSIVE, so the idle one
cannot spin on the cores): a warm-up pass on the first 32 requests (mfcore compiles its buckets here), then
the timed pass on all of them. requests/s = requests / timed seconds; the ratio is mfcore / hf. The two
sides' scores are compared too (max relative difference of the summed log-likelihoods).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder is sys.path[0]: the sibling benchmark tokenizers.py would shadow the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

WORDS = ("the a of to and in is was for on with as by at from that it his her they we you one two three "
         "man woman dog cat house car city river tree book water fire light day night year time hand eye "
         "runs walks sees takes makes finds gives tells thinks looks comes goes knows wants uses works "
         "big small old new good bad long short high low red blue green white black hot cold fast slow").split()
SIZES = {"small": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=12, vocab_size=32000, tie_word_embeddings=True),
         "medium": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=16, num_attention_heads=12,
                        num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=True),
         "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=1000, tie_word_embeddings=False)}


def build_checkpoint(directory: Path, size: str) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(
        directory)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SIZES[size], max_position_embeddings=2048, bos_token_id=0, eos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def make_requests(count: int, seed: int = 0):
    """(context, continuation) text pairs: count // 4 documents of 4 choices each."""
    import random

    rng = random.Random(seed)
    pairs = []
    for _ in range(count // 4):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90)))
        for _ in range(4):
            pairs.append((context, " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))))
    return pairs


def worker(backend: str, model: str, pairs, batch_size: int, max_length: int) -> dict:
    from lm_eval.api.instance import Instance

    start = time.perf_counter()
    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, dtype="float32", batch_size=batch_size, max_length=max_length, device="cpu")
    else:
        from mfcore.evaluation.lm_eval_backend import MfcoreLM

        lm = MfcoreLM(pretrained=model, batch_size=batch_size, max_length=max_length)
    load = time.perf_counter() - start
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    start = time.perf_counter()
    lm.loglikelihood(requests[:32], disable_tqdm=True)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    scores = lm.loglikelihood(requests, disable_tqdm=True)
    first = time.perf_counter() - start  # mfcore: includes compiling the buckets the warm-up did not meet
    start = time.perf_counter()
    lm.loglikelihood(requests, disable_tqdm=True)
    seconds = time.perf_counter() - start
    rss = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                rss = int(line.split()[1]) // 1024
    return {"backend": backend, "load_s": load, "warmup_s": warm, "first_pass_s": first, "seconds": seconds,
            "requests_per_s": len(requests) / seconds, "peak_rss_mb": rss, "scores": [s for s, _ in scores]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a Hugging Face Llama directory with tokenizer files")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pairs = make_requests(args.requests)
    if args.worker:  # inside a worker process: one backend
        print(json.dumps(worker(args.worker, args.model, pairs, args.batch_size, args.max_length)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_checkpoint(Path(tmp) / args.size, args.size))
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false")
        results = {}
        for backend in ("mfcore", "hf"):
            command = [sys.executable, __file__, "--worker", backend, "--model", model, "--requests",
                       str(args.requests), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.stderr.write(done.stderr[-4000:])
                return done.returncode
            results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, theirs = results["mfcore"], results["hf"]
    worst = max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(ours["scores"], theirs["scores"]))
    summary = {"model": args.model or f"random {args.size}", "requests": len(pairs), "batch_size": args.batch_size,
               "ratio_mfcore_over_hf": ours["requests_per_s"] / theirs["requests_per_s"],
               "max_relative_score_difference": worst,
               **{f"{k}_{name}": v for name, r in results.items() for k, v in r.items() if k not in ("scores", "backend")}}
    for name, r in results.items():
        print(f"{name:7} {r['requests_per_s']:8.2f} requests/s  ({r['seconds']:.1f} s timed; first pass "
              f"{r['first_pass_s']:.1f} s, warm-up {r['warmup_s']:.1f} s, "
              f"load {r['load_s']:.1f} s, peak RSS {r['peak_rss_mb']} MB)")
    print(f"ratio mfcore / hf: {summary['ratio_mfcore_over_hf']:.2f}x; scores agree to {worst:.1e} relative")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
