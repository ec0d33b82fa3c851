// The op schemas of namespace `shufflenet`, declared once. Backends add only
// TORCH_LIBRARY_IMPL blocks (csrc/cpu, csrc/cuda); autograd and fake kernels are
// registered in Python (shufflenet_kernels/ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing _C runs the static registrations below; it exports no functions, so
// the module builds against the limited API (abi3).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "shufflenet_kernels native ops (reached through torch.ops)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(shufflenet, m) {
  m.def("channel_shuffle(Tensor input, int groups) -> Tensor");
  m.def(
      "pointwise_conv(Tensor input, Tensor weight, Tensor? bias, int groups, int shuffle_groups, "
      "bool relu) -> Tensor");
  // relu_output: the forward's output when it applied ReLU (the gradient is masked
  // where it is <= 0), None otherwise. Outputs not asked for by output_mask are
  // returned as empty tensors of shape [0].
  m.def(
      "pointwise_conv_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? relu_output, "
      "int groups, int shuffle_groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, bool relu) -> Tensor");
  m.def(
      "depthwise_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? relu_output, "
      "int[2] stride, int[2] padding, int[2] dilation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("concat_shuffle(Tensor a, Tensor b, int groups) -> Tensor");
  // Gradient of concat_shuffle: un-shuffles grad_output and splits it at channels_a.
  m.def("concat_shuffle_backward(Tensor grad_output, int groups, int channels_a) -> (Tensor, Tensor)");
}
