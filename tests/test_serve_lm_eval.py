"""lm-eval's own `local-completions` client against `mfcore serve`: two offline tasks of eval_helpers
(multiple choice, generate_until) give the same per-sample
log-likelihoods, texts and scores as lm-eval's `hf` backend (transformers, fp32) on the same checkpoint
(a transformers-written tiny Llama + tokenizer.json). The in-process mfcore backend is held to that same
reference by its own tests (and costs ~50 s of compiles here, so it is not run twice). What the server
must get right: echo + logprobs with the prompt's log-probabilities aligned 1:1 with the token ids lm-eval
sends (also when the one generated token is EOS), batched token-id prompts, stop strings."""
import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("tenacity")  # lm-eval[api], what local-completions needs
pytest.importorskip("uvicorn")

import mfcore  # noqa: E402
from eval_helpers import MAX_LENGTH, make_checkpoint, write_tasks  # noqa: E402
from mfcore.evaluation.harness import evaluate_tasks  # noqa: E402
from serve_helpers import running_server  # noqa: E402

# mf_ppl (loglikelihood_rolling) is left out: lm-eval's API models cut rolling windows otherwise than its hf
# backend (max_seq_len = max_length - 1, BOS added to the text with add_bos_token), so the two differ by
# ~1 % on their own; the server's log-probabilities are the ones mf_mc checks, per token, 1:1.
TASKS = ["mf_mc", "mf_gen"]


def metrics(results):
    return {task: {k: v for k, v in values.items() if isinstance(v, float) and "stderr" not in k}
            for task, values in results["results"].items()}


def responses(results, task):
    return [sample["filtered_resps"] for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def test_local_completions_scores_equal_lm_eval_hf_backend(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    tasks = write_tasks(tmp_path / "tasks")
    reference = evaluate_tasks(TASKS, model="hf", include_path=tasks, log_samples=True,
                               model_args=f"pretrained={checkpoint},max_length={MAX_LENGTH},dtype=float32")
    model = mfcore.AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = mfcore.AutoTokenizer.from_pretrained(checkpoint)
    with running_server(model, tokenizer, ["tiny"], max_batch=2, max_model_len=2 * MAX_LENGTH) as (base, state):
        options = {"model": "tiny", "base_url": f"{base}/v1/completions", "tokenizer": str(checkpoint),
                   "tokenizer_backend": "huggingface", "batch_size": 4, "num_concurrent": 2, "max_retries": 1,
                   "timeout": 120,
                   # lm-eval's API models keep max_length tokens where hf keeps max_length + 1 (one is predicted)
                   "max_length": MAX_LENGTH + 1}
        # and they add BOS only when told, where hf adds it as the tokenizer does
        served = evaluate_tasks(TASKS, model="local-completions", include_path=tasks, log_samples=True,
                                model_args=dict(options, add_bos_token=True))
        assert state.engine.running == 0 and state.engine.queue_length == 0
    for task in ("mf_mc",):
        ours, theirs = responses(served, task), responses(reference, task)
        assert len(ours) == len(theirs) > 0
        for mine, expected in zip(ours, theirs):
            got = [r[0] if isinstance(r, (list, tuple)) else r for r in mine]
            want = [r[0] if isinstance(r, (list, tuple)) else r for r in expected]
            assert got == pytest.approx(want, rel=1e-5, abs=1e-4), task
    assert responses(served, "mf_gen") == responses(reference, "mf_gen")
    ours, theirs = metrics(served), metrics(reference)
    assert ours.keys() == theirs.keys() == set(TASKS)
    for task in TASKS:
        for name, value in theirs[task].items():
            assert ours[task][name] == pytest.approx(value, rel=1e-4), (task, name)
