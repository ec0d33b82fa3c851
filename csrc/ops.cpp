// The op schemas of namespace `shufflenet` (listed once, in schemas.h). Backends add only
// TORCH_LIBRARY_IMPL blocks (csrc/cpu, csrc/cuda); autograd and fake kernels are
// registered in Python (shufflenet_kernels/ops.py).
#include <Python.h>
#include <torch/library.h>

#include "schemas.h"

extern "C" {
// Importing _C runs the static registrations below; it exports no functions, so
// the module builds against the limited API (abi3).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "shufflenet_kernels native ops (reached through torch.ops)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(shufflenet, m) { shufflenet::define_schemas(m); }
