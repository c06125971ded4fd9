// The GPU translation unit: nvcc builds it into the fatbin, NVRTC compiles it at run time where no fatbin fits.
// The kernel bodies live in the headers, which the CPU emulation (emulated_kernels.cpp) compiles too.
#include "heatmap_decode.cuh"
#include "kapao_decode.cuh"
