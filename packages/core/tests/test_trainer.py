"""Trainer, AdamW, clipping and schedules (core only: a toy causal LM; the Llama runs are in tests/).

References: torch.optim.AdamW + clip_grad_norm_ for the update, transformers' schedule functions
for the learning rates. Exact resume is checked against an uninterrupted run of the same toy model.
"""
import json

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops

from mfcore.utils.runtime import ensure_runtime

from mfcore.errors import CheckpointError, ConfigError
from mfcore.training.optim import AdamW, clip_by_global_norm
from mfcore.training.schedules import LRSchedule
from mfcore.training.trainer import Trainer, TrainingArguments, read_metrics

VOCAB, HIDDEN, SEQ = 24, 16, 12

# MindSpore is set up the way mfcore sets it (CPU, PyNative) before any kernel runs, so that tests
# which later run `mfcore run` in this process find the same runtime.
ensure_runtime()


class ToyLM(nn.Cell):
    """Embedding -> tanh(linear) -> head; mean next-token loss over labels != -100 (HF convention)."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embedding = Parameter(Tensor(rng.normal(0, 0.5, (VOCAB, HIDDEN)).astype(np.float32)), name="embedding")
        self.hidden = mint.nn.Linear(HIDDEN, HIDDEN)
        self.head = mint.nn.Linear(HIDDEN, VOCAB, bias=False)
        self.hidden.weight.set_data(Tensor(rng.normal(0, 0.3, (HIDDEN, HIDDEN)).astype(np.float32)))
        self.hidden.bias.set_data(Tensor(rng.normal(0, 0.1, (HIDDEN,)).astype(np.float32)))
        self.head.weight.set_data(Tensor(rng.normal(0, 0.3, (VOCAB, HIDDEN)).astype(np.float32)))

    def construct(self, input_ids, labels=None):
        x = ops.gather(self.embedding, input_ids, 0)
        logits = self.head(mint.tanh(self.hidden(x)))
        if labels is None:
            return logits
        logits, labels = logits[:, :-1], labels[:, 1:]
        weight = ops.cast(labels != -100, ms.float32)
        safe = labels * ops.cast(labels != -100, ms.int32)
        picked = mint.gather(ops.log_softmax(logits, -1), -1, safe.expand_dims(-1)).squeeze(-1)
        return -(picked * weight).sum() / mint.clamp(weight.sum(), min=1.0)


def toy_data(rows=48, seed=1):
    """Sequences that follow a fixed rule (next = (3 * token + 1) mod VOCAB): learnable."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, SEQ), np.int32)
    ids[:, 0] = rng.integers(0, VOCAB, rows)
    for t in range(1, SEQ):
        ids[:, t] = (3 * ids[:, t - 1] + 1) % VOCAB
    return {"input_ids": ids, "labels": ids.copy()}


def args_for(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=12, batch_size=4, learning_rate=5e-2, warmup_steps=2,
                progress=False)
    base.update(kw)
    return TrainingArguments(**base)


def test_adamw_and_clipping_match_torch():
    torch = pytest.importorskip("torch")
    net = ToyLM()
    init = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    opt = AdamW(net.trainable_params(), 0.9, 0.95, 1e-8, 0.1)

    def loss_fn(ids, labels):
        return net(ids, labels=labels)

    grad_fn = ms.value_and_grad(loss_fn, None, opt.params)

    @ms.jit
    def step(ids, labels, lr):
        loss, grads = grad_fn(ids, labels)
        grads, norm = clip_by_global_norm(grads, 0.5)
        opt(grads, lr)
        return loss, norm

    emb = torch.nn.Parameter(torch.tensor(init["embedding"]))
    hidden = torch.nn.Linear(HIDDEN, HIDDEN)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor(init["hidden.weight"]))
        hidden.bias.copy_(torch.tensor(init["hidden.bias"]))
        head.weight.copy_(torch.tensor(init["head.weight"]))
    params = [emb, hidden.weight, hidden.bias, head.weight]
    topt = torch.optim.AdamW([{"params": [emb, hidden.weight, head.weight], "weight_decay": 0.1},
                              {"params": [hidden.bias], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    data = toy_data(20)
    for i in range(5):
        lr = 1e-2 * (i + 1)
        ids = data["input_ids"][4 * i:4 * i + 4]
        loss, norm = step(Tensor(ids), Tensor(ids), Tensor(lr, ms.float32))
        for group in topt.param_groups:
            group["lr"] = lr
        x = torch.tanh(hidden(emb[torch.tensor(ids, dtype=torch.long)]))
        logits = head(x)[:, :-1]
        tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                  torch.tensor(ids[:, 1:], dtype=torch.long).reshape(-1))
        topt.zero_grad()
        tloss.backward()
        tnorm = torch.nn.utils.clip_grad_norm_(params, 0.5)
        topt.step()
        np.testing.assert_allclose(float(loss.asnumpy()), tloss.item(), rtol=1e-5)
        np.testing.assert_allclose(float(norm.asnumpy()), tnorm.item(), rtol=1e-5)
    np.testing.assert_allclose(net.hidden.weight.asnumpy(), hidden.weight.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(net.embedding.asnumpy(), emb.detach().numpy(), atol=2e-5)
    assert int(opt.step.asnumpy()) == 5


@pytest.mark.parametrize("kind,hf_name", [("cosine", "get_cosine_schedule_with_warmup"),
                                          ("linear", "get_linear_schedule_with_warmup"),
                                          ("constant", "get_constant_schedule_with_warmup")])
def test_schedules_match_transformers(kind, hf_name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=3e-4)
    make = getattr(transformers, hf_name)
    scheduler = make(optimizer, 10) if kind == "constant" else make(optimizer, 10, 100)
    ours = LRSchedule.create(kind, 3e-4, total_steps=100, warmup_steps=10)
    for step in range(101):  # past total_steps HF's cosine rises again; ours stays at lr_end
        assert ours(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()


def test_schedule_names_and_errors():
    assert LRSchedule.create("CosineWithWarmUpLR", 1.0, 10, warmup_ratio=0.2).warmup_steps == 2
    s = LRSchedule.create("cosine", 1.0, 10, warmup_steps=0, lr_end=0.1)
    assert s(0) == pytest.approx(1.0) and s(10) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="lr_schedule.type"):
        LRSchedule.create("polynomial_wobble", 1.0, 10)


def test_training_drives_the_loss_down_and_writes_metrics(tmp_path):
    trainer = Trainer(ToyLM(), args_for(tmp_path, max_steps=30), toy_data(), toy_data(8, seed=5))
    result = trainer.train()
    records = read_metrics(tmp_path / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 30 and [r["step"] for r in records if "loss" in r] == list(range(1, 31))
    assert losses[-1] < 0.25 * losses[0]
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(records[0])
    assert result["eval_perplexity"] == pytest.approx(np.exp(result["eval_loss"]))
    assert result["eval_loss"] < 0.25 * losses[0]


def test_resume_continues_exactly(tmp_path):
    data = toy_data()
    full = Trainer(ToyLM(), args_for(tmp_path / "full", max_steps=16, save_steps=4, gradient_accumulation_steps=2,
                                     batch_size=2), data)
    full.train()
    cut_dir = tmp_path / "cut"
    # "killed" after step 10: the newest checkpoint is step 8; steps 9-10 must be redone identically
    Trainer(ToyLM(), args_for(cut_dir, max_steps=16, save_steps=4, gradient_accumulation_steps=2, batch_size=2,
                              stop_at_step=10, keep_checkpoint_max=2), data).train()
    assert sorted(p.name for p in (cut_dir / "checkpoint" / "rank_0").iterdir()) == ["step_000004", "step_000008"]
    state = json.loads((cut_dir / "checkpoint" / "rank_0" / "step_000008" / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["samples_seen"] == 8 * 4
    resumed = Trainer(ToyLM(seed=99), args_for(cut_dir, max_steps=16, save_steps=4, gradient_accumulation_steps=2,
                                              batch_size=2, resume=True, keep_checkpoint_max=2), data)
    resumed.train()
    a = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    b = [r["loss"] for r in read_metrics(cut_dir / "metrics.jsonl")]
    assert len(a) == len(b) == 16
    assert a == b  # bit for bit
    for pa, pb in zip(full.model.trainable_params(), resumed.model.trainable_params()):
        np.testing.assert_array_equal(pa.asnumpy(), pb.asnumpy())


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    data = toy_data()
    one = Trainer(ToyLM(), args_for(tmp_path / "a", max_steps=3, batch_size=4, shuffle=False), data)
    two = Trainer(ToyLM(), args_for(tmp_path / "b", max_steps=3, batch_size=2, gradient_accumulation_steps=2,
                                    shuffle=False), data)
    one.train()
    two.train()
    for pa, pb in zip(one.model.trainable_params(), two.model.trainable_params()):
        np.testing.assert_allclose(pa.asnumpy(), pb.asnumpy(), rtol=1e-5, atol=1e-6)


def test_resume_with_another_batch_size_is_refused(tmp_path):
    data = toy_data()
    Trainer(ToyLM(), args_for(tmp_path, max_steps=4, save_steps=2), data).train()
    with pytest.raises(CheckpointError, match="global batch"):
        Trainer(ToyLM(), args_for(tmp_path, max_steps=8, batch_size=2, resume=True), data).train()


def test_fp16_loss_scale_skips_overflowing_steps(tmp_path):
    data = toy_data()
    # 1e39 and its half are inf in float32: both steps overflow, are skipped, and the scale halves
    trainer = Trainer(ToyLM(), args_for(tmp_path, max_steps=2, compute_dtype="float16", loss_scale=1e39), data)
    before = [p.asnumpy().copy() for p in trainer.model.trainable_params()]
    trainer.train()
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["skipped"] for r in records] == [True, True]
    assert [r["loss_scale"] for r in records] == [1e39, 5e38] and trainer.loss_scale == 2.5e38
    assert int(trainer.optimizer.step.asnumpy()) == 0
    for p, b in zip(trainer.model.trainable_params(), before):
        np.testing.assert_array_equal(p.asnumpy(), b)
    # a normal scale trains: steps are applied
    ok = Trainer(ToyLM(), args_for(tmp_path / "ok", max_steps=2, compute_dtype="float16", loss_scale=1024.0), data)
    ok.train()
    assert int(ok.optimizer.step.asnumpy()) == 2


def test_bfloat16_on_cpu_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="bfloat16 computation is not available on MindSpore's CPU backend"):
        Trainer(ToyLM(), args_for(tmp_path, compute_dtype="bfloat16"), toy_data())


def test_negative_cpu_threads_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cpu_threads"):
        Trainer(ToyLM(), args_for(tmp_path, cpu_threads=-1), toy_data())


def test_too_little_data_for_one_batch(tmp_path):
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        Trainer(ToyLM(), args_for(tmp_path, batch_size=64), toy_data()).train()


def test_data_parallel_context_mapping():
    from mindspore import ParallelMode

    from mfcore.training.parallel import parallel_context

    assert parallel_context(2, 1, 1, 2)["parallel_mode"] == ParallelMode.DATA_PARALLEL
    semi = parallel_context(1, 2, 2, 4)
    assert semi["parallel_mode"] == ParallelMode.SEMI_AUTO_PARALLEL and semi["pipeline_stages"] == 2
    with pytest.raises(ConfigError, match="parallel_config.*3 worker"):
        parallel_context(2, 1, 1, 3)


def test_each_rank_takes_its_own_slice_of_the_global_batch(tmp_path):
    from mfcore.training.trainer import ParallelInfo

    data = toy_data()
    ranks = [Trainer(ToyLM(), args_for(tmp_path, batch_size=2, gradient_accumulation_steps=2),
                     data, parallel=ParallelInfo(rank, 2)) for rank in range(2)]
    single = Trainer(ToyLM(), args_for(tmp_path, batch_size=8), data)
    for step in (0, 5):
        rows = [t.batch_rows(step) for t in ranks]
        assert rows[0].shape == (2, 2)
        assert sorted(np.concatenate([r.ravel() for r in rows])) == sorted(single.batch_rows(step).ravel())
