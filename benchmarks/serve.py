"""Serving benchmark (run by hand): `mfcore serve` vs llama.cpp's `llama-server`, same model, same precision.

    python benchmarks/serve.py [--model ~/.cache/mfcore-bench/llama-1.5b] [--gguf ~/.cache/mfcore-bench/llama-1.5b-bf16.gguf]
                               [--llama-server BIN] [--clients 1,4,16] [--requests 8] [--prompt-words 48]
                               [--max-tokens 32] [--threads 2] [--only mfcore|llama] [--out FILE.json]

Each server runs alone as its own process (one after the other, never both at once), on 127.0.0.1:
- mfcore: `python -m mfcore serve --model DIR --dtype bfloat16 --max-batch MAX(clients) --max-model-len 256`;
- llama.cpp: `llama-server -m GGUF -t THREADS -np MAX(clients) -c 256*MAX(clients) --no-cache-prompt`
  (continuous batching is its default).
After /health says ready, one warm-up request (mfcore compiles its prompt and decode graphs there), then
for each concurrency level C: C client threads share `--requests` streamed /v1/completions requests
(at least one each; each thread opens its HTTP client before the level starts and keeps it, as a real
client does: creating one takes 20-40 ms of CPU, mostly under the GIL, so 16 threads each creating one
per request spread the "burst" over ~0.3 s), greedy, `max_tokens` with `ignore_eos` (both servers honour
it), so every request yields exactly max_tokens tokens (checked once per server from `usage`). Each prompt is unique (a
request number in front), so no server reuses another request's cache. Figures per level: output
tokens/s over the level's wall time, and p50 / p99 time to first token (the first chunk with text).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

BENCH = Path.home() / ".cache" / "mfcore-bench"
LLAMA_SERVER = Path("/root/.cache/llama-cpp-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server")
CONTEXT = 256
TEXT = ("The history of the river valley begins with the first farmers who settled along its banks, built "
        "channels for water, traded grain and cloth with the towns upstream, and wrote down the floods of each "
        "year on clay tablets that were found much later by travellers walking through the ruined houses")


def prompt(index: int, words: int) -> str:
    body = " ".join((TEXT.split() * 4)[:words])
    return f"Request {index}. {body}"


def wait_ready(base: str, process: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base} not ready after {timeout} s")


def stream_one(client: httpx.Client, base: str, model: str, text: str, max_tokens: int):
    """(seconds to the first text, seconds in all) of one streamed completion."""
    body = {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}
    start = time.monotonic()
    first = None
    with client.stream("POST", f"{base}/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if first is None and choices and choices[0].get("text"):
                first = time.monotonic() - start
    return first, time.monotonic() - start


def run_level(base: str, model: str, clients: int, requests: int, words: int, max_tokens: int, offset: int):
    count = max(requests, clients)
    jobs = list(range(offset, offset + count))
    lock = threading.Lock()
    ttft, errors = [], []
    ready = threading.Barrier(clients + 1)  # every thread has its HTTP client before the clock starts

    def client():
        with httpx.Client(timeout=600) as http:
            ready.wait()
            while True:
                with lock:
                    if not jobs:
                        return
                    index = jobs.pop(0)
                try:
                    first, _ = stream_one(http, base, model, prompt(index, words), max_tokens)
                    with lock:
                        ttft.append(first)
                except Exception as exc:  # noqa: BLE001 (reported, not fatal)
                    with lock:
                        errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    done = len(ttft)
    return {"clients": clients, "requests": count, "completed": done, "errors": errors[:3], "wall_s": round(wall, 2),
            "tokens_per_s": round(done * max_tokens / wall, 2),
            "ttft_p50_s": round(float(np.percentile(ttft, 50)), 3) if ttft else None,
            "ttft_p99_s": round(float(np.percentile(ttft, 99)), 3) if ttft else None}


def bench_server(name: str, command, base: str, model: str, args) -> dict:
    print(f"[{name}] {' '.join(map(str, command))}", file=sys.stderr)
    log = open(Path(args.log_dir) / f"serve-{name}.log", "w")
    process = subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = wait_ready(base, process, args.timeout)
        started = time.monotonic()
        check = httpx.post(f"{base}/v1/completions", timeout=600, json={
            "model": model, "prompt": prompt(-1, args.prompt_words), "max_tokens": args.max_tokens,
            "temperature": 0, "ignore_eos": True}).json()
        warm = time.monotonic() - started
        usage = check.get("usage", {})
        if usage.get("completion_tokens") != args.max_tokens:
            raise RuntimeError(f"{name}: asked {args.max_tokens} tokens, usage says {usage}")
        levels = [run_level(base, model, c, args.requests, args.prompt_words, args.max_tokens, 1000 * c)
                  for c in args.clients]
        for level in levels:
            print(f"[{name}] {level}", file=sys.stderr)
        return {"ready_s": round(ready, 1), "warmup_s": round(warm, 1), "prompt_tokens": usage.get("prompt_tokens"),
                "levels": levels}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(BENCH / "llama-1.5b"))
    parser.add_argument("--gguf", default=str(BENCH / "llama-1.5b-bf16.gguf"))
    parser.add_argument("--llama-server", default=str(LLAMA_SERVER))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--clients", default="1,4,16", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--requests", type=int, default=8, help="requests per level (at least one per client)")
    parser.add_argument("--prompt-words", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("mfcore", "llama"))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--log-dir", default="/tmp", help="the servers' logs: serve-mfcore.log, serve-llama.log")
    parser.add_argument("--mfcore-log-level", default="warning", help="debug: the engine logs each prefill")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    slots = max(args.clients)
    result = {"model": args.model, "gguf": args.gguf, "dtype": args.dtype, "max_tokens": args.max_tokens,
              "prompt_words": args.prompt_words, "threads": args.threads, "slots": slots,
              "load_average_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if args.only != "llama":
        result["mfcore"] = bench_server("mfcore", [sys.executable, "-m", "mfcore", "serve", "--model", args.model,
                                                   "--dtype", args.dtype, "--port", "8811", "--max-batch", slots,
                                                   "--max-model-len", CONTEXT, "--served-model-name", "bench",
                                                   "--log-level", args.mfcore_log_level],
                                        "http://127.0.0.1:8811", "bench", args)
    if args.only != "mfcore":
        result["llama"] = bench_server("llama", [args.llama_server, "-m", args.gguf, "--host", "127.0.0.1",
                                                 "--port", "8812", "-t", args.threads, "-tb", args.threads,
                                                 "-np", slots, "-c", CONTEXT * slots, "--no-cache-prompt"],
                                       "http://127.0.0.1:8812", "bench", args)
    if "mfcore" in result and "llama" in result:
        result["ratios"] = [{"clients": m["clients"],
                             "throughput_mfcore_over_llama": round(m["tokens_per_s"] / l["tokens_per_s"], 3),
                             "ttft_p50_mfcore_over_llama": round(m["ttft_p50_s"] / l["ttft_p50_s"], 2),
                             "ttft_p99_mfcore_over_llama": round(m["ttft_p99_s"] / l["ttft_p99_s"], 2)}
                            for m, l in zip(result["mfcore"]["levels"], result["llama"]["levels"])]
    result["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
