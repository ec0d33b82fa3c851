// csrc/common/checks.cpp for the emulation build (its own object file: other flags).
#include "common/checks.cpp"
