"""Triton kernels of the shufflenet ops, registered as ``torch.ops.shufflenet_triton.*``.

Installed as ``shufflenet_kernels.triton_kernels``. Importing it registers the ops
when Triton is importable; without Triton it does nothing.
"""
