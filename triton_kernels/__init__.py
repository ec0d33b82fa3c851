"""Triton kernels of the shufflenet ops, registered as ``torch.ops.shufflenet_triton.*``.

Installed as ``shufflenet_kernels.triton_kernels``. Importing it registers the ops
(same schemas as ``torch.ops.shufflenet``, through ``torch.library.triton_op`` so
``torch.compile`` sees the kernels) and their autograd formulas when Triton is
importable; without Triton it registers nothing and ``HAS_TRITON`` is False.

One module per op family: ``channel_shuffle`` (channel_shuffle, concat_shuffle,
concat_shuffle_backward), ``pointwise`` (pointwise_conv and its backward),
``depthwise`` (depthwise_conv2d and its backward), ``v2_unit`` (the fused inference
ShuffleNet V2 unit, no autograd); ``_common`` holds shared helpers.
"""

from __future__ import annotations

import importlib.util

import torch

HAS_TRITON: bool = importlib.util.find_spec("triton") is not None

__all__ = ["HAS_TRITON"]


def _already_registered() -> bool:
    # The module body must run its registrations once per process, even if it is
    # reloaded (a second triton_op definition of a name raises).
    return hasattr(torch.ops, "shufflenet_triton") and hasattr(torch.ops.shufflenet_triton, "channel_shuffle")


if HAS_TRITON and not _already_registered():
    from shufflenet_kernels.ops import register_autograd_for

    from . import channel_shuffle, depthwise, pointwise, v2_unit  # noqa: F401  (registers the ops)

    register_autograd_for("shufflenet_triton")
