// Lets g++ compile sklstm/_backends/_lstm_cuda.cu for the CPU, so the tests
// can run the GPU kernels' math without a GPU (tests/test_cuda_kernels_on_cpu.py).
//
// A kernel becomes a plain function. The launch grid is four globals that
// the test sets from Python (ctypes) before each call: calling a kernel once
// per (block, thread) pair of a small emulated grid runs exactly what the
// GPU threads of that grid would run, one after another. That is exact for
// these kernels: they are grid-stride loops whose threads share nothing.
#include <math.h>

#define __global__
#define __device__
#define __forceinline__ inline

extern "C" {
struct sklstm_dim3 {
    unsigned int x, y, z;
};
sklstm_dim3 blockIdx, threadIdx, blockDim, gridDim;
}
