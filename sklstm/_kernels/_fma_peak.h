/* The float32 multiply-add throughput of one core, as this build's
 * instructions reach it: the ceiling of every product in the kernels.
 *
 * Why: the benchmarks set sklstm's GFLOP/s against OpenBLAS' large GEMM,
 * but sklstm's own packed kernel (_small_gemm.h) runs faster than that
 * GEMM on some cores (one Zen 4 core: 106-117 GFLOP/s against 104), so a
 * target needing more than 100 % of the GEMM peak is not yet out of reach.
 * No code can do the same multiply-adds faster than the FMA units, so a
 * target needing more than this peak is.
 *
 * How: rounds of SK_FMA_CHAINS independent vector multiply-adds, with
 * nothing to load or store (the accumulators stay in registers; 12 chains
 * cover an FMA latency of 4 cycles on 2 units, with registers to spare in
 * AVX2's 16). GCC contracts ``acc * b + c`` into one FMA where the build
 * has them (GNU C's default -ffp-contract=fast); the baseline build
 * (SSE2) runs a multiply and an add, its own ceiling. The values converge
 * to c / (1 - b), so nothing overflows or becomes subnormal. */
#ifndef SKLSTM_FMA_PEAK_H
#define SKLSTM_FMA_PEAK_H

#include "_small_gemm.h"

#define SK_FMA_CHAINS 12

/* Runs ``rounds`` rounds; returns a sum of every accumulator, so that the
 * compiler keeps the loop. */
static float sklstm_fma_rounds_f(long rounds)
{
    const sk_vf zero = {0};
    const sk_vf b = zero + 0.999999f, c = zero + 1e-7f;
    sk_vf acc[SK_FMA_CHAINS];
    float sum = 0;
    long r;
    int i;
    for (i = 0; i < SK_FMA_CHAINS; i++) acc[i] = zero + (float) i;
    for (r = 0; r < rounds; r++)
        for (i = 0; i < SK_FMA_CHAINS; i++) acc[i] = acc[i] * b + c;
    for (i = 0; i < SK_FMA_CHAINS; i++) sum += acc[i][0];
    return sum;
}

/* Floating-point operations of one round (a multiply-add counts as two). */
#define SK_FMA_ROUND_FLOPS (2 * SK_FMA_CHAINS * (SK_VBYTES / 4))

#endif
