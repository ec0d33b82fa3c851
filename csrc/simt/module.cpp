// shufflenet_kernels._C_simt: the CUDA host functions of csrc/cuda, compiled for
// the CPU against the SIMT emulation (simt.h), registered for CPU tensors as
// torch.ops.shufflenet_simt.* (the schemas of torch.ops.shufflenet). Test-only.
//
// Module functions (limited API, so the module stays abi3):
//   launch_counts() -> {kernel instantiation: launches}, reset_launch_counts()
//   set_index32_limit(n): the 32-bit index instantiations are used only for
//     tensors whose offsets stay below n - max_grid_stride() (default INT32_MAX;
//     0 forces the 64-bit ones), index32_limit(), max_grid_stride()
//   set_grid_limits(grid_x, grid_yz): the most blocks along x (0: sized for the
//     device) and the largest grid.y/z the launchers choose (default 0, 65535):
//     small limits make small tensors run every grid-stride and grid.y loop more
//     than once
//   access_checks() -> whether the shared-memory access checks are compiled in
//   asan_build() -> whether the module was built with AddressSanitizer
// and the op torch.ops.shufflenet_simt_testing.planted(name) running one of the
// kernels with planted bugs (csrc/simt/planted.cpp).
#include <Python.h>
#include <torch/library.h>

#include <map>
#include <string>

#include "cuda/cuda_utils.cuh"
#include "schemas.h"

namespace simt {
std::map<std::string, int64_t> launch_counts();
void reset_launch_counts();
void set_index32_limit(int64_t limit);
void set_grid_limits(int64_t grid_x, int64_t grid_yz);
bool access_checks_enabled();
}  // namespace simt

namespace shufflenet::simt_tests {
at::Tensor run_planted(const std::string& name);
}

TORCH_LIBRARY(shufflenet_simt, m) { shufflenet::define_schemas(m); }

TORCH_LIBRARY(shufflenet_simt_testing, m) {
  m.def("planted(str name) -> Tensor");
  m.impl("planted", c10::DispatchKey::CompositeExplicitAutograd, &shufflenet::simt_tests::run_planted);
}

namespace {

PyObject* py_launch_counts(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  for (const auto& [name, count] : simt::launch_counts()) {
    PyObject* v = PyLong_FromLongLong(count);
    if (v == nullptr || PyDict_SetItemString(d, name.c_str(), v) != 0) {
      Py_XDECREF(v);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(v);
  }
  return d;
}

PyObject* py_reset_launch_counts(PyObject*, PyObject*) {
  simt::reset_launch_counts();
  Py_RETURN_NONE;
}

PyObject* py_set_index32_limit(PyObject*, PyObject* args) {
  long long limit = 0;
  if (!PyArg_ParseTuple(args, "L", &limit)) return nullptr;
  simt::set_index32_limit(limit);
  Py_RETURN_NONE;
}

PyObject* py_set_grid_limits(PyObject*, PyObject* args) {
  long long grid_x = 0, grid_yz = 65535;
  if (!PyArg_ParseTuple(args, "LL", &grid_x, &grid_yz)) return nullptr;
  if (grid_x < 0 || grid_x > 2147483647LL || grid_yz < 1 || grid_yz > 65535) {
    PyErr_SetString(PyExc_ValueError, "set_grid_limits: need 0 <= grid_x < 2^31 and 1 <= grid_yz <= 65535");
    return nullptr;
  }
  simt::set_grid_limits(grid_x, grid_yz);
  Py_RETURN_NONE;
}

PyObject* py_index32_limit(PyObject*, PyObject*) { return PyLong_FromLongLong(simt::index32_limit()); }

PyObject* py_max_grid_stride(PyObject*, PyObject*) {
  return PyLong_FromLongLong(shufflenet::cuda::max_grid_stride());
}

PyObject* py_access_checks(PyObject*, PyObject*) { return PyBool_FromLong(simt::access_checks_enabled()); }

PyObject* py_asan_build(PyObject*, PyObject*) {
#ifdef SHUFFLENET_SIMT_ASAN
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"launch_counts", py_launch_counts, METH_NOARGS, "launches per kernel instantiation since the last reset"},
    {"reset_launch_counts", py_reset_launch_counts, METH_NOARGS, "clears the launch counts"},
    {"set_index32_limit", py_set_index32_limit, METH_VARARGS, "test hook: the 32-bit index limit"},
    {"index32_limit", py_index32_limit, METH_NOARGS, "the 32-bit index limit"},
    {"set_grid_limits", py_set_grid_limits, METH_VARARGS,
     "test hook: most blocks along x (0: the device's sizing) and largest grid.y/z the launchers choose"},
    {"max_grid_stride", py_max_grid_stride, METH_NOARGS, "largest grid-stride step of the kernels"},
    {"access_checks", py_access_checks, METH_NOARGS, "whether the shared-memory access checks are compiled in"},
    {"asan_build", py_asan_build, METH_NOARGS, "whether the module was built with AddressSanitizer"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMODINIT_FUNC PyInit__C_simt(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C_simt", "the CUDA kernels on the CPU (SIMT emulation; torch.ops.shufflenet_simt)", -1,
      methods};
  return PyModule_Create(&module_def);
}
