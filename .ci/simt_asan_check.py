"""Loads an AddressSanitizer build of shufflenet_kernels._C_simt (path in argv[1])
and runs its kernel that writes one element past its output buffer. Run with the
ASan runtime preloaded: ASan must abort with a heap-buffer-overflow report naming
global_overflow_kernel (.ci/run checks the report). Exits 0 only if nothing was
reported."""

import importlib.util
import sys

import torch

spec = importlib.util.spec_from_file_location("shufflenet_kernels._C_simt", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # runs the op registrations
assert module.asan_build(), f"{sys.argv[1]} is not the AddressSanitizer build"
torch.ops.shufflenet_simt_testing.planted("global_overflow")
print("the out-of-bounds write was not reported")
