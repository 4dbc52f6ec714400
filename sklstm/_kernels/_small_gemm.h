/* The per-step GEMMs of small LSTMs, without BLAS's per-call packing.
 *
 * C (m x n) = A (m x k) @ B (k x n) [+ C], all row-major, B's rows
 * contiguous (so every step reads W_hh's transpose, or W_hh itself, as is);
 * and the "TN" form C = A.T @ B [+ C] with A (k x m) row-major, which the
 * chunked weight gradients use (dW_hh += dgates.T @ h over a few steps).
 *
 * Why: at H <= 64 the per-step products are tiny (32 x 256 x 64 on one
 * thread at W2), and OpenBLAS repacks B on every call unless it takes its
 * small-matrix path, which only its SkylakeX kernels have: with
 * OPENBLAS_CORETYPE=Haswell the packing made the step GEMMs ~25 % slower.
 * B (k x n) is small enough to stay in L2 here, and a panel of it in L1.
 *
 * How: for each panel of NV vectors of columns, each tile of 4 rows keeps
 * 4 x NV vector accumulators in registers over the whole k loop (one
 * broadcast of A and NV loads of B feed 4 * NV FMAs). A's element is a
 * scalar operand of the vector product, which GCC turns into a broadcast
 * load (vbroadcastss m32: a load, no arithmetic unit). Written as the
 * vector sum (V){0} + a, it was a scalar add (not folded away without
 * -ffast-math, since 0 + -0.0 is +0.0) and a register broadcast per element
 * of A, both on the FP ports the FMAs need: 54 GFLOP/s instead of 77-84 on
 * one Zen 3 core at 32 x 256 x 64, below OpenBLAS' 67. GCC's vector
 * extensions compile to AVX-512, AVX2 or SSE2 with the flags of each build
 * (see setup.py). Every element of C is summed over k in the same order,
 * from zero, by the same operations whichever tile, row remainder or column
 * remainder it falls in, so results do not depend on how the rows are cut
 * into blocks (the thread-count invariance of the kernels relies on it).
 */
#ifndef SKLSTM_SMALL_GEMM_H
#define SKLSTM_SMALL_GEMM_H

#if defined(__AVX512F__)
#define SK_VBYTES 64
#define SK_NV 4
#elif defined(__AVX__)
#define SK_VBYTES 32
#define SK_NV 2
#else
#define SK_VBYTES 16
#define SK_NV 2
#endif

/* Vector types that may sit at any element-aligned address. */
typedef float sk_vf __attribute__((vector_size(SK_VBYTES), aligned(4)));
typedef double sk_vd __attribute__((vector_size(SK_VBYTES), aligned(8)));

/* One tile: R rows x NVX vectors of C, accumulated in registers over k.
 * R and NVX are literals, so the loops over them unroll and the
 * accumulators stay in registers. */
/* Index of A's element (row r of op(A), k index p): NN reads A (m x k),
 * TN reads A (k x m), both with leading dimension lda. */
#define SK_A_NN(r, p) ((long) (r) * lda + (p))
#define SK_A_TN(r, p) ((long) (p) * lda + (r))

#define SK_DEFINE_TILE(NAME, R, NVX, T, V, AIDX)                              \
static inline void NAME(int k, const T* A, int lda, const T* B, int ldb,     \
                        int accumulate, T* C, int ldc)                       \
{                                                                            \
    V acc[R][NVX];                                                           \
    int p, r, v;                                                             \
    for (r = 0; r < R; r++)                                                  \
        for (v = 0; v < NVX; v++) acc[r][v] = (V){0};                        \
    for (p = 0; p < k; p++) {                                                \
        const V* b = (const V*) (B + (long) p * ldb);                        \
        V bv[NVX];                                                           \
        for (v = 0; v < NVX; v++) bv[v] = b[v];                              \
        for (r = 0; r < R; r++) {                                            \
            T a = A[AIDX(r, p)];  /* a * bv[v] broadcasts it */            \
            for (v = 0; v < NVX; v++) acc[r][v] += a * bv[v];                \
        }                                                                    \
    }                                                                        \
    for (r = 0; r < R; r++) {                                                \
        V* c = (V*) (C + (long) r * ldc);                                    \
        for (v = 0; v < NVX; v++)                                            \
            c[v] = accumulate ? acc[r][v] + c[v] : acc[r][v];                \
    }                                                                        \
}

#define SK_DEFINE_SMALL_GEMM(NAME, TILE, T, V, AIDX)                          \
SK_DEFINE_TILE(TILE##_4xNV, 4, SK_NV, T, V, AIDX)                            \
SK_DEFINE_TILE(TILE##_1xNV, 1, SK_NV, T, V, AIDX)                            \
SK_DEFINE_TILE(TILE##_8x1, 8, 1, T, V, AIDX)                                 \
SK_DEFINE_TILE(TILE##_1x1, 1, 1, T, V, AIDX)                                 \
static void NAME(int m, int n, int k, const T* A, int lda, const T* B,       \
                 int ldb, int accumulate, T* C, int ldc)                     \
{                                                                            \
    enum { W = SK_VBYTES / sizeof(T), NV = SK_NV };                          \
    int i, j, p;                                                             \
    int n_panel = n / (NV * W) * (NV * W);                                   \
    int n_vec = n / W * W;                                                   \
    /* Panels of NV vectors: tiles of 4 rows, then single rows. */           \
    for (j = 0; j < n_panel; j += NV * W) {                                  \
        for (i = 0; i + 4 <= m; i += 4)                                      \
            TILE##_4xNV(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,  \
                 C + (long) i * ldc + j, ldc);                               \
        for (; i < m; i++)                                                   \
            TILE##_1xNV(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,  \
                 C + (long) i * ldc + j, ldc);                               \
    }                                                                        \
    /* Single vectors of columns: tiles of 8 rows (8 independent sums keep  \
       the FMA units busy), then single rows. */                             \
    for (j = n_panel; j < n_vec; j += W) {                                   \
        for (i = 0; i + 8 <= m; i += 8)                                      \
            TILE##_8x1(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,   \
                 C + (long) i * ldc + j, ldc);                               \
        for (; i < m; i++)                                                   \
            TILE##_1x1(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,   \
                 C + (long) i * ldc + j, ldc);                               \
    }                                                                        \
    /* The last columns, one element at a time. */                           \
    for (j = n_vec; j < n; j++) {                                            \
        for (i = 0; i < m; i++) {                                            \
            T acc = 0;                                                       \
            for (p = 0; p < k; p++)                                          \
                acc += A[AIDX(i, p)] * B[(long) p * ldb + j];                \
            C[(long) i * ldc + j] = accumulate ? acc + C[(long) i * ldc + j] \
                                               : acc;                        \
        }                                                                    \
    }                                                                        \
}

SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_f, sklstm_tile_f, float, sk_vf, SK_A_NN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_d, sklstm_tile_d, double, sk_vd, SK_A_NN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_tn_f, sklstm_tile_tn_f, float, sk_vf,
                     SK_A_TN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_tn_d, sklstm_tile_tn_d, double, sk_vd,
                     SK_A_TN)

#endif
