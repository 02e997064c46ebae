"""Evaluation against independent references: mfcore's scoring against transformers' fp32 forward, its
rolling windows against lm-eval's own, and the lm-eval backend "mfcore" against lm-eval's `hf` backend on the
same tiny random Hugging Face checkpoint and three offline tasks (multiple choice, perplexity,
generate_until): equal accuracies and generations, log-likelihoods and perplexities within 1e-4 relative.
Also `mfcore eval` and `mfcore run --run_mode eval` with lm-eval tasks in the YAML."""
import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval backend needs lm-evaluation-harness (pip install 'mfcore[eval]')")
torch = pytest.importorskip("torch", reason="the reference scores come from transformers + torch")
pytest.importorskip("transformers")
pytest.importorskip("mf_llama2", reason="the checkpoint is a Llama")

import eval_helpers as helpers  # noqa: E402

TASKS = list(helpers.TASKS)
REL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def offline():
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")  # the tasks read local files only
    yield
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return helpers.make_checkpoint(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return helpers.write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def models(checkpoint):
    from mfcore import AutoModelForCausalLM
    import transformers

    ours = AutoModelForCausalLM.from_pretrained(checkpoint)
    reference = transformers.LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return ours, reference


def reference_logprobs(reference, ids):
    """log p(ids[t] | ids[:t]) for t >= 1, and whether ids[t] is the argmax, from transformers in fp32."""
    with torch.no_grad():
        logits = reference(torch.tensor([ids])).logits[0, :-1].float()
    target = torch.tensor(ids[1:])
    picked = torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0]
    return picked.numpy().astype(np.float64), (logits.argmax(-1) == target).numpy()


def test_rolling_windows_are_lm_evals():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from mfcore.generation.scoring import rolling_windows

    for length in (0, 1, 5, 16, 17, 40, 67):
        tokens = list(range(10, 10 + length))
        for max_seq_len, context_len in ((16, 1), (16, 4), (16, 16), (8, 1), (8, 5)):
            expected = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 3, max_seq_len, context_len)]
            assert rolling_windows(tokens, 3, max_seq_len, context_len) == expected, (length, max_seq_len, context_len)


@pytest.fixture(params=["cache", "graph"])
def scoring_path(request, models, monkeypatch):
    """Both ways mfcore scores: through the KV cache in chunks, contexts shared (chunked_scoring.py, the default
    where the model supports it), and the whole-sequence graphs (scoring.py, every other model)."""
    from mfcore.generation import scoring
    from mfcore.generation.chunked_scoring import supports_cached_scoring

    if request.param == "cache" and not supports_cached_scoring(models[0]):
        from mfcore.kernels import status

        pytest.skip(f"no cache-attention kernel here ({status()}): scoring takes the graph path only")
    original = scoring.token_logprobs
    monkeypatch.setattr(scoring, "token_logprobs", lambda *a, **k: original(
        *a, **dict(k, through_cache=request.param == "cache")))
    return request.param


def test_scores_equal_transformers(models, scoring_path):
    from mfcore.generation.chunked_scoring import CACHE_SLOTS_PER_CALL, MIN_CACHE_LENGTH, ROW_TOKENS
    from mfcore.generation.scoring import loglikelihood_rolling, loglikelihood_tokens, prompt_logprobs

    ours, reference = models
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(2, 300, rng.integers(1, 25)).tolist(), rng.integers(2, 300, rng.integers(1, 6)).tolist())
             for _ in range(9)]
    context = [0, 261, 316]  # the continuation below is transformers' own greedy one: is_greedy must say so
    greedy = []
    for _ in range(3):
        greedy.append(int(reference(torch.tensor([context + greedy])).logits[0, -1].argmax()))
    pairs.append((context, greedy))
    greedy_pair = len(pairs) - 1
    # Multiple choice: one context, several continuations (the cache path runs the context once for them all),
    # a context longer than a chunk (32 tokens), a continuation spanning chunks, a one-token context.
    shared = rng.integers(2, 300, 45).tolist()
    pairs += [(shared, rng.integers(2, 300, n).tolist()) for n in (1, 4, 9, 40)] + [([7], [8, 9])] * 2
    scores = ours.loglikelihood([c for c, _ in pairs], [x for _, x in pairs], batch_size=4)
    for (c, x), (logprob, is_greedy) in zip(pairs, scores):
        picked, argmax = reference_logprobs(reference, c + x)
        assert logprob == pytest.approx(picked[-len(x):].sum(), rel=REL)
        assert is_greedy == bool(argmax[-len(x):].all())
    assert scores[greedy_pair][1] is True

    # 24 choices of one context: more than one packed row (ROW_TOKENS) and more than one batch; then max_length
    # cuts the context from the left, so choices of one context of different lengths share less of it; then
    # a batch size whose rows x cache slots pass CACHE_SLOTS_PER_CALL: fewer rows a call, longer chunks
    many = [(shared, rng.integers(2, 300, n).tolist()) for n in rng.integers(10, 40, 24)]
    assert len(shared) + sum(len(x) for _, x in many) > ROW_TOKENS
    assert 64 * MIN_CACHE_LENGTH > CACHE_SLOTS_PER_CALL
    for limit, batch_size in ((None, 2), (64, 2), (None, 64)):
        scored = loglikelihood_tokens(ours, many, batch_size=batch_size, max_length=limit)
        for (c, x), (logprob, _) in zip(many, scored):
            window = (c + x)[-(limit or len(c + x)) - 1:]
            assert logprob == pytest.approx(reference_logprobs(reference, window)[0][-len(x):].sum(), rel=REL)

    ids = rng.integers(2, 300, 100).tolist()  # longer than a chunk and than the graph path's first buckets
    aligned = prompt_logprobs(ours, ids)
    assert len(aligned) == len(ids) and aligned[0] is None
    np.testing.assert_allclose(aligned[1:], reference_logprobs(reference, ids)[0], rtol=REL)

    # rolling: 40 tokens in windows of 16; with stride 4 each window sees up to 12 earlier tokens
    text = rng.integers(2, 300, 40).tolist()
    padded = [0] + text  # the first token is conditioned on the prefix token
    # windows predict 16 new tokens each; the last, shorter one still sees up to 16 tokens (lm-eval's rule)
    disjoint = sum(reference_logprobs(reference, padded[max(0, end - 16):end + 1])[0][-(end - s):].sum()
                   for s, end in ((0, 16), (16, 32), (32, 40)))
    strided = reference_logprobs(reference, padded[:17])[0].sum() + sum(
        reference_logprobs(reference, padded[end - 16:end + 1])[0][-4:].sum() for end in range(20, 41, 4))
    for stride, expected in ((None, disjoint), (4, strided)):
        total = loglikelihood_rolling(ours, [text], max_length=16, stride=stride, prefix_token=0)[0]
        assert total == pytest.approx(expected, rel=REL), stride
    assert disjoint != pytest.approx(strided, rel=REL)


def test_a_prefix_model_scores_through_the_whole_sequence_graphs(checkpoint):
    """A prefix (prefix-tuning) must be written before the first prompt chunk: the cache path refuses it and the
    default takes the whole-sequence graphs."""
    from mfcore import AutoModelForCausalLM
    from mfcore.generation.chunked_scoring import supports_cached_scoring
    from mfcore.generation.scoring import loglikelihood_tokens
    from mfcore.training.prefix import PrefixConfig, inject_prefix

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    inject_prefix(model, PrefixConfig(length=4, projection=False))
    assert not supports_cached_scoring(model)
    with pytest.raises(ValueError, match="through_cache=True"):
        loglikelihood_tokens(model, [([0, 5], [6])], through_cache=True)
    (logprob, _), = loglikelihood_tokens(model, [([0, 5], [6])])
    assert math.isfinite(logprob) and logprob < 0


def test_generate_scores_and_return_sequences_equal_transformers(models):
    ours, reference = models
    rows = [[0, 261, 316, 311], [0, 267, 303]]  # ragged: the second is left-padded
    out = ours.generate(rows, max_new_tokens=5, return_dict_in_generate=True, output_scores=True)
    ids, mask = torch.tensor([[0, 261, 316, 311], [1, 0, 267, 303]]), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    expected = reference.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=1,
                                  return_dict_in_generate=True, output_scores=True)
    np.testing.assert_array_equal(out.sequences[:, 4:], expected.sequences[:, 4:].numpy())
    assert len(out.scores) == len(expected.scores) == 5
    for mine, theirs in zip(out.scores, expected.scores):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=REL, atol=1e-4)
    transition = reference.compute_transition_scores(expected.sequences, expected.scores, normalize_logits=True)
    np.testing.assert_allclose(out["token_logprobs"], transition.numpy(), rtol=REL, atol=1e-4)
    assert isinstance(ours.generate(rows, max_new_tokens=2, return_dict_in_generate=True).sequences, np.ndarray)

    sampled = ours.generate([[0, 261]], max_new_tokens=4, num_return_sequences=3, do_sample=True, seed=1)
    assert sampled.shape == (3, 6) and (sampled[:, :2] == [0, 261]).all()
    assert len({tuple(r) for r in sampled[:, 2:].tolist()}) > 1  # the copies draw differently
    greedy = ours.generate([[0, 261]], max_new_tokens=4, num_return_sequences=2)
    assert (greedy[0] == greedy[1]).all()


def test_beam_search_equals_transformers(models):
    ours, reference = models
    prompts = [[0, 261, 316, 311], [0, 267, 303, 72]]
    free = reference.generate(torch.tensor(prompts), max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=1)
    stop = int(free[0, 6])  # a token the beams do produce: as EOS it finishes hypotheses early
    cases = [dict(num_beams=3, length_penalty=1.0, early_stopping=False, num_return_sequences=1, max_new_tokens=6),
             dict(num_beams=4, length_penalty=0.5, early_stopping=True, num_return_sequences=2, max_new_tokens=8),
             dict(num_beams=2, length_penalty=2.0, early_stopping="never", num_return_sequences=2, max_new_tokens=5),
             dict(num_beams=3, length_penalty=1.0, early_stopping=False, num_return_sequences=3, max_new_tokens=8,
                  eos_token_id=stop),
             dict(num_beams=3, length_penalty=-1.0, early_stopping=True, num_return_sequences=2, max_new_tokens=8,
                  eos_token_id=stop)]
    for case in cases:
        mine = ours.generate(prompts, pad_token_id=1, **case)  # finished hypotheses are filled with the pad id
        theirs = reference.generate(torch.tensor(prompts), do_sample=False, pad_token_id=1, **case).numpy()
        assert mine.shape == theirs.shape and (mine == theirs).all(), case


@pytest.fixture(scope="module")
def both_backends(checkpoint, task_dir):
    """lm-eval's simple_evaluate on the three tasks, once with lm-eval's hf backend and once with mfcore's."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    import mfcore.evaluation.lm_eval_backend  # noqa: F401  registers "mfcore"

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    args = {"hf": f"pretrained={checkpoint},dtype=float32,max_length={helpers.MAX_LENGTH}",
            "mfcore": f"pretrained={checkpoint},max_length={helpers.MAX_LENGTH}"}
    return {name: lm_eval.simple_evaluate(model=name, model_args=arg, tasks=TASKS, task_manager=manager,
                                          batch_size=4, device="cpu", log_samples=True)
            for name, arg in args.items()}


def test_mfcore_backend_scores_like_lm_evals_hf_backend(both_backends):
    hf, ours = both_backends["hf"], both_backends["mfcore"]
    table = []
    for task in TASKS:
        for key, value in hf["results"][task].items():
            if "," not in key or "stderr" in key:
                continue
            mine = ours["results"][task][key]
            table.append(f"{task:7} {key:24} hf {value:<22.10g} mfcore {mine:.10g}")
            if key.startswith(("acc", "exact_match")):
                assert mine == value, (task, key)
            else:
                assert mine == pytest.approx(value, rel=REL), (task, key)
        for a, b in zip(ours["samples"][task], hf["samples"][task]):
            assert a["doc_id"] == b["doc_id"]
            if task == "mf_gen":
                assert a["filtered_resps"] == b["filtered_resps"], a["doc"]
            elif task == "mf_mc":
                for (mine, greedy), (theirs, their_greedy) in zip(a["filtered_resps"], b["filtered_resps"]):
                    assert mine == pytest.approx(theirs, rel=REL) and greedy == their_greedy
            else:
                assert a["filtered_resps"][0] == pytest.approx(b["filtered_resps"][0], rel=REL)
    print("\n" + "\n".join(table))
    # the perplexity texts are longer than max_length, so the rolling windows really rolled
    assert max(len(d["text"].split()) for d in helpers.PPL_DOCS) * 1.2 > helpers.MAX_LENGTH


def test_mfcore_eval_command(checkpoint, task_dir, tmp_path, capsys):
    from mfcore.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--model_args", f"pretrained={checkpoint},max_length={helpers.MAX_LENGTH}", "--tasks",
                 "mf_mc", "--include_path", str(task_dir), "--limit", "2", "--batch_size", "4",
                 "--output_path", str(out)]) == 0
    assert "acc" in capsys.readouterr().out
    results = json.loads((out / "lm_eval_results.json").read_text())
    assert results["results"]["mf_mc"]["sample_len"] == 2
    assert main(["eval", "--model_args", f"pretrained={checkpoint}", "--tasks", "mf_mc",
                 "--include_path", str(tmp_path / "nowhere")]) == 2
    assert "include_path" in capsys.readouterr().err


def test_run_mode_eval_runs_lm_eval_tasks_from_the_yaml(checkpoint, task_dir, tmp_path, capsys, both_backends):
    import yaml
    from mfcore.cli import main

    task = {"run_mode": "eval", "load_checkpoint": str(checkpoint), "output_dir": str(tmp_path),
            "lm_eval": {"tasks": ["mf_ppl"], "include_path": str(task_dir), "max_length": helpers.MAX_LENGTH}}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    assert main(["run", "--config", str(tmp_path / "task.yaml")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved == printed
    expected = both_backends["hf"]["results"]["mf_ppl"]["word_perplexity,none"]
    assert saved["lm_eval"]["mf_ppl"]["word_perplexity,none"] == pytest.approx(expected, rel=REL)
    assert "mf_ppl" in json.loads((tmp_path / "lm_eval_results.json").read_text())["results"]
    assert math.isfinite(saved["lm_eval"]["mf_ppl"]["bits_per_byte,none"])
