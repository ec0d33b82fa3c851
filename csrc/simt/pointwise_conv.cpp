// csrc/cuda/pointwise_conv.cu compiled by the host C++ compiler for the SIMT emulation.
#include "cuda/pointwise_conv.cu"
