"""AdamW (decoupled weight decay, bias-corrected, as torch.optim.AdamW) and gradient helpers.

Written with plain MindSpore ops so that the whole training step (forward, backward, clipping,
update) traces into one `mindspore.jit` graph. The state (moments, step) are Parameters: they are
saved in checkpoints and restored bit for bit on resume.
"""
from __future__ import annotations

from typing import Sequence

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer


def decays(param: Parameter) -> bool:
    """Weight decay on matrices only: norms and biases (1-D) are excluded (MindFormers' and HF's rule)."""
    return len(param.shape) >= 2


class AdamW(nn.Cell):
    """torch.optim.AdamW's update: p -= lr*wd*p; m,v EMA; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)."""

    def __init__(self, params: Sequence[Parameter], beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        # Moments in float32 whatever the parameter dtype (MindFormers' FP32StateAdamWeightDecay): 16-bit
        # moments would lose small updates and MindSpore cannot mix their dtype with the float32 math.
        self.exp_avg = fp32_state(self.params, "adam_m")
        self.exp_avg_sq = fp32_state(self.params, "adam_v")
        self.step = Parameter(Tensor(0, ms.int32), name="adam_step", requires_grad=False)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decays = tuple(float(weight_decay) if decays(p) else 0.0 for p in self.params)
        self.adam_kernel = ops.AdamWeightDecay()
        self.beta1_tensor = Tensor(self.beta1, ms.float32)
        self.beta2_tensor = Tensor(self.beta2, ms.float32)

    def construct(self, grads, lr, apply=None):
        """One update with learning rate `lr` (scalar tensor). `apply` (bool scalar tensor or None):
        when False the state is left unchanged (a skipped fp16 step)."""
        step = self.step + 1
        t = step.astype(ms.float32)
        bias1 = 1.0 - ops.pow(self.beta1, t)
        bias2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, t))
        for i in range(len(self.params)):
            if apply is None and self.params[i].dtype == ms.float32 and grads[i].dtype == ms.float32:
                self._fused_update(i, grads[i], lr, bias1, bias2_sqrt)
            else:
                self._update(i, grads[i], lr, bias1, bias2_sqrt, apply)
        if apply is not None:
            step = ops.select(apply, step, self.step)
        ops.assign(self.step, step)
        return step

    def _fused_update(self, i, grad, lr, bias1, bias2_sqrt):
        """The same update by MindSpore's one-pass AdamWeightDecay kernel (in place), which has no bias
        correction: m / (sqrt(v) / bc2 + eps) * lr / bc1 == m / (sqrt(v) + eps * bc2) * (lr * bc2 / bc1), and
        its decay (applied with that lr) is rescaled to keep lr * weight_decay. One pass over the param and
        its moments instead of ~13 element-wise kernels: the update is bound by memory traffic on CPU."""
        lr_kernel = lr * bias2_sqrt / bias1
        decay = self.weight_decays[i] * bias1 / bias2_sqrt
        self.adam_kernel(self.params[i], self.exp_avg[i], self.exp_avg_sq[i], lr_kernel, self.beta1_tensor,
                         self.beta2_tensor, self.eps * bias2_sqrt, decay, grad)

    def _update(self, i, grad, lr, bias1, bias2_sqrt, apply):
        """Element-wise ops, in float32 whatever the param dtype, and skippable (`apply`)."""
        param, m, v = self.params[i], self.exp_avg[i], self.exp_avg_sq[i]
        grad = grad.astype(ms.float32)
        value = param.astype(ms.float32)
        if self.weight_decays[i] != 0.0:
            value = value * (1.0 - lr * self.weight_decays[i])
        m_new = self.beta1 * m + (1.0 - self.beta1) * grad
        v_new = self.beta2 * v + (1.0 - self.beta2) * grad * grad
        value = value - lr / bias1 * m_new / (ops.sqrt(v_new) / bias2_sqrt + self.eps)
        value = value.astype(param.dtype)
        if apply is not None:
            m_new = ops.select(apply, m_new, m)
            v_new = ops.select(apply, v_new, v)
            value = ops.select(apply, value, param)
        ops.assign(m, m_new)
        ops.assign(v, v_new)
        if param.dtype == ms.bfloat16:  # MindSpore's CPU Assign has no bfloat16 kernel; InplaceCopy has
            _INPLACE_COPY(param, value)
        else:
            ops.assign(param, value)


_INPLACE_COPY = ops.auto_generate.InplaceCopy()


def fp32_state(params: Sequence[Parameter], prefix: str) -> ParameterTuple:
    """Zero float32 Parameters named `prefix.<param name>`, one per parameter (names as ParameterTuple.clone)."""
    return ParameterTuple(Parameter(initializer("zeros", p.shape, ms.float32), name=f"{prefix}.{p.name}",
                                    requires_grad=False) for p in params)


def global_norm(grads) -> Tensor:
    return ops.sqrt(sum(ops.sum(g.astype(ms.float32) * g.astype(ms.float32)) for g in grads))


def clip_by_global_norm(grads, max_norm: float):
    """torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1."""
    norm = global_norm(grads)
    coef = ops.minimum(max_norm / (norm + 1e-6), 1.0)
    return tuple(g * coef.astype(g.dtype) for g in grads), norm


def all_finite(grads) -> Tensor:
    flags = [ops.all(ops.isfinite(g)) for g in grads]
    out = flags[0]
    for flag in flags[1:]:
        out = ops.logical_and(out, flag)
    return out
