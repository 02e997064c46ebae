"""`mfcore serve` with real clients: the official openai package and raw HTTP (httpx) against a server on
a free loopback port, over a tiny random Llama with the Llama 3 tokenizer. The reference is transformers
(fp32 eager, the same weights, randomized norms): greedy text and prompt log-probabilities come from it.
The load test checks that continuous batching changes nothing: 64 requests from 16 clients, each equal
to the same request run alone, no slot left taken and nothing compiled while serving."""
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mfcore  # noqa: E402
from mfcore.kernels import decode_kernels, status as kernels_status  # noqa: E402
from mfcore.serving.app import attach  # noqa: E402
from mfcore.serving.engine import Engine  # noqa: E402
from serve_helpers import running_server  # noqa: E402

MAX_BATCH = 4  # decode row buckets 1, 2, 4: each compiles at start
MAX_MODEL_LEN = 128
CHUNK = 32  # prompts over 32 tokens prefill in chunks (one of PROMPTS does)
STOPS = [128001, 128008, 128009]  # the Llama 3 tokenizer's stop tokens (as the server reads them)
PROMPTS = ["Hello world", "Once upon a time", "The capital of France is", "def f(x):\n    return",
           "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", "Over 32 tokens: " + " ".join(f"w{i}" for i in range(20)), "Numbers: 3.14159, 2.71828 and",
           "Le chat est sur la table, et le chien"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, request):
    """(base url, engine, transformers model, tokenizer), one server for the module."""
    data = request.config.rootpath.parent / "shared" / "testdata" / "llama3" / "tokenizer.model"
    if not data.exists():
        pytest.skip(f"reference test data not found at {data}")
    directory = tmp_path_factory.mktemp("tiny-llama3")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.06,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="eager",
                                      bos_token_id=128000, eos_token_id=128001)
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.5 * torch.randn_like(param))
    hf.save_pretrained(directory, safe_serialization=True)
    mfcore.AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(data)).save_pretrained(directory)
    model = mfcore.AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = mfcore.AutoTokenizer.from_pretrained(directory)

    with running_server() as (base, state):
        loading = httpx.get(f"{base}/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert httpx.post(f"{base}/v1/completions", json={"prompt": "x"}).status_code == 503
        engine = attach(state, model, tokenizer, ["tiny"], max_batch=MAX_BATCH, max_model_len=MAX_MODEL_LEN,
                        prefill_chunk_size=CHUNK)
        yield base, engine, hf, tokenizer


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="none", max_retries=0, timeout=120)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def hf_greedy(hf, ids, max_new_tokens):
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=STOPS, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    while new and new[-1] in STOPS:
        new.pop()
    return new


def test_completions_greedy_match_transformers(served, client):
    _, _, hf, tokenizer = served
    prompts = PROMPTS[:3] + PROMPTS[5:6]  # the last one prefills in two chunks
    assert len(tokenizer.encode(PROMPTS[5])) > CHUNK
    result = client.completions.create(model="tiny", prompt=prompts, max_tokens=10, temperature=0)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    for prompt, choice in zip(prompts, result.choices):
        ids = tokenizer.encode(prompt)
        assert choice.text == tokenizer.decode(hf_greedy(hf, ids, 10), skip_special_tokens=True)
        assert choice.finish_reason == "length"
    assert result.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    assert result.usage.completion_tokens == 40
    # Token ids in, the same text out.
    ids = tokenizer.encode(PROMPTS[1])
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=10, temperature=0)
    assert by_ids.choices[0].text == result.choices[1].text
    batched_ids = client.completions.create(model="tiny", prompt=[ids, tokenizer.encode(PROMPTS[0])],
                                            max_tokens=10, temperature=0)
    assert [c.text for c in batched_ids.choices] == [result.choices[1].text, result.choices[0].text]


def test_packed_prefill_gives_each_prompt_the_logits_of_transformers(served):
    """Prompts packed end to end into one row (one crossing a chunk boundary, one longer than a chunk): each
    prompt's last-token logits equal transformers' on that prompt alone. Called while the engine is idle;
    inserting into no slot leaves the decode batch alone."""
    _, engine, hf, tokenizer = served
    if not engine.packing:
        pytest.skip(f"packed prefill needs mfcore's CPU kernels ({kernels_status()})")
    prompts = [tokenizer.encode(p) for p in (PROMPTS[0], PROMPTS[1], PROMPTS[5], PROMPTS[7])]
    ends = np.cumsum([len(p) for p in prompts])
    assert len(prompts[2]) > CHUNK and ends[1] < CHUNK < ends[2] and 2 * CHUNK < ends[3] < 3 * CHUNK
    with engine.lock:  # the engine thread waits on this lock while idle
        logits = engine._prefill_packed(prompts, insert_into=[])
    for ids, got in zip(prompts, logits):
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0, -1].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_packed_prefill_without_hidden_at_runs_the_head_in_every_chunk(served, monkeypatch):
    """A model without forward_with_cache(hidden_at=) gets its prompts' logits from each chunk (logits_at):
    the same logits as the head run once per pack on the last hidden states."""
    _, engine, _, tokenizer = served
    if not engine.packing:
        pytest.skip(f"packed prefill needs mfcore's CPU kernels ({kernels_status()})")
    assert engine.head_once
    monkeypatch.setattr(type(engine.model), "supports_hidden_at", False)
    every_chunk = Engine(engine.model, tokenizer, max_batch=MAX_BATCH, max_model_len=MAX_MODEL_LEN,
                         prefill_chunk_size=CHUNK, warmup=False)
    every_chunk.stop()
    assert not every_chunk.head_once
    prompts = [tokenizer.encode(p) for p in (PROMPTS[0], PROMPTS[5], PROMPTS[7])]
    with engine.lock:
        once = engine._prefill_packed(prompts, insert_into=[])
    for got, want in zip(every_chunk._prefill_packed(prompts, insert_into=[]), once):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_echo_logprobs_are_the_prompt_log_probabilities_of_transformers(served, client):
    """What lm-eval's local-completions reads: echo + logprobs, one entry per prompt token (the first None)."""
    _, _, hf, tokenizer = served
    prompt = PROMPTS[3]
    ids = tokenizer.encode(prompt)
    result = client.completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0, echo=True,
                                       logprobs=2)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.token_logprobs) == len(ids) + 1 and logprobs.token_logprobs[0] is None
    with torch.no_grad():
        reference = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
    expected = [reference[i, ids[i + 1]] for i in range(len(ids) - 1)]
    np.testing.assert_allclose(logprobs.token_logprobs[1:len(ids)], expected, atol=2e-4)
    for i in range(1, len(ids)):
        best = np.sort(reference[i - 1])[::-1][:2]
        np.testing.assert_allclose(sorted(logprobs.top_logprobs[i].values(), reverse=True), best, atol=2e-4)
    # the generated token: greedy, its log-probability the best one
    generated = hf_greedy(hf, ids, 1)
    assert logprobs.tokens[-1] == tokenizer.decode(generated)
    np.testing.assert_allclose(logprobs.token_logprobs[-1], reference[-1].max(), atol=2e-4)
    assert result.choices[0].text.startswith(tokenizer.decode(ids))
    # max_tokens 0 scores the prompt only
    scored = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].text == prompt
    np.testing.assert_allclose(scored.choices[0].logprobs.token_logprobs[1:], expected, atol=2e-4)


def test_chat_uses_the_template_and_matches_transformers(served, client):
    _, _, hf, tokenizer = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    result = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert ids[:2] == [128000, 128006] and ids[-4:] == [128006, 78191, 128007, 271]
    assert result.choices[0].message.content == tokenizer.decode(hf_greedy(hf, ids, 8), skip_special_tokens=True)
    assert result.choices[0].message.role == "assistant"
    assert result.usage.prompt_tokens == len(ids)
    tokenized = httpx.post(served[0] + "/tokenize", json={"messages": messages}).json()
    assert tokenized["tokens"] == ids and tokenized["count"] == len(ids)


def test_streaming_gives_the_same_text_as_one_answer(served, client):
    plain = client.completions.create(model="tiny", prompt=PROMPTS[4], max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[4], max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    messages = [{"role": "user", "content": "Hi"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                              stream=True)
    parts = [c.choices[0].delta.content or "" for c in streamed]
    assert "".join(parts) == chat.choices[0].message.content
    # the wire format: data: lines, then data: [DONE]
    with httpx.stream("POST", served[0] + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": "A", "max_tokens": 3, "temperature": 0, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_stop_strings_across_token_boundaries_never_leak(served, client):
    _, _, hf, tokenizer = served
    ids = tokenizer.encode(PROMPTS[2])
    new = hf_greedy(hf, ids, 12)
    text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731 (as the server answers)
    full = text(new)
    # a stop string made of the end of token 4 and the start of token 5 (both pieces non-empty)
    head, tail = text(new[:4]), text(new[:5])
    assert len(tail) > len(head) >= 1
    stop = head[-1:] + tail[len(head):len(head) + 1]
    at = full.find(stop)
    assert 0 <= at < len(head) + 1
    result = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=12, temperature=0, stop=[stop])
    assert result.choices[0].text == full[:at] and result.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=12, temperature=0,
                                            stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == full[:at]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_the_same_alone_or_in_a_full_batch(served, client):
    _, engine, _, tokenizer = served
    ask = dict(model="tiny", prompt=PROMPTS[6], max_tokens=10, temperature=0.9, top_p=0.95, seed=1234,
               extra_body={"top_k": 40})  # top_k: vLLM's extension, passed as the openai client passes extras
    alone = client.completions.create(**ask).choices[0].text
    with ThreadPoolExecutor(MAX_BATCH) as pool:
        others = [pool.submit(client.completions.create, model="tiny", prompt=p, max_tokens=12, temperature=0.7,
                              seed=i) for i, p in enumerate(PROMPTS[:MAX_BATCH - 1])]
        together = pool.submit(client.completions.create, **ask)
        assert together.result().choices[0].text == alone
        [f.result() for f in others]
    # the in-process reference: generate's host sampling path, batch 1, same seed
    ids = tokenizer.encode(PROMPTS[6])
    out = engine.model.generate([ids], max_new_tokens=10, do_sample=True, temperature=0.9, top_p=0.95, top_k=40,
                                seed=1234, choice_in_graph=False, eos_token_id=STOPS)
    assert alone == tokenizer.decode([int(t) for t in out[0][len(ids):] if t not in STOPS], skip_special_tokens=True)
    n2 = client.completions.create(**dict(ask, n=2))
    assert n2.choices[0].text == alone and len(n2.choices) == 2


@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-4", "prompt": "x"}, "model"),
    ({"model": "tiny", "prompt": "x", "max_tokens": MAX_MODEL_LEN}, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "temperature": -1}, "temperature"),
    ({"model": "tiny", "prompt": [5, 128256]}, "prompt"),
    ({"model": "tiny", "prompt": [[5, -1]]}, "prompt"),
    ({"model": "tiny", "prompt": {"text": "x"}}, "prompt"),
    ({"model": "tiny", "prompt": "x", "logprobs": 9}, "logprobs"),
    ({"model": "tiny", "prompt": "x", "stop": 3}, "stop"),
    ({"model": "tiny", "prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),
])
def test_bad_requests_get_400_in_openai_shape(served, body, param):
    response = httpx.post(served[0] + "/v1/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_bad_requests_do_not_harm_running_ones(served, client):
    base = served[0]
    assert httpx.post(base + "/v1/completions", content=b"{not json", timeout=30).status_code == 400
    assert httpx.post(base + "/v1/chat/completions", json={"model": "tiny", "messages": "hi"}).status_code == 400
    expected = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0).choices[0].text
    stream = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0, stream=True)
    text = next(iter(stream)).choices[0].text
    for body in ({"model": "tiny", "prompt": [10 ** 9]}, {"model": "tiny", "prompt": "x" * 5000, "max_tokens": 1}):
        assert httpx.post(base + "/v1/completions", json=body, timeout=30).status_code == 400
    text += "".join(c.choices[0].text for c in stream)
    assert text == expected
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="nope", prompt="x")


def test_status_routes(served, client):
    base, engine = served[0], served[1]
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    assert [m.id for m in client.models.list()] == ["tiny"]
    ids = httpx.post(base + "/tokenize", json={"prompt": "Hello world"}).json()["tokens"]
    assert ids == [128000, 9906, 1917]
    assert httpx.post(base + "/detokenize", json={"tokens": ids[1:]}).json() == {"prompt": "Hello world"}
    assert httpx.post(base + "/detokenize", json={"tokens": [-3]}).status_code == 400
    metrics = httpx.get(base + "/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    assert values["mfcore_generation_tokens_total"] == engine.stats["generation_tokens"] > 0
    assert values['mfcore_requests_total{route="/v1/completions",status="200"}'] >= 1
    assert values["mfcore_queue_length"] == 0 and values["mfcore_time_to_first_token_seconds_count"] > 0
    assert "mfcore_generation_tokens_per_second" in values


def test_a_client_that_goes_away_frees_its_slot(served):
    base, engine = served[0], served[1]
    with httpx.stream("POST", base + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": "A", "max_tokens": 120, "temperature": 0, "stream": True,
            "ignore_eos": True}) as response:
        next(response.iter_lines())
        assert engine.running == 1
    for _ in range(100):
        if engine.running == 0:
            break
        time.sleep(0.05)
    assert engine.running == 0 and engine.stats["generation_tokens"] > 0


def test_load_64_requests_from_16_clients_equal_alone_no_leak_no_recompile(served, client, capfd):
    engine = served[1]
    requests = [dict(prompt=PROMPTS[i % len(PROMPTS)], max_tokens=4 + i % 16) for i in range(64)]  # 16 distinct

    def ask(request):
        return client.completions.create(model="tiny", temperature=0, **request).choices[0]

    alone = {}
    for request in requests:  # each distinct request alone (this also compiles every prompt bucket)
        key = (request["prompt"], request["max_tokens"])
        if key not in alone:
            alone[key] = ask(request).text
    shapes = {name: set(s) for name, s in engine.compiled_shapes.items()}
    capfd.readouterr()
    memory = rss_mb()
    steps, prefills = engine.stats["steps"], engine.stats["prefills"]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, requests))
    took = time.monotonic() - started
    assert took < 60
    for request, answer in zip(requests, answers):
        assert answer.text == alone[(request["prompt"], request["max_tokens"])]
        assert answer.finish_reason in ("length", "stop")
    assert engine.running == 0 and engine.queue_length == 0 and all(s is None for s in engine.slots)
    assert {name: set(s) for name, s in engine.compiled_shapes.items()} == shapes  # no new shape: no compile
    assert "compiled again" not in capfd.readouterr().err
    grown = rss_mb() - memory
    assert grown < 150, f"the process grew by {grown:.0f} MB over the load test"
    # batching happened: far fewer decode steps than tokens
    tokens = sum(r["max_tokens"] for r in requests)
    assert engine.stats["steps"] - steps < tokens / 3
    if decode_kernels() is not None:  # packing and in-place decode run on mfcore's CPU kernels
        # prompts that waited together were prefilled together (packed into one row): fewer prefills than
        # requests (with 4 slots most join one at a time, as a slot frees)
        assert engine.packing and engine.stats["prefills"] - prefills < len(requests)
        assert engine.in_place  # decode wrote the slots' caches in place: the answers above equal alone runs
        assert engine.pack_in_place  # and so did the packed prefill's chunks, the packed caches
    print(f"load: 64 requests, 16 clients, {took:.1f} s, {engine.stats['steps'] - steps} steps for {tokens} tokens, "
          f"RSS {grown:+.0f} MB")


def _burst_prefills(served, prompts, gap: float) -> int:
    """Submit `prompts` (token ids) to the idle engine `gap` seconds apart, 2 greedy tokens each; wait for all
    of them; return how many prefills they took."""
    from mfcore.serving.engine import SamplingParams, Sequence_

    engine = served[1]
    if not engine.packing:
        pytest.skip(f"packed prefill runs on mfcore's CPU kernels ({kernels_status()})")
    for _ in range(100):  # idle first: no earlier test's request still running
        if engine.running == 0 and engine.queue_length == 0:
            break
        time.sleep(0.05)
    finished = []
    prefills = engine.stats["prefills"]
    for ids in prompts:
        engine.submit(Sequence_(ids, SamplingParams(max_tokens=2, temperature=0.0),
                                lambda kind, payload: finished.append(payload) if kind in ("done", "error") else None))
        time.sleep(gap)
    for _ in range(400):
        if len(finished) == len(prompts):
            break
        time.sleep(0.05)
    assert finished == ["length"] * len(prompts)
    return engine.stats["prefills"] - prefills


def test_requests_sent_together_to_an_idle_server_prefill_as_one_pack(served):
    """Clients that start together reach the server a little apart: an idle engine waits for the others
    (gather_ms) instead of prefilling the first prompt alone and making the rest wait for it."""
    tokenizer = served[3]
    # 10 ms apart, well inside the 40 ms the engine waits after each
    assert _burst_prefills(served, [tokenizer.encode(PROMPTS[i]) for i in range(MAX_BATCH)], 0.01) == 1


def test_a_large_pack_waits_longer_for_its_stragglers(served):
    """Where the prefill about to run is long (prefill_s_per_token), gaps longer than gather_ms between
    arrivals do not split the burst: the engine waits up to GATHER_SHARE of that prefill for quiet (with
    GATHER_SHARE = 0 these three prompts take three prefills)."""
    from mfcore.serving.engine import GATHER_SHARE

    engine, tokenizer = served[1], served[3]
    prompts = [tokenizer.encode(PROMPTS[i]) for i in range(3)]
    gap = 0.1  # 2.5 x gather_ms
    # as if each prompt token took this long to prefill: one pending prompt asks for ~2 gaps of quiet
    measured, engine.prefill_s_per_token = engine.prefill_s_per_token, 2 * gap / (GATHER_SHARE * len(prompts[0]))
    try:
        assert _burst_prefills(served, prompts, gap) == 1
    finally:
        engine.prefill_s_per_token = measured


def test_the_command_serves_a_directory_and_exits_2_when_loading_fails(served, tmp_path, capsys):
    """`mfcore serve` itself, as a process: a model directory served to the openai client; a model that
    cannot load prints why and exits with 2."""
    import socket
    import subprocess
    import sys

    _, engine, hf, tokenizer = served
    directory = tmp_path / "model"
    engine.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mfcore", "serve", "--model", str(directory), "--port",
                                str(port), "--max-batch", "1", "--max-model-len", "64", "--served-model-name", "m",
                                "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None, process.stdout.read()
            time.sleep(0.3)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        text = client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=5, temperature=0).choices[0].text
        assert text == tokenizer.decode(hf_greedy(hf, tokenizer.encode(PROMPTS[0]), 5), skip_special_tokens=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    from mfcore.cli import main  # the same command in this process: loading fails, it stops and says why

    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", str(port), "--log-level", "warning"]) == 2
    assert "mfcore serve: error:" in capsys.readouterr().err


def test_held_back_text_is_what_could_still_begin_a_stop_string():
    from mfcore.serving.engine import _held_back

    assert _held_back("hello wor", ["world"]) == 3  # "wor" may become "world"
    assert _held_back("hello", ["xyz", "lo!"]) == 2
    assert _held_back("hello", ["abc"]) == 0 and _held_back("hello", []) == 0
    assert _held_back("caf\ufffd", ["abc"]) == 1  # an unfinished UTF-8 character waits for its next byte
