// Elementwise CUDA kernels of the CuPy backend (sklstm/_backends/_cupy.py).
//
// The matrix products (input projection, recurrent product, weight
// gradients) are cuBLAS GEMMs issued by the backend; these kernels do the
// rest of each timestep in one launch: bias, activations and the cell update
// in the forward pass, the gate gradients in backpropagation through time,
// and the Adam step over the flat parameter buffer.
//
// `real` is float or double: the backend compiles this file twice with
// cupy.RawModule, passing -DSKLSTM_REAL=float or -DSKLSTM_REAL=double.
//
// The same source also compiles on the CPU (g++ with a small shim header
// that defines __global__, blockIdx, ...; see tests/cuda_on_cpu/), so the
// tests can check the kernel math on a machine without a GPU. That is why
// every kernel is a grid-stride loop with no shared memory and no
// cross-thread communication, and why the source includes no headers: NVRTC
// provides the math functions, the shim includes <math.h>.
//
// Notation as in sklstm/_backends/_base.py: n active rows (sequences) of this
// step, H hidden units, gate blocks i|f|g|o of width H in each row of 4H.
// All arrays are C-contiguous.

#ifndef SKLSTM_REAL
#define SKLSTM_REAL float
#endif
typedef SKLSTM_REAL real;

// Overloads rather than tanh() on `real`: in device code tanh(float) may be
// the double routine depending on headers; tanhf is the float one.
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }

// sigmoid(x) = (1 + tanh(x / 2)) / 2: no overflow for large |x|, unlike
// 1 / (1 + exp(-x)), and the same formula as the reference backend.
__device__ __forceinline__ real sigmoid_(real x) {
    return (real)0.5 * ((real)1 + tanh_((real)0.5 * x));
}

// One timestep of the forward pass, for the n active rows:
//
//     pre = xproj + bias + (hproj if has_prev)                  (n, 4H)
//     i, f, o = sigmoid(pre_i, pre_f, pre_o); g = tanh(pre_g)
//     c = f * c_prev + i * g           (c_prev = 0 when has_prev == 0)
//     m = o * tanh(c)                  (h_t, or the input of the projection)
//
// gates may be the same array as xproj (training activates the projection
// in place and keeps it for backward); c may be the same array as c_prev
// (inference updates one state buffer). Hence no __restrict__ on them.
extern "C" __global__ void lstm_gates_forward(
    const real* xproj,                 // (n, 4H) x_t @ W_ih.T
    const real* __restrict__ hproj,    // (n, 4H) h_{t-1} @ W_hh.T, if has_prev
    const real* __restrict__ bias,     // (4H,)   b_ih + b_hh
    const real* c_prev,                // (n, H)  c_{t-1}, if has_prev
    real* gates,                       // (n, 4H) out: i|f|g|o, if store_gates
    real* c,                           // (n, H)  out: c_t
    real* __restrict__ m,              // (n, H)  out: o * tanh(c_t)
    int has_prev, int store_gates, long long n, int H)
{
    const long long total = n * H;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < total; k += stride) {
        const long long row = k / H;
        const int j = (int)(k - row * H);
        const long long g0 = row * 4 * H + j;  // gate i of unit j in this row
        real pre_i = xproj[g0] + bias[j];
        real pre_f = xproj[g0 + H] + bias[H + j];
        real pre_g = xproj[g0 + 2 * H] + bias[2 * H + j];
        real pre_o = xproj[g0 + 3 * H] + bias[3 * H + j];
        if (has_prev) {
            pre_i += hproj[g0];
            pre_f += hproj[g0 + H];
            pre_g += hproj[g0 + 2 * H];
            pre_o += hproj[g0 + 3 * H];
        }
        const real i = sigmoid_(pre_i);
        const real f = sigmoid_(pre_f);
        const real g = tanh_(pre_g);
        const real o = sigmoid_(pre_o);
        const real c_old = has_prev ? c_prev[k] : (real)0;
        const real c_new = f * c_old + i * g;
        c[k] = c_new;
        m[k] = o * tanh_(c_new);
        if (store_gates) {
            gates[g0] = i;
            gates[g0 + H] = f;
            gates[g0 + 2 * H] = g;
            gates[g0 + 3 * H] = o;
        }
    }
}

// One timestep of backpropagation through time, for the n active rows.
// dm is the whole gradient reaching m_t = o * tanh(c_t) (from the layer
// above and from step t+1, already summed by the backend); dc holds
// dL/dc_t from step t+1 on entry and dL/dc_{t-1} on exit:
//
//     dc_t  = dc + dm * o * (1 - tanh(c_t)^2)
//     d_i   = dc_t * g * i * (1 - i)
//     d_f   = dc_t * c_prev * f * (1 - f)      (0 when has_prev == 0)
//     d_g   = dc_t * i * (1 - g^2)
//     d_o   = dm * tanh(c_t) * o * (1 - o)
//     dc    = dc_t * f
extern "C" __global__ void lstm_gates_backward(
    const real* __restrict__ gates,    // (n, 4H) activated i|f|g|o of step t
    const real* __restrict__ c,        // (n, H)  c_t
    const real* __restrict__ c_prev,   // (n, H)  c_{t-1}, if has_prev
    const real* __restrict__ dm,       // (n, H)  dL/dm_t
    real* __restrict__ dc,             // (n, H)  in dL/dc_t (from t+1), out dL/dc_{t-1}
    real* __restrict__ dgates,         // (n, 4H) out: dL/d(pre-activation)
    int has_prev, long long n, int H)
{
    const long long total = n * H;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < total; k += stride) {
        const long long row = k / H;
        const int j = (int)(k - row * H);
        const long long g0 = row * 4 * H + j;
        const real i = gates[g0];
        const real f = gates[g0 + H];
        const real g = gates[g0 + 2 * H];
        const real o = gates[g0 + 3 * H];
        const real tanh_c = tanh_(c[k]);
        const real dm_k = dm[k];
        const real dc_t = dc[k] + dm_k * o * ((real)1 - tanh_c * tanh_c);
        const real c_old = has_prev ? c_prev[k] : (real)0;
        dgates[g0] = dc_t * g * i * ((real)1 - i);
        dgates[g0 + H] = dc_t * c_old * f * ((real)1 - f);
        dgates[g0 + 2 * H] = dc_t * i * ((real)1 - g * g);
        dgates[g0 + 3 * H] = dm_k * tanh_c * o * ((real)1 - o);
        dc[k] = dc_t * f;
    }
}

// One Adam step over the whole flat parameter buffer, in the order of
// operations of sklstm/_optimizers.py (Adam.update), so both agree to
// rounding:
//
//     m = beta_1 * m + (1 - beta_1) * grad
//     v = beta_2 * v + (1 - beta_2) * grad * grad
//     params -= step_size * m / (sqrt(v) + epsilon)
//
// step_size (bias corrections folded in) is computed on the host. As on the
// CPU, the step itself is formed in double and rounded once when it is
// subtracted from float parameters.
extern "C" __global__ void adam_update(
    real* __restrict__ params,         // (n,)
    const real* __restrict__ grad,     // (n,)
    real* __restrict__ m,              // (n,) first moment
    real* __restrict__ v,              // (n,) second moment
    double beta_1, double beta_2, double step_size, double epsilon,
    long long n)
{
    const real b1 = (real)beta_1, one_minus_b1 = (real)(1.0 - beta_1);
    const real b2 = (real)beta_2, one_minus_b2 = (real)(1.0 - beta_2);
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < n; k += stride) {
        const real g = grad[k];
        const real m_k = m[k] * b1 + g * one_minus_b1;
        const real v_k = v[k] * b2 + (g * one_minus_b2) * g;
        m[k] = m_k;
        v[k] = v_k;
        const real denominator = sqrt_(v_k) + (real)epsilon;
        params[k] = (real)((double)params[k]
                           - (double)m_k * step_size / (double)denominator);
    }
}
