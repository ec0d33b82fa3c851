// csrc/cuda/depthwise_conv.cu compiled by the host C++ compiler for the SIMT emulation.
#include "cuda/depthwise_conv.cu"
