"""AdamW on bfloat16 parameters (MindFormers' param_init_type: bfloat16 with FP32StateAdamWeightDecay):
float32 moments and math, the result stored back in bfloat16, inside one compiled step on CPU (where
MindSpore's Assign has no bfloat16 kernel). Reference: torch.optim.AdamW in float32 on the same bfloat16
weights, its result rounded to bfloat16 each step (the weights live in bfloat16 on both sides)."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor

from mfcore.training.optim import AdamW

torch = pytest.importorskip("torch")


def test_adamw_updates_bfloat16_parameters_like_torch_in_float32():
    rng = np.random.default_rng(0)
    init = rng.normal(0, 1, (8, 16)).astype(np.float32)
    bias_init = rng.normal(0, 1, (16,)).astype(np.float32)
    weight = Parameter(Tensor(init, ms.bfloat16), name="w")
    bias = Parameter(Tensor(bias_init, ms.bfloat16), name="b")
    opt = AdamW([weight, bias], 0.9, 0.95, 1e-8, 0.1)
    assert opt.exp_avg[0].dtype == ms.float32

    @ms.jit
    def step(g_w, g_b, lr):
        return opt((g_w, g_b), lr)

    t_weight = torch.nn.Parameter(torch.tensor(init).to(torch.bfloat16).float())
    t_bias = torch.nn.Parameter(torch.tensor(bias_init).to(torch.bfloat16).float())
    topt = torch.optim.AdamW([{"params": [t_weight], "weight_decay": 0.1}, {"params": [t_bias], "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for i in range(3):
        g_w = rng.normal(0, 1, init.shape).astype(np.float32)
        g_b = rng.normal(0, 1, bias_init.shape).astype(np.float32)
        before = weight.asnumpy().astype(np.float32)
        step(Tensor(g_w), Tensor(g_b), Tensor(1e-2, ms.float32))
        t_weight.grad, t_bias.grad = torch.tensor(g_w), torch.tensor(g_b)
        topt.step()
        with torch.no_grad():  # the weights are stored in bfloat16
            t_weight.copy_(t_weight.to(torch.bfloat16).float())
            t_bias.copy_(t_bias.to(torch.bfloat16).float())
        assert weight.dtype == ms.bfloat16 and bias.dtype == ms.bfloat16
        got = weight.asnumpy().astype(np.float32)
        assert (got != before).mean() > 0.5  # the bfloat16 weights did move
        ulp = np.abs(t_weight.detach().numpy()) * 2.0 ** -7  # one bfloat16 step at that magnitude
        assert np.all(np.abs(got - t_weight.detach().numpy()) <= ulp), i
        assert np.all(np.abs(bias.asnumpy().astype(np.float32) - t_bias.detach().numpy())
                      <= np.abs(t_bias.detach().numpy()) * 2.0 ** -7), i
        state = topt.state[t_weight]
        np.testing.assert_allclose(opt.exp_avg[0].asnumpy(), state["exp_avg"].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(opt.exp_avg_sq[0].asnumpy(), state["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-8)
