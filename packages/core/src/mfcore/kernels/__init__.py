"""Compiled kernels MindSpore runs as AOT `Custom` ops: `cpu` builds csrc/ once per machine and says
whether the fused CPU kernels are in use (`status()`); models fall back to MindSpore's ops without them."""
from .cpu import DecodeKernels, decode_kernels, status

__all__ = ["DecodeKernels", "decode_kernels", "status"]
