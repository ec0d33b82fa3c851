"""Benchmark suite of shufflenet-kernels: ``python -m bench`` (see ``bench.__main__``).

Modules: ``timing`` (CUDA-event / perf_counter timers, pytest-benchmark statistics),
``core`` (cases, providers, records, environment), ``shapes`` (ShuffleNet V1/V2 layer
shapes), ``ops_cases`` (per-op cases), ``units`` (units and models), ``guidelines``
(the ShuffleNet V2 paper's G1-G4 experiments), ``paper_tables`` (the paper's figures),
``peak`` (GEMM and copy ceilings of the roofline plots), ``models_cpu`` and
``model_worker`` (whole models on the CPU against torch.compile, ONNX Runtime and
OpenVINO, one process per contender), ``report`` (report.md and plots).
"""
