/* The per-step GEMMs of small LSTMs, without BLAS's per-call packing.
 *
 * C (m x n) = A (m x k) @ B (k x n) [+ C], all row-major, B's rows
 * contiguous (W_hh's transpose, or W_hh itself, read as is); the same with
 * B packed into panels once per kernel call (the per-step products: see
 * SK_DEFINE_PACKED_GEMM); and the "TN" form C = A.T @ B [+ C] with A
 * (k x m) row-major, which the chunked weight gradients use
 * (dW_hh += dgates.T @ h over a few steps). Built on these: the weight
 * gradients over a whole minibatch (SK_DEFINE_WEIGHT_GRAD) and, for B
 * narrower than one vector, row dot products (SK_DEFINE_ROW_DOTS).
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

/* The parts of a tile: its R x NVX accumulators (acc, with indices r and
 * v), one k step (a row of B, one element of A per row of the tile), and
 * the store into C (adding C's values, when accumulating). */
#define SK_TILE_START(R, NVX, V)                                              \
    V acc[R][NVX];                                                           \
    int r, v;                                                                \
    for (r = 0; r < R; r++)                                                  \
        for (v = 0; v < NVX; v++) acc[r][v] = (V){0};
#define SK_TILE_STEP(R, NVX, T, V, B_ROW, A_OF_R)                             \
    {                                                                        \
        const V* b = (const V*) (B_ROW);                                     \
        V bv[NVX];                                                           \
        for (v = 0; v < NVX; v++) bv[v] = b[v];                              \
        for (r = 0; r < R; r++) {                                            \
            T a = A_OF_R;  /* a * bv[v] broadcasts it */                     \
            for (v = 0; v < NVX; v++) acc[r][v] += a * bv[v];                \
        }                                                                    \
    }
#define SK_TILE_STORE(R, NVX, V)                                              \
    for (r = 0; r < R; r++) {                                                \
        V* c = (V*) (C + (long) r * ldc);                                    \
        for (v = 0; v < NVX; v++)                                            \
            c[v] = accumulate ? acc[r][v] + c[v] : acc[r][v];                \
    }

#define SK_DEFINE_TILE(NAME, R, NVX, T, V, AIDX)                              \
static inline void NAME(int k, const T* A, int lda, const T* B, int ldb,     \
                        int accumulate, T* C, int ldc)                       \
{                                                                            \
    int p;                                                                   \
    SK_TILE_START(R, NVX, V)                                                 \
    for (p = 0; p < k; p++)                                                  \
        SK_TILE_STEP(R, NVX, T, V, B + (long) p * ldb, A[AIDX(r, p)])        \
    SK_TILE_STORE(R, NVX, V)                                                 \
}

/* Columns [0, n) of C for n narrower than a panel (or a panel's leftover):
 * tiles of 8 rows x one vector (8 independent sums keep the FMA units
 * busy), single rows, then the last columns one element at a time. */
#define SK_DEFINE_COLUMNS(NAME, TILE, T, AIDX)                                \
static void NAME(int m, int n, int k, const T* A, int lda, const T* B,       \
                 int ldb, int accumulate, T* C, int ldc)                     \
{                                                                            \
    enum { W = SK_VBYTES / sizeof(T) };                                      \
    int i, j, p;                                                             \
    int n_vec = n / W * W;                                                   \
    for (j = 0; j < n_vec; j += W) {                                         \
        for (i = 0; i + 8 <= m; i += 8)                                      \
            TILE##_8x1(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,   \
                 C + (long) i * ldc + j, ldc);                               \
        for (; i < m; i++)                                                   \
            TILE##_1x1(k, A + AIDX(i, 0), lda, B + j, ldb, accumulate,   \
                 C + (long) i * ldc + j, ldc);                               \
    }                                                                        \
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

/* Panels of NV vectors of columns: tiles of 4 rows, then single rows. B is
 * read at B + p * ldb + j for column j of the panel starting at column j0
 * of B; the packed form passes each panel as its own k x PW block.
 *
 * Before a tile runs, the lines of C that the next tile of the panel will
 * write (or, accumulating, read) are prefetched for writing. At W3's
 * forward step a tile writes 16 lines of the (T, B, 4H) gates array, 52 MB
 * that no cache holds, so its stores after the k loop missed every cache;
 * prefetched one tile ahead (a tile runs ~4600 cycles at k = 288), the
 * lines arrive while the FMAs run. Builds with and without it alternating
 * in one process (Zen 4, AVX-512; benchmarks/ab_kernels.py): W3's forward
 * call 0.96x on one core, 0.96-0.98x on two, its backward 0.97-0.99x (C is
 * dW_hh's 512 KiB slice there, read and written at each step); W1's, W2's
 * and W4's second layer's calls 0.95-1.00x, within this host's noise.
 * Below SK_PREFETCH_MIN_K a tile is too short to hide a miss behind, and C
 * (a step buffer, dh) is small enough to be in cache already: no prefetch
 * there. The next tile's rows are i + 4 to i + 7; a prefetch never faults,
 * but these stay inside C. */
#define SK_PREFETCH_MIN_K 64
#define SK_PREFETCH_NEXT_TILE                                                 \
    if (k >= SK_PREFETCH_MIN_K && i + 8 <= m) {                              \
        int r_, b_;                                                          \
        for (r_ = 4; r_ < 8; r_++)                                           \
            for (b_ = 0; b_ < SK_NV * SK_VBYTES; b_ += 64)                   \
                __builtin_prefetch((const char*) (C + (long) (i + r_) * ldc  \
                                                  + j) + b_, 1, 3);          \
    }
#define SK_PANEL_ROWS(TILE, AIDX, PANEL_B, PANEL_LDB)                         \
    for (i = 0; i + 4 <= m; i += 4) {                                        \
        SK_PREFETCH_NEXT_TILE                                                \
        TILE##_4xNV(k, A + AIDX(i, 0), lda, PANEL_B, PANEL_LDB, accumulate,  \
                    C + (long) i * ldc + j, ldc);                            \
    }                                                                        \
    for (; i < m; i++)                                                       \
        TILE##_1xNV(k, A + AIDX(i, 0), lda, PANEL_B, PANEL_LDB, accumulate,  \
                    C + (long) i * ldc + j, ldc);

#define SK_DEFINE_SMALL_GEMM(NAME, TILE, T, V, AIDX)                          \
SK_DEFINE_TILE(TILE##_4xNV, 4, SK_NV, T, V, AIDX)                            \
SK_DEFINE_TILE(TILE##_1xNV, 1, SK_NV, T, V, AIDX)                            \
SK_DEFINE_TILE(TILE##_8x1, 8, 1, T, V, AIDX)                                 \
SK_DEFINE_TILE(TILE##_1x1, 1, 1, T, V, AIDX)                                 \
SK_DEFINE_COLUMNS(NAME##_columns, TILE, T, AIDX)                             \
static void NAME(int m, int n, int k, const T* A, int lda, const T* B,       \
                 int ldb, int accumulate, T* C, int ldc)                     \
{                                                                            \
    enum { PW = SK_NV * (SK_VBYTES / sizeof(T)) };                           \
    int i, j;                                                                \
    int n_panel = n / PW * PW;                                               \
    for (j = 0; j < n_panel; j += PW) {                                      \
        SK_PANEL_ROWS(TILE, AIDX, B + j, ldb)                                \
    }                                                                        \
    NAME##_columns(m, n - n_panel, k, A, lda, B + n_panel, ldb, accumulate,  \
                   C + n_panel, ldc);                                        \
}

/* The same product with B packed beforehand (NAME##_pack): each panel of
 * PW columns is one contiguous k x PW block, followed by the leftover
 * n % PW columns as a k x (n % PW) block. The tiles, and so the sums, are
 * those of the kernel reading B in place, bit for bit; only where B's
 * elements sit changes. Read in place, a panel is k rows ldb apart, which
 * map to few cache sets and, for large B, many pages; packed, it is one
 * stream. A kernel call packs its weights once for all its steps, where
 * BLAS packs B on every call. One Zen 3 core, GFLOP/s: at 32 x 256 x 64
 * (W2's step, per thread) 81 in place, 102 packed; at 64 x 1024 x 256
 * (W3's) 36 in place, 96 packed, and in another run 88 packed against
 * OpenBLAS' 67. */
/* The body of a product on packed panels of B: the panels' tiles, then the
 * leftover columns. It reads the names m, n, k, A, lda, Bp, accumulate, C
 * and ldc, as the functions using it define them. */
#define SK_PACKED_PANELS(SMALL, TILE, T, AIDX)                                \
    enum { PW = SK_NV * (SK_VBYTES / sizeof(T)) };                           \
    int i, j;                                                                \
    int n_panel = n / PW * PW;                                               \
    for (j = 0; j < n_panel; j += PW) {                                      \
        SK_PANEL_ROWS(TILE, AIDX, Bp + (long) j * k, PW)                     \
    }                                                                        \
    SMALL##_columns(m, n - n_panel, k, A, lda, Bp + (long) n_panel * k,     \
                    n - n_panel, accumulate, C + n_panel, ldc);

#define SK_DEFINE_PACKED_GEMM(NAME, SMALL, TILE, T)                           \
static void NAME##_pack(int k_total, int n, int p0, int p1, const T* src,    \
                        long row_stride, long col_stride, T* Bp)             \
{                                                                            \
    /* Rows [p0, p1) of B (k_total x n), element (p, j) read at             \
       src[(p - p0) * row_stride + j * col_stride], in blocks of BLK x BLK  \
       (BLK divides PW, so a block lies in one panel): a transposed read     \
       (the forward's [W_ih | W_hh].T, row_stride 1) then touches BLK       \
       lines of src and BLK of Bp, all in L1, where element by element     \
       along a row of B it touched a line of src per element (72 x 256,    \
       W2's, on one Zen 4 core: 15.7 us, 1.8 % of its forward call). */    \
    enum { PW = SK_NV * (SK_VBYTES / sizeof(T)),                             \
           BLK = PW < 16 ? PW : 16 };                                        \
    int n_panel = n / PW * PW, rest = n - n_panel, p, pb, pe, j, jb;         \
    for (pb = p0; pb < p1; pb += BLK) {                                      \
        pe = pb + BLK < p1 ? pb + BLK : p1;                                  \
        for (jb = 0; jb < n_panel; jb += BLK)                                \
            for (p = pb; p < pe; p++) {                                      \
                const T* row = src + (long) (p - p0) * row_stride;           \
                T* dst = Bp + (long) (jb / PW) * k_total * PW                \
                         + (long) p * PW + jb % PW;                          \
                for (j = 0; j < BLK; j++)                                    \
                    dst[j] = row[(long) (jb + j) * col_stride];              \
            }                                                                \
        for (p = pb; p < pe; p++) {                                          \
            const T* row = src + (long) (p - p0) * row_stride;               \
            for (j = 0; j < rest; j++)                                       \
                Bp[(long) n_panel * k_total + (long) p * rest + j] =         \
                    row[(long) (n_panel + j) * col_stride];                  \
        }                                                                    \
    }                                                                        \
}                                                                            \
static void NAME(int m, int n, int k, const T* A, int lda, const T* Bp,      \
                 int accumulate, T* C, int ldc)                              \
{                                                                            \
    SK_PACKED_PANELS(SMALL, TILE, T, SK_A_NN)                                \
}

/* C (m x n) = A (m x k) @ B for B narrower than one vector (n < W floats,
 * such as W_ih at one input feature, in dX = dgates @ W_ih), given as its
 * transpose Bt (n x k): each element is the dot product of two contiguous
 * rows, summed in two vector accumulators (alternate blocks of W), then
 * across lanes, then the last k % 2W terms. SK_DEFINE_COLUMNS would sum
 * such columns one scalar FMA after the other, a chain of k dependent
 * FMAs: 15 % of W1's backward (k = 4H = 128, n = 1). Two rows run side
 * by side for four independent chains; every row is summed alike, so the
 * result does not depend on how the rows are cut. */
#define SK_DEFINE_ROW_DOTS(NAME, T, V)                                        \
static inline T NAME##_one(int k, const T* a, const T* b)                    \
{                                                                            \
    enum { W = SK_VBYTES / sizeof(T) };                                      \
    V acc0 = (V){0}, acc1 = (V){0};                                          \
    int p, l, k_vec = k / (2 * W) * (2 * W);                                 \
    T sum = 0;                                                               \
    for (p = 0; p < k_vec; p += 2 * W) {                                     \
        acc0 += *(const V*) (a + p) * *(const V*) (b + p);                   \
        acc1 += *(const V*) (a + p + W) * *(const V*) (b + p + W);           \
    }                                                                        \
    acc0 += acc1;                                                            \
    for (l = 0; l < W; l++) sum += acc0[l];                                  \
    for (p = k_vec; p < k; p++) sum += a[p] * b[p];                          \
    return sum;                                                              \
}                                                                            \
static void NAME(int m, int n, int k, const T* A, int lda, const T* Bt,      \
                 int ldbt, T* C, int ldc)                                    \
{                                                                            \
    int i, j;                                                                \
    for (i = 0; i + 2 <= m; i += 2)                                          \
        for (j = 0; j < n; j++) {                                            \
            T s0 = NAME##_one(k, A + (long) i * lda, Bt + (long) j * ldbt);  \
            T s1 = NAME##_one(k, A + (long) (i + 1) * lda,                   \
                              Bt + (long) j * ldbt);                         \
            C[(long) i * ldc + j] = s0;                                      \
            C[(long) (i + 1) * ldc + j] = s1;                                \
        }                                                                    \
    for (; i < m; i++)                                                       \
        for (j = 0; j < n; j++)                                              \
            C[(long) i * ldc + j] = NAME##_one(k, A + (long) i * lda,        \
                                               Bt + (long) j * ldbt);        \
}

/* The weight gradients over all T*B rows of a minibatch,
 * dW (m x n) = D.T @ Y for D = dgates[:, g0:g1] (K x m, leading dimension
 * ldd) and Y = h or x (K x n), with K = T*B in the thousands.
 *
 * Why: BLAS packs D transposed (its "otcopy" of dgates' columns) and then
 * runs its kernel; at the shapes of small LSTMs (n = H or I <= 64, m = the
 * gate units of one thread) the packing costs as much as the products. One
 * Zen 3 core, GFLOP/s against OpenBLAS in the same run: 81 / 51 at W1's
 * dW_hh (K = 608, m = 64, n = 32), 83 / 66 at W2's (3136, 128, 64), 49 /
 * 29 at W2's dW_ih (n = 8); at W3's dW_hh (12672, 512, 256) OpenBLAS is
 * ahead, 79 / 74.
 *
 * How: C's transpose Ct = dW.T (n x m) is computed instead, as the TN
 * product Y.T @ D, so that a vector of the tile runs along the gate units,
 * contiguous in D's rows, and a broadcast element comes from Y's row. D is
 * taken in blocks of SK_WG_ROWS rows; each block is copied into panels of
 * PW columns (whole vectors: cheap, no transpose), which stay in L1 while
 * the tiles run over all of Y's columns; the tiles add the block's sums to
 * Ct. The same pass adds the rows of D to a column sum (dbias). Each
 * element of Ct is summed block by block in row order, whatever the number
 * of gate units m, so cutting the gate units over threads does not change
 * a bit. NAME##_store writes Ct transposed into dW. */
#define SK_WG_ROWS 64

#define SK_DEFINE_WEIGHT_GRAD(NAME, SMALL, TILE, T, V)                        \
static void NAME##_pack(int kb, int m, const T* D, long ldd, T* Dp,          \
                        T* colsum)                                           \
{                                                                            \
    /* Rows [0, kb) of D into panels of PW columns (each kb x PW), then the  \
       m % PW leftover columns (kb x rest); colsum[j] += D[p, j] in row     \
       order. */                                                             \
    enum { W = SK_VBYTES / sizeof(T), PW = SK_NV * W };                      \
    int m_panel = m / PW * PW, rest = m - m_panel, p, j, v;                  \
    for (j = 0; j < m_panel; j += PW) {                                      \
        T* dst = Dp + (long) j * kb;                                         \
        V sum[SK_NV];                                                        \
        for (v = 0; v < SK_NV; v++) sum[v] = *(const V*) (colsum + j + v * W); \
        for (p = 0; p < kb; p++) {                                           \
            const V* s = (const V*) (D + (long) p * ldd + j);                \
            V* d = (V*) (dst + (long) p * PW);                               \
            for (v = 0; v < SK_NV; v++) {                                    \
                d[v] = s[v];                                                 \
                sum[v] += s[v];                                              \
            }                                                                \
        }                                                                    \
        for (v = 0; v < SK_NV; v++) *(V*) (colsum + j + v * W) = sum[v];     \
    }                                                                        \
    for (p = 0; p < kb; p++)                                                 \
        for (j = 0; j < rest; j++) {                                         \
            T value = D[(long) p * ldd + m_panel + j];                       \
            Dp[(long) m_panel * kb + (long) p * rest + j] = value;           \
            colsum[m_panel + j] += value;                                    \
        }                                                                    \
}                                                                            \
static void NAME##_block(int n_y, int m_g, int kb, const T* Y, int ldy,    \
                         const T* Dp, int accumulate, T* Ct)                 \
{                                                                            \
    /* Ct (n_y x m_g, leading dimension m_g) (+)= Y.T @ D for a block of kb \
       rows: Y (kb x n_y) read in place, D as NAME##_pack left it. In the   \
       names of SK_PACKED_PANELS: C (m x n) = A.T @ B. */                   \
    const int m = n_y, n = m_g, k = kb, lda = ldy, ldc = m_g;                \
    const T* A = Y;                                                          \
    const T* Bp = Dp;                                                        \
    T* C = Ct;                                                               \
    SK_PACKED_PANELS(SMALL, TILE, T, SK_A_TN)                                \
}                                                                            \
static void NAME##_store(int m, int n, const T* Ct, T* dW, int ldw)          \
{                                                                            \
    /* dW[g, j] = Ct[j, g] for g < m, j < n. */                              \
    int g, j;                                                                \
    for (g = 0; g < m; g++)                                                  \
        for (j = 0; j < n; j++)                                              \
            dW[(long) g * ldw + j] = Ct[(long) j * m + g];                   \
}

/* The weight gradients of one thread's block of rows over a few steps,
 * transposed: Ct (m x n) (+)= sum over steps s < n_steps and rows
 * p < n_rows of A[s, p, r] * B[s, p, j], with A[s, p, r] at
 * A[s * sa + p * lda + r] (x or h: m = I or H columns) and B[s, p, j] at
 * B[s * sb + p * ldb + j] (dgates: n = 4H).
 *
 * Why: a block's rows are consecutive within a step but the steps are a
 * whole time slice (B rows) apart, so the k of one product is two loops.
 * Each tile keeps its sums in registers across both, so C is read and
 * written once per call; one call per step would load and store the
 * thread's whole Ct (64 KiB at W2) every 32 rows. The vectors run along the
 * gate units, contiguous in dgates' rows and 4H wide, so even x's few
 * columns (W2: 8) fill whole tiles of rows of Ct.
 *
 * Each element of Ct is summed over s, then p, from zero, by the same
 * operations in every tile shape, so the sums do not depend on how m is
 * cut into tiles. */
#define SK_DEFINE_STEPS_TILE(NAME, R, NVX, T, V)                              \
static inline void NAME(int n_steps, int n_rows, const T* A, int lda,        \
                        long sa, const T* B, int ldb, long sb,               \
                        int accumulate, T* C, int ldc)                       \
{                                                                            \
    int s, p;                                                                \
    SK_TILE_START(R, NVX, V)                                                 \
    for (s = 0; s < n_steps; s++) {                                          \
        const T* As = A + (long) s * sa;                                     \
        const T* Bs = B + (long) s * sb;                                     \
        for (p = 0; p < n_rows; p++)                                         \
            SK_TILE_STEP(R, NVX, T, V, Bs + (long) p * ldb,                  \
                         As[(long) p * lda + r])                             \
    }                                                                        \
    SK_TILE_STORE(R, NVX, V)                                                 \
}

/* Columns [j, j + the tiles' width) of C, rows in tiles of 4, then 1. */
#define SK_STEPS_ROWS(TILE_4, TILE_1)                                         \
    for (i = 0; i + 4 <= m; i += 4)                                          \
        TILE_4(n_steps, n_rows, A + i, lda, sa, B + j, ldb, sb, accumulate,  \
               C + (long) i * ldc + j, ldc);                                 \
    for (; i < m; i++)                                                       \
        TILE_1(n_steps, n_rows, A + i, lda, sa, B + j, ldb, sb, accumulate,  \
               C + (long) i * ldc + j, ldc);

#define SK_DEFINE_STEPS_TN(NAME, T, V)                                        \
SK_DEFINE_STEPS_TILE(NAME##_4xNV, 4, SK_NV, T, V)                            \
SK_DEFINE_STEPS_TILE(NAME##_1xNV, 1, SK_NV, T, V)                            \
SK_DEFINE_STEPS_TILE(NAME##_4x1, 4, 1, T, V)                                 \
SK_DEFINE_STEPS_TILE(NAME##_1x1, 1, 1, T, V)                                 \
static void NAME(int m, int n, int n_steps, int n_rows, const T* A, int lda, \
                 long sa, const T* B, int ldb, long sb, int accumulate,      \
                 T* C, int ldc)                                              \
{                                                                            \
    enum { W = SK_VBYTES / sizeof(T), PW = SK_NV * W };                      \
    int i, j, s, p;                                                          \
    int n_panel = n / PW * PW, n_vec = n / W * W;                            \
    for (j = 0; j < n_panel; j += PW) {                                      \
        SK_STEPS_ROWS(NAME##_4xNV, NAME##_1xNV)                              \
    }                                                                        \
    for (j = n_panel; j < n_vec; j += W) {                                   \
        SK_STEPS_ROWS(NAME##_4x1, NAME##_1x1)                                \
    }                                                                        \
    for (j = n_vec; j < n; j++)                                              \
        for (i = 0; i < m; i++) {                                            \
            T acc = 0;                                                       \
            for (s = 0; s < n_steps; s++)                                    \
                for (p = 0; p < n_rows; p++)                                 \
                    acc += A[(long) s * sa + (long) p * lda + i]             \
                           * B[(long) s * sb + (long) p * ldb + j];          \
            C[(long) i * ldc + j] = accumulate ? acc + C[(long) i * ldc + j] \
                                               : acc;                        \
        }                                                                    \
}

SK_DEFINE_STEPS_TN(sklstm_steps_tn_f, float, sk_vf)
SK_DEFINE_STEPS_TN(sklstm_steps_tn_d, double, sk_vd)

SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_f, sklstm_tile_f, float, sk_vf, SK_A_NN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_d, sklstm_tile_d, double, sk_vd, SK_A_NN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_tn_f, sklstm_tile_tn_f, float, sk_vf,
                     SK_A_TN)
SK_DEFINE_SMALL_GEMM(sklstm_small_gemm_tn_d, sklstm_tile_tn_d, double, sk_vd,
                     SK_A_TN)
SK_DEFINE_PACKED_GEMM(sklstm_packed_gemm_f, sklstm_small_gemm_f, sklstm_tile_f,
                      float)
SK_DEFINE_PACKED_GEMM(sklstm_packed_gemm_d, sklstm_small_gemm_d, sklstm_tile_d,
                      double)
SK_DEFINE_ROW_DOTS(sklstm_row_dots_f, float, sk_vf)
SK_DEFINE_ROW_DOTS(sklstm_row_dots_d, double, sk_vd)
SK_DEFINE_WEIGHT_GRAD(sklstm_weight_grad_f, sklstm_small_gemm_tn_f,
                      sklstm_tile_tn_f, float, sk_vf)
SK_DEFINE_WEIGHT_GRAD(sklstm_weight_grad_d, sklstm_small_gemm_tn_d,
                      sklstm_tile_tn_d, double, sk_vd)

#endif
