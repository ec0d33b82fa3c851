// csrc/cuda/channel_shuffle.cu compiled by the host C++ compiler for the SIMT emulation.
#include "cuda/channel_shuffle.cu"
