"""Forward and backward timestep loops of one LSTM layer-direction.

Notation as in ``sklstm/_backends/_base.py``: ``T`` timesteps, ``B``
sequences, ``I`` input features (``n_in`` in the code), ``H`` hidden units,
``G = 4H`` gate units in PyTorch's order ``i | f | g | o``; ``W_ih`` is
``(4H, I)``, ``W_hh`` is ``(4H, P)``. Arrays are time-major and C-contiguous,
so ``X[t]`` (all ``B`` rows of one timestep) and ``X.reshape(T * B, I)`` are
plain GEMM operands. ``hidden`` and its gradient may also be a block of
columns of a wider C-contiguous array, whose rows are then ``ldh`` (``ldd``)
elements apart (a direction's half of a bidirectional layer's output):
GEMM operands still, with that leading dimension.

``P`` is the width of ``h``: ``P = H`` without a projection. With PyTorch's
``proj_size`` projection ``W_hr`` (P, H), the cell output
``m_t = o * tanh(c_t)`` (H values) is projected, ``h_t = m_t @ W_hr.T``
(P values): per step one more GEMM forward, ``dm = dh @ W_hr`` backward, and
after the loop ``dW_hr = dh_all.T @ m_all``. Backward recomputes ``m_t`` from
the stored gates and cells (bit for bit as forward did), so training stores
nothing more than without a projection. Each call checks once whether
``W_hr`` is given; without it the loops run exactly as before.

Lengths are sorted in descending order, so the sequences still running at
step ``s`` are the prefix ``b < n_s`` with ``n_s = #{b : lengths[b] > s}``:
the per-step GEMMs shrink to ``n_s`` rows instead of computing on padding.
The same ``n_t`` counts the valid rows of *time* ``t``: at every time the
padding rows are the suffix ``b >= n_t``, in both directions.

At step ``s`` row ``b`` is at time ``t = s`` (forward) or
``t = lengths[b] - 1 - s`` (reverse, each sequence reversed within its own
length). Reverse steps scatter over time, so the recurrence runs on
contiguous per-step buffers indexed by row: ``h_state`` (B, P),
``c_state`` (B, H), ``step_gates`` (B, 4H) and, with a projection,
``m_step`` (B, H) forward; ``dh_rec`` (B, P), ``dc_state`` (B, H),
``dgates_step`` (B, 4H) and, with a projection, ``dh_step`` (B, P) and
``dm_step`` (B, H) backward. Results are stored in time order.

The ``def`` entry points check shapes and lengths with the GIL, then run
everything in one ``with nogil:`` block; nothing is allocated here (the
backend, ``sklstm/_backends/_cpu.py``, passes outputs and workspaces in).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.limits cimport INT_MAX
from libc.math cimport isfinite, sqrt
from libc.string cimport memcpy, memset

from ._activations cimport sigmoid, sigmoid_grad, tanh, tanh_grad
from ._blas cimport gemm

cdef extern from "_small_gemm.h":
    void sklstm_small_gemm_f(int m, int n, int k, const float* A, int lda,
                             const float* B, int ldb, int accumulate,
                             float* C, int ldc) noexcept nogil
    void sklstm_small_gemm_d(int m, int n, int k, const double* A, int lda,
                             const double* B, int ldb, int accumulate,
                             double* C, int ldc) noexcept nogil
    void sklstm_small_gemm_tn_f(int m, int n, int k, const float* A, int lda,
                                const float* B, int ldb, int accumulate,
                                float* C, int ldc) noexcept nogil
    void sklstm_small_gemm_tn_d(int m, int n, int k, const double* A,
                                int lda, const double* B, int ldb,
                                int accumulate, double* C, int ldc) noexcept nogil
    int SK_VBYTES
    void sklstm_packed_gemm_f(int m, int n, int k, const float* A, int lda,
                              const float* Bp, int accumulate, float* C,
                              int ldc) noexcept nogil
    void sklstm_packed_gemm_d(int m, int n, int k, const double* A, int lda,
                              const double* Bp, int accumulate, double* C,
                              int ldc) noexcept nogil
    void sklstm_packed_gemm_f_pack(int k_total, int n, int p0, int p1,
                                   const float* src, long row_stride,
                                   long col_stride, float* Bp) noexcept nogil
    void sklstm_packed_gemm_d_pack(int k_total, int n, int p0, int p1,
                                   const double* src, long row_stride,
                                   long col_stride, double* Bp) noexcept nogil
    int SK_WG_ROWS
    void sklstm_row_dots_f(int m, int n, int k, const float* A, int lda,
                           const float* Bt, int ldbt, float* C,
                           int ldc) noexcept nogil
    void sklstm_row_dots_d(int m, int n, int k, const double* A, int lda,
                           const double* Bt, int ldbt, double* C,
                           int ldc) noexcept nogil
    void sklstm_weight_grad_f_pack(int kb, int m, const float* D, long ldd,
                                   float* Dp, float* colsum) noexcept nogil
    void sklstm_weight_grad_d_pack(int kb, int m, const double* D, long ldd,
                                   double* Dp, double* colsum) noexcept nogil
    void sklstm_weight_grad_f_block(int n, int m_g, int kb, const float* Y,
                                    int ldy, const float* Dp, int accumulate,
                                    float* Ct) noexcept nogil
    void sklstm_weight_grad_d_block(int n, int m_g, int kb, const double* Y,
                                    int ldy, const double* Dp, int accumulate,
                                    double* Ct) noexcept nogil
    void sklstm_weight_grad_f_store(int m, int n, const float* Ct, float* dW,
                                    int ldw) noexcept nogil
    void sklstm_weight_grad_d_store(int m, int n, const double* Ct,
                                    double* dW, int ldw) noexcept nogil
    void sklstm_steps_tn_f(int m, int n, int n_steps, int n_rows,
                           const float* A, int lda, long sa, const float* B,
                           int ldb, long sb, int accumulate, float* C,
                           int ldc) noexcept nogil
    void sklstm_steps_tn_d(int m, int n, int n_steps, int n_rows,
                           const double* A, int lda, long sa, const double* B,
                           int ldb, long sb, int accumulate, double* C,
                           int ldc) noexcept nogil

# Largest B (k x n) of a per-step product that _small_gemm computes itself
# (it stays in L2; beyond, BLAS's packing pays for itself).
DEF SMALL_B_BYTES = 128 * 1024

# Largest sums of one row block's weight gradients for which lstm_backward
# sums them by row blocks (see _row_grads_fit).
DEF ROW_GRADS_MAX_BYTES = 256 * 1024

# The L1 data cache of most x86 cores: a right-hand matrix this small is read
# in place as fast as packed (the backend packs W_hh only beyond it, see
# _PACK_MIN_BYTES in _backends/_cpu.py).
DEF L1_BYTES = 32 * 1024
DEF L1_DOUBLES = L1_BYTES // 8

# Whether lstm_backward computes the weight gradients chunk by chunk (see
# _weight_grads_times) unless told: where sklstm's TN kernel runs the
# chunks' small-K products faster than BLAS runs the one large-K product
# after the loop. With AVX-512 it does (Zen 5, W2 backward on 2 threads:
# 1.55 -> 1.33 ms with the TN kernel, about 10 % of a W2 epoch over the
# post-loop path). With AVX2 (Zen 3, 16 vector registers, 4 x 2-vector
# tiles) the chunks lose to OpenBLAS' Haswell kernel running one large-K
# product after the loop: backward, min of 200-400 calls, W2 on 2 threads
# 2.41-2.52 ms chunked against 2.23 ms after the loop, on 1 thread 4.64
# against 4.13 ms; T=50 B=128 H=128 18.4 against 16.1 ms; W3 (before the
# broadcast fix in _small_gemm.h) 159 against 120 ms; W1 equal.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define SKLSTM_CHUNKED_WEIGHT_GRADS 1
    #else
    #define SKLSTM_CHUNKED_WEIGHT_GRADS 0
    #endif
    """
    bint SKLSTM_CHUNKED_WEIGHT_GRADS

# Below how many rows per piece the per-step products whose B exceeds
# SMALL_B_BYTES run in sklstm's kernel on packed panels rather than in BLAS
# (B at or below SMALL_B_BYTES always runs on packed panels). BLAS packs B
# on every call, which a few hundred rows do not repay; from about 256 rows
# its own kernel is the faster. One Zen 3 core, AVX2, GFLOP/s of packed
# panels against OpenBLAS, in one run, at (rows x 1024 x 256): 64 rows
# 88 / 67, 128 rows 88 / 80, 192 rows 88 / 84, 256 rows 87 / 86, 512 rows
# 84 / 90; alike at 512 x 128, 1024 x 288 and 256 x 1024. The AVX-512 build
# packs every B: one Zen 4 core (AVX-512), packed panels against OpenBLAS,
# at 32 to 2048 rows: (rows x 1024 x 288) 107-116 / 85-99, (rows x 256 x
# 192) 106-117 / 90-100. Inside the kernels, W4's second layer (I = 128,
# B = 192 KiB) went forward from 2.71 to 1.93 ms on 2 threads and W3's
# forward from 50.6 to 42.3 ms (backward, whose W_hh is 1 MiB, 175 -> 141
# ms on one thread). The baseline build keeps BLAS (its SSE2 panels ran at
# 33 GFLOP/s, against OpenBLAS' 68 at 64 rows).
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define SKLSTM_PACKED_MAX_ROWS (1 << 30)
    #elif defined(__AVX2__)
    #define SKLSTM_PACKED_MAX_ROWS 256
    #else
    #define SKLSTM_PACKED_MAX_ROWS 0
    #endif
    """
    int SKLSTM_PACKED_MAX_ROWS

# Whether lstm_backward computes dW_ih, dW_hh and dbias after the loop in
# sklstm's kernel (_small_gemm.h, SK_DEFINE_WEIGHT_GRAD) rather than in BLAS,
# unless told: with AVX2 or AVX-512, where it was measured faster at the
# shapes it takes (see _own_weight_grad); the baseline build keeps BLAS. The
# AVX-512 build computes them chunk by chunk (SKLSTM_CHUNKED_WEIGHT_GRADS)
# where it can, and in this kernel elsewhere: the reverse direction. One
# Zen 4, backward on 2 threads, this kernel against BLAS: W2's shape
# reversed 1.29 against 1.65 ms, W4's second layer reversed 3.34 against
# 3.76 ms, W1's reversed 85 against 106 us; forward, where the chunks run,
# it was as fast as they (1.23 / 1.26 ms at W2).
cdef extern from *:
    """
    #if defined(__AVX2__)
    #define SKLSTM_OWN_WEIGHT_GRADS 1
    #else
    #define SKLSTM_OWN_WEIGHT_GRADS 0
    #endif
    """
    bint SKLSTM_OWN_WEIGHT_GRADS

# Rows of the cell backward that _backward_rows asks the CPU to fetch ahead
# of the row it works on, where the gates of a call take more than
# PREFETCH_MIN_BYTES (below, they are still in L2 from the forward pass:
# W1's 320 KiB, whose backward took 1.02x as long with the prefetches).
DEF PREFETCH_ROWS_AHEAD = 2
DEF PREFETCH_MIN_BYTES = 1024 * 1024

# A prefetch of every cache line of ``bytes`` bytes from ``p``, into L2
# (locality 2: prefetcht1, which did better than prefetcht0 and prefetcht2
# here). A prefetch never faults; the spans given stay inside their arrays
# all the same.
cdef extern from *:
    """
    static inline void sklstm_prefetch_span(const void* p, long bytes) {
        const char* c = (const char*) p;
        long i;
        for (i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
    }
    """
    void sklstm_prefetch_span(const void* p, long bytes) noexcept nogil

cdef extern from "_fma_peak.h":
    float sklstm_fma_rounds_f(long rounds) noexcept nogil
    int SK_FMA_ROUND_FLOPS

cdef extern from "<omp.h>":
    int omp_get_max_threads() noexcept nogil

# What the CPU (and the OS, which must save the wide registers) supports, for
# the choice of kernel build in sklstm/_kernels/_dispatch.py. GCC and Clang's
# __builtin_cpu_supports reads CPUID and XCR0; elsewhere: baseline only.
cdef extern from *:
    """
    static int sklstm_simd_level(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && \
        (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
            return 0;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512vl"))
            return 2;
        return 1;
    #else
        return 0;
    #endif
    }
    """
    int sklstm_simd_level() noexcept nogil


# ---------------------------------------------------------------------------
# Helpers (no GIL, no Python objects)

cdef inline Py_ssize_t _n_active(const Py_ssize_t* lengths, Py_ssize_t n_seq,
                                 Py_ssize_t step) noexcept nogil:
    """#{b : lengths[b] > step}, by bisection of the descending lengths."""
    cdef Py_ssize_t lo = 0, hi = n_seq, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if lengths[mid] > step:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _chunk(Py_ssize_t n, Py_ssize_t n_parts,
                              Py_ssize_t part, Py_ssize_t align) noexcept nogil:
    """Start of piece ``part`` of range(n) cut in ``n_parts`` near-equal
    pieces, each a multiple of ``align`` long but the last; piece ``part``
    is [_chunk(part), _chunk(part + 1))."""
    cdef Py_ssize_t size = (n + n_parts - 1) // n_parts
    size = (size + align - 1) // align * align
    return min(n, part * size)


cdef void _gemm_part(Py_ssize_t part, Py_ssize_t n_parts,
                     bint trans_a, bint trans_b, int m, int n, int k,
                     floating alpha, const floating* A, int lda,
                     const floating* Bm, int ldb,
                     floating beta, floating* C, int ldc) noexcept nogil:
    """Rows [lo, hi) of the row-major ``C = alpha op(A) @ op(B) + beta C``.

    The threads of a ``prange`` over ``part`` each compute their block of
    rows of C with a single-threaded BLAS call; op(A) row r is row r of A,
    or column r when A is transposed.
    """
    cdef Py_ssize_t lo = _chunk(m, n_parts, part, 16)
    cdef Py_ssize_t hi = _chunk(m, n_parts, part + 1, 16)
    if hi <= lo:
        return
    gemm(trans_a, trans_b, <int> (hi - lo), n, k, alpha,
         A + lo if trans_a else A + lo * lda, lda, Bm, ldb,
         beta, C + lo * ldc, ldc)


cdef void _input_grad_part(Py_ssize_t part, Py_ssize_t n_parts, int rows,
                           int n_in, int G, const floating* dgates_p,
                           const floating* W_ih_p, floating* dX_p) noexcept nogil:
    """Rows [lo, hi) of ``dX (rows, I) = dgates (rows, 4H) @ W_ih``, piece
    ``part`` of ``n_parts`` (as _gemm_part cuts them).

    While W_ih fits in L1 (32 KiB: few input features), sklstm's kernel
    reads it in place and streams dgates once, where BLAS packed all of
    dgates first (W2, 8 input features: 54 GFLOP/s on one core); larger,
    BLAS. The columns past the last whole vector of W_ih (all of them, below
    8 input features with AVX2) are row dot products with W_ih's columns,
    copied into rows first (SK_DEFINE_ROW_DOTS in ``_small_gemm.h``)."""
    cdef Py_ssize_t lo = _chunk(rows, n_parts, part, 16)
    cdef Py_ssize_t hi = _chunk(rows, n_parts, part + 1, 16)
    cdef int width = SK_VBYTES // sizeof(floating)
    cdef int n_vec = n_in // width * width, g, j
    # W_ih's last n_in - n_vec columns as rows (W_ih fits in L1_BYTES here).
    cdef double W_t_space[L1_DOUBLES]
    cdef floating* W_t = <floating*> W_t_space
    if hi <= lo or dX_p == NULL:  # NULL: the caller does not want dX
        return
    if <Py_ssize_t> G * n_in * sizeof(floating) <= L1_BYTES:
        if n_vec > 0:
            _small_gemm(False, <int> (hi - lo), n_vec, G, dgates_p + lo * G,
                        G, W_ih_p, n_in, False, dX_p + lo * n_in, n_in)
        if n_vec < n_in:
            for j in range(n_in - n_vec):
                for g in range(G):
                    W_t[j * G + g] = W_ih_p[g * n_in + n_vec + j]
            _row_dots(<int> (hi - lo), n_in - n_vec, G, dgates_p + lo * G, G,
                      W_t, G, dX_p + lo * n_in + n_vec, n_in)
    else:
        gemm(False, False, <int> (hi - lo), n_in, G, <floating> 1,
             dgates_p + lo * G, G, W_ih_p, n_in, <floating> 0,
             dX_p + lo * n_in, n_in)


cdef inline void _row_dots(int m, int n, int k, const floating* A, int lda,
                           const floating* Bt, int ldbt, floating* C,
                           int ldc) noexcept nogil:
    """``C (m, n) = A (m, k) @ Bt.T`` for ``Bt`` (n, k): one dot product of
    two contiguous rows per element (see ``_small_gemm.h``)."""
    if floating is float:
        sklstm_row_dots_f(m, n, k, A, lda, Bt, ldbt, C, ldc)
    else:
        sklstm_row_dots_d(m, n, k, A, lda, Bt, ldbt, C, ldc)


cdef Py_ssize_t _row_parts(Py_ssize_t pieces, Py_ssize_t B) noexcept nogil:
    """Row blocks for the recurrence: at most ``pieces``, >= 8 rows each."""
    return max(1, min(pieces, B // 8))


cdef Py_ssize_t _pieces(int n_parts, int n_threads) noexcept nogil:
    """How many pieces the work is cut into: ``n_parts``, or by default
    (0) one per thread."""
    return max(1, n_parts if n_parts > 0 else n_threads)


cdef int _workers(int n_threads, Py_ssize_t pieces) noexcept nogil:
    """Threads that run the pieces: no more than there are pieces."""
    return <int> max(1, min(<Py_ssize_t> n_threads, pieces))


def cpu_simd_level():
    """The widest kernel build this CPU runs: "avx512", "avx2" or "baseline"."""
    return ("baseline", "avx2", "avx512")[sklstm_simd_level()]


def fma_rounds(long rounds, int n_threads=1):
    """Run ``rounds`` rounds of float32 vector multiply-adds on each of
    ``n_threads`` threads, with no memory traffic; return the floating-point
    operations done (a multiply-add counts as two).

    Timed by the caller, this is the multiply-add peak of the cores in this
    build's instructions (see ``_fma_peak.h``): no product of the kernels
    can run faster. ``benchmarks/bench_cpu.py`` and ``bench_kernels.py``
    report it beside OpenBLAS' GEMM peak.
    """
    cdef int _thread
    cdef float sink = 0
    if rounds < 0 or n_threads < 1:
        raise ValueError(f"need rounds >= 0 and n_threads >= 1, got {rounds} "
                         f"and {n_threads}")
    with nogil:
        for _thread in prange(n_threads, num_threads=n_threads,
                              schedule="static"):
            sink += sklstm_fma_rounds_f(rounds)
    if sink != sink:  # never: keeps the sum, and so the loop, alive
        raise RuntimeError("the multiply-adds gave NaN")
    return float(rounds) * n_threads * SK_FMA_ROUND_FLOPS


def max_threads():
    """OpenMP's thread limit (what ``threadpoolctl`` sets for OpenMP)."""
    return omp_get_max_threads()


cdef inline void _activate_gates(
    Py_ssize_t H,
    floating* gates,          # (4H,) in: x_t @ W_ih.T (or the fused GEMM's
                              #   [x_t | h_prev] @ [W_ih | W_hh].T);
                              #   out: activated i|f|g|o
    const floating* rec,      # (4H,) h_prev @ W_hh.T, or NULL (none to add)
    const floating* bias,     # (4H,)
) noexcept nogil:
    """The bias and the gate activations of one row of one step.

    Written as short loops with few pointers each, so that the compiler
    vectorizes them (the activations are plain arithmetic).
    """
    cdef Py_ssize_t j
    # i, f = sigmoid(...); g = tanh(...); o = sigmoid(...)
    if rec == NULL:
        for j in range(2 * H):
            gates[j] = sigmoid(gates[j] + bias[j])
        for j in range(2 * H, 3 * H):
            gates[j] = tanh(gates[j] + bias[j])
        for j in range(3 * H, 4 * H):
            gates[j] = sigmoid(gates[j] + bias[j])
    else:
        for j in range(2 * H):
            gates[j] = sigmoid(gates[j] + rec[j] + bias[j])
        for j in range(2 * H, 3 * H):
            gates[j] = tanh(gates[j] + rec[j] + bias[j])
        for j in range(3 * H, 4 * H):
            gates[j] = sigmoid(gates[j] + rec[j] + bias[j])


cdef inline void _cell_forward(
    Py_ssize_t H,
    floating* gates,          # (4H,) in: x_t @ W_ih.T; out: activated i|f|g|o
    const floating* rec,      # (4H,) h_prev @ W_hh.T, or NULL (h_prev = 0)
    const floating* bias,     # (4H,)
    floating* c,              # (H,) in: c_prev; out: c_t
    floating* h,              # (H,) out: h_t
) noexcept nogil:
    """One row of one step: bias, activations, c_t and h_t."""
    cdef Py_ssize_t j
    cdef floating c_t
    _activate_gates(H, gates, rec, bias)
    # c_t = f * c_prev + i * g;  h_t = o * tanh(c_t)
    for j in range(H):
        c_t = gates[H + j] * c[j] + gates[j] * gates[2 * H + j]
        c[j] = c_t
        h[j] = gates[3 * H + j] * tanh(c_t)


cdef inline void _cell_forward_stored(
    Py_ssize_t H,
    floating* gates,          # (4H,) in: [x_t | h_prev] @ [W_ih | W_hh].T;
                              #   out: activated i|f|g|o
    const floating* bias,     # (4H,)
    const floating* c_prev,   # (H,) c_prev (another row than c)
    floating* c,              # (H,) out: c_t
    floating* h,              # (H,) out: h_t
    floating* h_seq,          # (H,) out: h_t again (the hidden sequence)
) noexcept nogil:
    """_cell_forward of the fused recurrence when training: c_t goes
    straight into the cells array, from c_prev read there, and h_t both
    into the next step's GEMM operand and into the hidden sequence, where
    the plain cell updates a state row that the caller then copies out.
    The arithmetic is the same, in the same order."""
    cdef Py_ssize_t j
    cdef floating h_t
    cdef const floating* go = gates + 3 * H
    _activate_gates(H, gates, NULL, bias)
    # Two loops: as one, with its five arrays, GCC did not vectorize it.
    for j in range(H):
        c[j] = gates[H + j] * c_prev[j] + gates[j] * gates[2 * H + j]
    for j in range(H):
        h_t = go[j] * tanh(c[j])
        h[j] = h_t
        h_seq[j] = h_t


cdef inline void _cell_backward_dc(
    Py_ssize_t H,
    floating* gd,             # (4H,) in: activated i|f|g, and o's gradient;
                              #   out: the gate gradients
    const floating* cell_prev,  # (H,) c_prev; NULL at the first step (zero)
    floating* dc,             # (H,) in: dL/dc_t; out: dL/dc_prev
) noexcept nogil:
    """The gate gradients that follow from dL/dc_t (both cell backwards),
    in place: each block's activations are read, then overwritten by their
    gradients.

    Each loop reads the gates it needs before it stores over them. The
    blocks have pointers of their own: with ``gd[2 * H + j]``, GCC does not
    vectorize a loop storing into two blocks of one array an unknown H
    apart; with two pointers it checks at run time that they do not overlap.
    """
    cdef Py_ssize_t j
    cdef floating* gi = gd
    cdef floating* gf = gd + H
    cdef floating* gg = gd + 2 * H
    cdef floating i, f, g
    # d_i = dc_t * g * i * (1 - i);  d_g = dc_t * i * (1 - g**2)
    for j in range(H):
        i = gi[j]
        g = gg[j]
        gi[j] = dc[j] * g * sigmoid_grad(i)
        gg[j] = dc[j] * i * tanh_grad(g)
    # d_f = dc_t * c_prev * f * (1 - f), with c_prev = 0 at the first step;
    # dc_prev = dc_t * f
    if cell_prev != NULL:
        for j in range(H):
            f = gf[j]
            gf[j] = dc[j] * cell_prev[j] * sigmoid_grad(f)
            dc[j] = dc[j] * f
    else:
        for j in range(H):
            dc[j] = dc[j] * gf[j]
        memset(gf, 0, H * sizeof(floating))


cdef inline void _cell_backward(
    Py_ssize_t H,
    floating* gd,             # (4H,) in: activated i|f|g|o of this row and
                              #   step; out: dL/d(pre-activation gates)
    const floating* cell,     # (H,) c_t
    const floating* cell_prev,  # (H,) c_prev; NULL at the first step (zero)
    const floating* dhidden,  # (H,) dL/dh_t from above, or NULL (none)
    const floating* dhidden2,  # (H,) more of it, added to dhidden (the two
                               #   directions of a layer above), or NULL
    const floating* dh_rec,   # (H,) dL/dh_t through the next processed step
    floating* dc,             # (H,) in: dL/dc_t via c_next; out: dL/dc_prev
) noexcept nogil:
    """One row of one step of BPTT (no projection): the gate gradients, in
    place of the gates (which nothing reads after this step).

    dc carries dL/dc_t from the first loop to the others.
    """
    cdef Py_ssize_t j
    cdef floating* go = gd + 3 * H
    cdef floating o, tanh_c, dh
    # dh = dhidden + dh_rec;  d_o = dh * tanh(c) * o * (1 - o)
    # dc_t = dc + dh * o * (1 - tanh(c)**2)
    if dhidden2 != NULL:
        # dhidden + dhidden2 rounded first: the sum that a dhidden array
        # holding it would have, bit for bit
        for j in range(H):
            o = go[j]
            tanh_c = tanh(cell[j])
            dh = (dhidden[j] + dhidden2[j]) + dh_rec[j]
            go[j] = dh * tanh_c * sigmoid_grad(o)
            dc[j] = dc[j] + dh * o * tanh_grad(tanh_c)
    elif dhidden != NULL:
        for j in range(H):
            o = go[j]
            tanh_c = tanh(cell[j])
            dh = dhidden[j] + dh_rec[j]
            go[j] = dh * tanh_c * sigmoid_grad(o)
            dc[j] = dc[j] + dh * o * tanh_grad(tanh_c)
    else:  # the same loop with dh = dh_rec (one stream less to read)
        for j in range(H):
            o = go[j]
            tanh_c = tanh(cell[j])
            dh = dh_rec[j]
            go[j] = dh * tanh_c * sigmoid_grad(o)
            dc[j] = dc[j] + dh * o * tanh_grad(tanh_c)
    _cell_backward_dc(H, gd, cell_prev, dc)


cdef inline void _cell_backward_projected(
    Py_ssize_t H,
    floating* gd,             # (4H,) in: activated i|f|g|o of this row and
                              #   step; out: dL/d(pre-activation gates)
    const floating* cell,     # (H,) c_t
    const floating* cell_prev,  # (H,) c_prev; NULL at the first step (zero)
    const floating* dm,       # (H,) dL/dm_t = (dhidden + dh_rec) @ W_hr
    floating* m,              # (H,) out: m_t = o * tanh(c_t), as forward had it
    floating* dc,             # (H,) in: dL/dc_t via c_next; out: dL/dc_prev
) noexcept nogil:
    """One row of one step of BPTT with a projection: the gate gradients
    from dL/dm_t, in place of the gates, and m_t again (for dW_hr)."""
    cdef Py_ssize_t j
    cdef floating* go = gd + 3 * H
    cdef floating o, tanh_c
    # m = o * tanh(c);  d_o = dm * tanh(c) * o * (1 - o)
    # dc_t = dc + dm * o * (1 - tanh(c)**2)
    for j in range(H):
        o = go[j]
        tanh_c = tanh(cell[j])
        m[j] = o * tanh_c
        go[j] = dm[j] * tanh_c * sigmoid_grad(o)
        dc[j] = dc[j] + dm[j] * o * tanh_grad(tanh_c)
    _cell_backward_dc(H, gd, cell_prev, dc)


cdef inline void _zero_padding_rows(
    floating* seq, Py_ssize_t s, Py_ssize_t B, Py_ssize_t b0, Py_ssize_t b1,
    Py_ssize_t n_s, Py_ssize_t width, Py_ssize_t ld,
) noexcept nogil:
    """``seq[s, max(b0, n_s):b1] = 0``: this block's padding rows of time s
    in a (T, B, width) sequence whose rows are ``ld`` elements apart."""
    cdef Py_ssize_t lo = max(b0, n_s), b
    if lo >= b1:
        return
    if ld == width:
        memset(seq + (s * B + lo) * width, 0, (b1 - lo) * width * sizeof(floating))
    else:
        for b in range(lo, b1):
            memset(seq + (s * B + b) * ld, 0, width * sizeof(floating))


cdef inline void _small_gemm(
    bint trans_a, int m, int n, int k, const floating* A, int lda,
    const floating* Bm, int ldb, bint accumulate, floating* C, int ldc,
) noexcept nogil:
    """``C (m, n) = op(A) @ B (+ C)``, row-major; ``op(A)`` is ``A`` (m, k)
    or, with ``trans_a``, ``A.T`` for ``A`` (k, m).

    The per-step products, and (``trans_a``) the weight gradients of a
    chunk of steps, ``dW_hh += dgates.T @ h``. Small B: sklstm's own kernel
    (``_small_gemm.h``), which does not repack its operands on every call
    as BLAS does, and whose results do not depend on how the rows are cut
    (chunked weight gradients, W2 backward on 2 threads: 1.55 -> 1.33 ms;
    with OPENBLAS_CORETYPE=Haswell 1.7-2.3 -> 1.52 ms). A transposed product
    with B narrower than one vector of the build (dW_ih at I < 8 floats with
    AVX2, < 16 with AVX-512) would run the kernel's scalar column loop:
    BLAS. Large B: BLAS.
    """
    if (<Py_ssize_t> k * n * sizeof(floating) <= SMALL_B_BYTES
            and (not trans_a or n * sizeof(floating) >= SK_VBYTES)):
        if floating is float:
            if trans_a:
                sklstm_small_gemm_tn_f(m, n, k, A, lda, Bm, ldb, accumulate,
                                       C, ldc)
            else:
                sklstm_small_gemm_f(m, n, k, A, lda, Bm, ldb, accumulate,
                                    C, ldc)
        elif trans_a:
            sklstm_small_gemm_tn_d(m, n, k, A, lda, Bm, ldb, accumulate, C, ldc)
        else:
            sklstm_small_gemm_d(m, n, k, A, lda, Bm, ldb, accumulate, C, ldc)
    else:
        gemm(trans_a, False, m, n, k, <floating> 1, A, lda, Bm, ldb,
             <floating> (1 if accumulate else 0), C, ldc)


cdef inline bint _packs_b(Py_ssize_t rows, Py_ssize_t k, Py_ssize_t n,
                          Py_ssize_t itemsize) noexcept nogil:
    """Whether a call's per-step products ``(rows, k) @ B (k, n)`` run on
    packed panels of B (see SKLSTM_PACKED_MAX_ROWS); ``rows`` is the most
    rows a piece has."""
    return k * n * itemsize <= SMALL_B_BYTES or rows < SKLSTM_PACKED_MAX_ROWS


cdef inline void _pack_b(
    int k_total, int n, int p0, int p1, const floating* src,
    Py_ssize_t row_stride, Py_ssize_t col_stride, floating* Bp,
) noexcept nogil:
    """Rows [p0, p1) of B (k_total, n) into its packed panels ``Bp``, B's
    element (p, j) read at ``src[(p - p0) * row_stride + j * col_stride]``
    (so W_hh packs as W_hh.T with strides (1, P), with no transpose first).
    """
    if floating is float:
        sklstm_packed_gemm_f_pack(k_total, n, p0, p1, src, row_stride,
                                  col_stride, Bp)
    else:
        sklstm_packed_gemm_d_pack(k_total, n, p0, p1, src, row_stride,
                                  col_stride, Bp)


cdef inline void _packed_gemm(
    int m, int n, int k, const floating* A, int lda, const floating* Bp,
    bint accumulate, floating* C, int ldc,
) noexcept nogil:
    """``C (m, n) = A @ B (+ C)`` with B given as packed panels (_pack_b):
    the sums of ``_small_gemm``'s kernel, bit for bit."""
    if floating is float:
        sklstm_packed_gemm_f(m, n, k, A, lda, Bp, accumulate, C, ldc)
    else:
        sklstm_packed_gemm_d(m, n, k, A, lda, Bp, accumulate, C, ldc)


cdef inline bint _own_weight_grad(Py_ssize_t G, Py_ssize_t n,
                                  Py_ssize_t itemsize) noexcept nogil:
    """Whether a weight gradient (G, n) after the loop is computed by
    sklstm's kernel (_own_weight_grads) rather than by BLAS: while it fits
    in 128 KiB. Larger (W3's dW_hh, 1 MiB), OpenBLAS's kernel was ahead. The
    test reads the whole gradient, not one thread's gate units, so it does
    not depend on the number of pieces."""
    return G * n * itemsize <= SMALL_B_BYTES


cdef inline Py_ssize_t _weight_grad_part_size(
    Py_ssize_t G, Py_ssize_t n_in, Py_ssize_t P, Py_ssize_t pieces,
    Py_ssize_t itemsize,
) noexcept nogil:
    """Elements of the workspace of one piece of _own_weight_grads: a block
    of packed dgates rows, and the transposed dW_ih and dW_hh of the
    piece's gate units, each only if small enough to be computed there (so
    that many input features do not ask for a workspace left unused)."""
    cdef Py_ssize_t n_gates = _chunk(G, pieces, 1, 16)  # the largest piece
    return n_gates * (SK_WG_ROWS
                      + (n_in if _own_weight_grad(G, n_in, itemsize) else 0)
                      + (P if _own_weight_grad(G, P, itemsize) else 0))


def weight_grad_workspace_size(Py_ssize_t G, Py_ssize_t n_in, Py_ssize_t P,
                               Py_ssize_t n_parts, Py_ssize_t itemsize):
    """Length of the ``weight_grad_work`` workspace of :func:`lstm_backward`
    cut in ``n_parts`` pieces (``G = 4H`` gate units, ``n_in`` inputs, ``P``
    the width of ``h``, ``itemsize`` bytes per element): room for the
    pieces of the weight gradients after the loop, or for the row blocks'
    sums (_backward_block), whichever is more."""
    n_parts = max(1, n_parts)
    cdef Py_ssize_t size = n_parts * _weight_grad_part_size(G, n_in, P, n_parts,
                                                            itemsize)
    if n_parts > 1 and _row_grads_fit(G, n_in, P, itemsize):
        size = max(size, n_parts * _row_grads_size(G, n_in, P))
    return size


def uses_own_weight_grads(Py_ssize_t G, Py_ssize_t n_in, Py_ssize_t P,
                          Py_ssize_t itemsize):
    """Whether :func:`lstm_backward` of this build, left to choose
    (``own_weight_grads=-1``), computes a weight gradient of a layer with
    these sizes in sklstm's kernel, given the workspace."""
    return SKLSTM_OWN_WEIGHT_GRADS and (_own_weight_grad(G, n_in, itemsize)
                                        or _own_weight_grad(G, P, itemsize))


cdef inline void _wg_pack(int kb, int m, const floating* D, Py_ssize_t ldd,
                          floating* Dp, floating* colsum) noexcept nogil:
    if floating is float:
        sklstm_weight_grad_f_pack(kb, m, D, ldd, Dp, colsum)
    else:
        sklstm_weight_grad_d_pack(kb, m, D, ldd, Dp, colsum)


cdef inline void _wg_block(int n, int m_g, int kb, const floating* Y, int ldy,
                           const floating* Dp, bint accumulate,
                           floating* Ct) noexcept nogil:
    if floating is float:
        sklstm_weight_grad_f_block(n, m_g, kb, Y, ldy, Dp, accumulate, Ct)
    else:
        sklstm_weight_grad_d_block(n, m_g, kb, Y, ldy, Dp, accumulate, Ct)


cdef inline void _wg_store(int m, int n, const floating* Ct, floating* dW,
                           int ldw) noexcept nogil:
    if floating is float:
        sklstm_weight_grad_f_store(m, n, Ct, dW, ldw)
    else:
        sklstm_weight_grad_d_store(m, n, Ct, dW, ldw)


cdef void _own_weight_grads(
    Py_ssize_t g0, Py_ssize_t ng, Py_ssize_t T, Py_ssize_t B, Py_ssize_t G,
    Py_ssize_t P, Py_ssize_t n_in, bint reverse, bint do_ih, bint do_hh,
    const floating* X_p, const floating* hidden_p, Py_ssize_t ldh,
    const floating* dgates_p, floating* dW_ih_p, floating* dW_hh_p,
    floating* dbias_p, floating* work,
) noexcept nogil:
    """Gate units [g0, g0 + ng) of dbias, and of dW_ih (``do_ih``) and dW_hh
    (``do_hh``), in one pass over dgates in blocks of SK_WG_ROWS rows (see
    SK_DEFINE_WEIGHT_GRAD): each block is packed once (its rows added to
    dbias as it is) and serves both products. ``work`` holds
    _weight_grad_part_size elements.

    As in _weight_grads, dW_hh pairs the dgates row of time t with h of
    time t - 1 (forward) or t + 1 (reverse), so the B rows of time 0
    (forward) or T - 1 (reverse), which meet the zero initial state, are
    left out of it; blocks are cut so that each is wholly in or out.
    dgates is zero on padding rows, so dbias may sum them all.
    """
    cdef Py_ssize_t rows = T * B, p0 = 0, p1
    cdef Py_ssize_t hh_lo = 0 if reverse else B
    cdef Py_ssize_t hh_hi = rows - B if reverse else rows
    cdef Py_ssize_t shift = B if reverse else -B  # h row - dgates row
    # The layout of _weight_grad_part_size.
    cdef floating* Dp = work
    cdef floating* Ct_ih = work + SK_WG_ROWS * ng
    cdef floating* Ct_hh = Ct_ih + (
        n_in * ng if _own_weight_grad(G, n_in, sizeof(floating)) else 0)
    cdef bint first_ih = True, first_hh = True
    memset(dbias_p + g0, 0, ng * sizeof(floating))
    while p0 < rows:
        p1 = min(p0 + SK_WG_ROWS, rows)
        if p0 < hh_lo:
            p1 = min(p1, hh_lo)
        elif p0 < hh_hi:
            p1 = min(p1, hh_hi)
        _wg_pack(<int> (p1 - p0), <int> ng, dgates_p + p0 * G + g0, G, Dp,
                 dbias_p + g0)
        if do_ih:
            _wg_block(<int> n_in, <int> ng, <int> (p1 - p0), X_p + p0 * n_in,
                      <int> n_in, Dp, not first_ih, Ct_ih)
            first_ih = False
        if do_hh and hh_lo <= p0 < hh_hi:
            _wg_block(<int> P, <int> ng, <int> (p1 - p0),
                      hidden_p + (p0 + shift) * ldh, <int> ldh, Dp, not first_hh,
                      Ct_hh)
            first_hh = False
        p0 = p1
    if do_ih:
        _wg_store(<int> ng, <int> n_in, Ct_ih, dW_ih_p + g0 * n_in, <int> n_in)
    if do_hh:
        _wg_store(<int> ng, <int> P, Ct_hh, dW_hh_p + g0 * P, <int> P)


cdef inline void _recurrent_gemm(
    int m, Py_ssize_t G, Py_ssize_t P, const floating* h,
    const floating* W_hh, const floating* W_hh_t, bint packed, floating* out,
) noexcept nogil:
    """``out (m, 4H) = h (m, P) @ W_hh.T``, the step's GEMM.

    ``W_hh_t`` holds W_hh.T (P, 4H), made once per call: as packed panels
    (``packed``) for sklstm's kernel, else as a plain matrix, so that BLAS
    computes a plain NN product (packing W_hh.T on every step, sgemm_otcopy,
    was 10 % of a W2 epoch on 2 threads).
    """
    if packed:
        _packed_gemm(m, <int> G, <int> P, h, <int> P, W_hh_t, False, out,
                     <int> G)
    elif W_hh_t != NULL:
        gemm(False, False, m, <int> G, <int> P, <floating> 1, h, <int> P,
             W_hh_t, <int> G, <floating> 0, out, <int> G)
    else:
        gemm(False, True, m, <int> G, <int> P, <floating> 1, h, <int> P,
             W_hh, <int> P, <floating> 0, out, <int> G)


cdef void _forward_rows(
    Py_ssize_t b0, Py_ssize_t b1,   # this thread's rows [b0, b1)
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t P,
    const Py_ssize_t* len_p, const floating* W_hh_p, const floating* W_hh_t_p,
    bint packed, const floating* W_hr_p,
    const floating* bias_p, bint reverse, bint training, bint store_hidden,
    floating* gates_p, floating* cells_p, floating* hidden_p, Py_ssize_t ldh,
    floating* h_p, floating* c_p, floating* step_p, floating* m_p,
) noexcept nogil:
    """The recurrence of rows [b0, b1) over all steps (see lstm_forward).

    Rows are independent, so each thread runs its own block of rows with no
    synchronisation per step; every buffer it writes is indexed by row.
    With a projection (W_hr_p not NULL) the cell writes m_t into m_p and one
    GEMM per step projects the active rows into h_p.
    """
    cdef Py_ssize_t G = 4 * H, s, b, t, row, n_s, hi
    cdef bint project = W_hr_p != NULL
    # Where the cell output o * tanh(c_t) goes: h itself, or m to project.
    cdef floating* out_p = m_p if project else h_p
    cdef floating* rec_p
    memset(h_p + b0 * P, 0, (b1 - b0) * P * sizeof(floating))
    memset(c_p + b0 * H, 0, (b1 - b0) * H * sizeof(floating))
    for s in range(T):
        n_s = _n_active(len_p, B, s)
        hi = min(b1, n_s)
        if store_hidden:
            _zero_padding_rows(hidden_p, s, B, b0, b1, n_s, P, ldh)
        if hi <= b0:
            continue
        if s == 0:
            rec_p = NULL  # h_prev is zero: the gates hold x_t @ W_ih.T alone
        else:
            # step_gates[b0:hi] = h_state[b0:hi] @ W_hh.T, and the cell adds
            # it to the gates. Accumulating it into the gates instead (beta
            # = 1, no step buffer) made the product's tiles read and write
            # rows of the (T, B, 4H) gates array, mostly out of cache: the
            # forward kernel on 2 threads went 60 -> 52 ms at T=100, B=128,
            # H=256, 10.2 -> 8.1 ms at T=50, B=128, H=128, 124 -> 116 us at
            # W1, with the same results bit for bit.
            _recurrent_gemm(<int> (hi - b0), G, P, h_p + b0 * P, W_hh_p,
                            W_hh_t_p, packed, step_p + b0 * G)
            rec_p = step_p
        for b in range(b0, hi):
            t = len_p[b] - 1 - s if reverse else s
            row = t * B + b
            _cell_forward(H, gates_p + row * G,
                          rec_p + b * G if rec_p != NULL else NULL, bias_p,
                          c_p + b * H, out_p + b * H)
            if training:
                memcpy(cells_p + row * H, c_p + b * H, H * sizeof(floating))
            if store_hidden and not project:
                memcpy(hidden_p + row * ldh, h_p + b * H, H * sizeof(floating))
        if project:
            # h_state[b0:hi] = m_step[b0:hi] @ W_hr.T
            gemm(False, True, <int> (hi - b0), <int> P, <int> H,
                 <floating> 1, m_p + b0 * H, <int> H, W_hr_p, <int> H,
                 <floating> 0, h_p + b0 * P, <int> P)
            if store_hidden:
                for b in range(b0, hi):
                    t = len_p[b] - 1 - s if reverse else s
                    memcpy(hidden_p + (t * B + b) * ldh, h_p + b * P,
                           P * sizeof(floating))


cdef void _fused_rows(
    Py_ssize_t b0, Py_ssize_t b1,   # this thread's rows [b0, b1)
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_in,
    const Py_ssize_t* len_p, const floating* X_p, const floating* W_cat_t_p,
    bint packed, const floating* bias_p, bint reverse, bint store_hidden,
    floating* hidden_p, Py_ssize_t ldh, floating* h_p, floating* c_p,
    floating* step_p, floating* xh_p, floating* gates_p, floating* cells_p,
) noexcept nogil:
    """The recurrence over rows [b0, b1), one GEMM per step (no projection).

    Row b of ``xh`` (B, I + H) holds ``[x_t | h_prev]``: the step copies
    x_t in, one GEMM ``xh @ [W_ih | W_hh].T`` gives the gates, and the
    cell writes h_t back in place. The input projection is thus done step
    by step, on rows that are still in cache, and at inference nothing of
    size T * B * 4H exists, so a predict batch is bounded by the hidden
    sequences alone.

    Training (``gates_p`` not NULL) keeps each row's activated gates, c_t
    and h_t for backward, written where backward reads them: the GEMM
    writes a step's gates into their rows of ``gates`` whenever these are
    consecutive there (always going forward, where every row is at time s;
    going backward when the step's rows have one length), the cell
    activates them in place, and takes c_prev from ``cells``. Copying them
    there from a step buffer and a state row took 4-11 % of the forward
    kernel at W1 and W2 of the benchmark.
    """
    cdef Py_ssize_t G = 4 * H, K = n_in + H, s, b, t, n_s, hi
    cdef bint training = gates_p != NULL, direct
    cdef floating* out
    cdef floating* h_row
    cdef const floating* c_prev
    for b in range(b0, b1):
        memset(xh_p + b * K + n_in, 0, H * sizeof(floating))
    memset(c_p + b0 * H, 0, (b1 - b0) * H * sizeof(floating))
    for s in range(T):
        n_s = _n_active(len_p, B, s)
        hi = min(b1, n_s)
        if store_hidden:
            _zero_padding_rows(hidden_p, s, B, b0, b1, n_s, H, ldh)
        if hi <= b0:
            continue
        for b in range(b0, hi):
            t = len_p[b] - 1 - s if reverse else s
            memcpy(xh_p + b * K, X_p + (t * B + b) * n_in,
                   n_in * sizeof(floating))
        # The step's gates of rows [b0, hi): into `gates` directly, or into
        # the step buffer (inference, or reverse rows of several lengths).
        direct = training and (not reverse or len_p[b0] == len_p[hi - 1])
        if direct:
            t = len_p[b0] - 1 - s if reverse else s
            out = gates_p + (t * B + b0) * G
        else:
            out = step_p + b0 * G
        # out[b0:hi] = xh[b0:hi] @ W_cat_t (packed panels, or plain)
        if packed:
            _packed_gemm(<int> (hi - b0), <int> G, <int> K, xh_p + b0 * K,
                         <int> K, W_cat_t_p, False, out, <int> G)
        else:
            gemm(False, False, <int> (hi - b0), <int> G, <int> K,
                 <floating> 1, xh_p + b0 * K, <int> K, W_cat_t_p, <int> G,
                 <floating> 0, out, <int> G)
        for b in range(b0, hi):
            t = len_p[b] - 1 - s if reverse else s
            h_row = xh_p + b * K + n_in
            if not training:
                _cell_forward(H, out + (b - b0) * G, NULL, bias_p,
                              c_p + b * H, h_row)
                if store_hidden:
                    memcpy(hidden_p + (t * B + b) * ldh, h_row,
                           H * sizeof(floating))
                continue
            # c_prev: this row's c of the step before (time t - 1 forward,
            # t + 1 reverse), or the zero state at its first step
            if s == 0:
                c_prev = c_p + b * H
            else:
                c_prev = cells_p + ((t + 1 if reverse else t - 1) * B + b) * H
            _cell_forward_stored(H, out + (b - b0) * G, bias_p, c_prev,
                                 cells_p + (t * B + b) * H, h_row,
                                 hidden_p + (t * B + b) * ldh)
            if not direct:
                memcpy(gates_p + (t * B + b) * G, out + (b - b0) * G,
                       G * sizeof(floating))
    # h_n, c_n: each row's h and c after its last step (training kept c in
    # `cells` only: at time len - 1 forward, 0 reverse; an empty sequence
    # keeps the zero state)
    for b in range(b0, b1):
        memcpy(h_p + b * H, xh_p + b * K + n_in, H * sizeof(floating))
        if training and len_p[b] > 0:
            t = 0 if reverse else len_p[b] - 1
            memcpy(c_p + b * H, cells_p + (t * B + b) * H,
                   H * sizeof(floating))


cdef void _backward_rows(
    Py_ssize_t b0, Py_ssize_t b1,   # this thread's rows [b0, b1)
    Py_ssize_t s0, Py_ssize_t s1,   # steps [s0, s1), run from s1 - 1 down
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t P,
    const Py_ssize_t* len_p, const floating* W_hh_p,
    const floating* W_hh_packed_p, const floating* W_hr_p,
    bint reverse, const floating* gates_p, const floating* cells_p,
    const floating* dhidden_p, const floating* dhidden2_p, Py_ssize_t ldd,
    const floating* dh_n_p, floating* dgates_p,
    floating* dstep_p, floating* dh_p, floating* dc_p,
    floating* dh_seq_p, floating* m_seq_p, floating* dh_step_p,
    floating* dm_p,
) noexcept nogil:
    """BPTT of rows [b0, b1) over steps [s0, s1) (see lstm_backward).

    A call with s1 < T continues the previous call (steps [s1, ...)) from
    the state it left in dh_p and dc_p. dhidden_p may be NULL (no gradient
    from above at any step), dh_n_p too (none on h_n); dhidden2_p, when not
    NULL, is added to dhidden_p (rows of both are ``ldd`` elements apart).

    With a projection (W_hr_p not NULL), per step the total dh of the active
    rows goes to dh_step (and dh_seq, time-ordered), one GEMM gives
    dm = dh @ W_hr, and the cell backward also writes m_t to m_seq.
    """
    cdef Py_ssize_t G = 4 * H, s, b, t, row, n_s, hi, j, pad0
    cdef Py_ssize_t ahead, s_ahead, row_ahead, hi_next
    cdef bint fetch_ahead = T * B * G * sizeof(floating) > PREFETCH_MIN_BYTES
    cdef bint project = W_hr_p != NULL
    # Row offset from time t to the previously processed time (t -+ 1).
    cdef Py_ssize_t prev_offset = B if reverse else -B
    cdef const floating* step_rows
    cdef const floating* cell_prev
    if s1 == T:
        # The gradient through the recurrence starts as dL/dh_n: it reaches
        # each row at its first step here (its last in time), because the
        # steps before write dh only for the rows they run. Without dh_n,
        # rows not running at step s+1 get no gradient from it.
        if dh_n_p != NULL:
            memcpy(dh_p + b0 * P, dh_n_p + b0 * P,
                   (b1 - b0) * P * sizeof(floating))
        else:
            memset(dh_p + b0 * P, 0, (b1 - b0) * P * sizeof(floating))
        memset(dc_p + b0 * H, 0, (b1 - b0) * H * sizeof(floating))
    for s in range(s1 - 1, s0 - 1, -1):
        n_s = _n_active(len_p, B, s)
        hi = min(b1, n_s)
        if hi < b1:
            # dgates[s, max(b0, n_s):b1] = 0  (padding rows of time s)
            pad0 = max(b0, n_s)
            memset(dgates_p + (s * B + pad0) * G, 0,
                   (b1 - pad0) * G * sizeof(floating))
            if project:
                # dh_seq[s, pad0:b1] = 0; m_seq[s, pad0:b1] = 0 (dW_hr's GEMM)
                memset(dh_seq_p + (s * B + pad0) * P, 0,
                       (b1 - pad0) * P * sizeof(floating))
                memset(m_seq_p + (s * B + pad0) * H, 0,
                       (b1 - pad0) * H * sizeof(floating))
        if hi <= b0:
            continue
        if project:
            for b in range(b0, hi):
                t = len_p[b] - 1 - s if reverse else s
                row = t * B + b
                # dh = dhidden[t, b] + dh_rec[b]
                if dhidden2_p != NULL:
                    for j in range(P):
                        dh_step_p[b * P + j] = ((dhidden_p[row * ldd + j]
                                                 + dhidden2_p[row * ldd + j])
                                                + dh_p[b * P + j])
                elif dhidden_p != NULL:
                    for j in range(P):
                        dh_step_p[b * P + j] = (dhidden_p[row * ldd + j]
                                                + dh_p[b * P + j])
                else:
                    memcpy(dh_step_p + b * P, dh_p + b * P, P * sizeof(floating))
                memcpy(dh_seq_p + row * P, dh_step_p + b * P, P * sizeof(floating))
            # dm_step[b0:hi] = dh_step[b0:hi] @ W_hr
            gemm(False, False, <int> (hi - b0), <int> H, <int> P,
                 <floating> 1, dh_step_p + b0 * P, <int> P, W_hr_p, <int> H,
                 <floating> 0, dm_p + b0 * H, <int> H)
        # The rows after this step's: the next step's first rows.
        hi_next = (min(b1, _n_active(len_p, B, s - 1)) if fetch_ahead and s > 0
                   else b0)
        for b in range(b0, hi):
            t = len_p[b] - 1 - s if reverse else s
            row = t * B + b
            cell_prev = cells_p + (row + prev_offset) * H if s > 0 else NULL
            # Fetch ahead what the cell backward of the row
            # PREFETCH_ROWS_AHEAD rows on reads first (at this step, or the
            # next step's first rows): its gates, c_t and c_prev, written
            # by the forward pass and long out of cache. The cell's loops
            # read the gate blocks out of order (o, then i and g, then f),
            # which the hardware prefetchers do not follow; perf put 60 % of
            # W3's cell backward on the first loads of c_t and of the i and
            # g blocks. Backward calls against no prefetch, alternating in
            # one process (Zen 4, benchmarks/ab_kernels.py), on 2 threads:
            # W2 0.94-0.98x, W3 0.98-0.99x, W4's layers 0.97-0.99x; on one
            # thread 0.93-0.95x at W2 and W4's forward directions. Written
            # out here: through an inline helper taking the row's step and
            # index, W2's came out 7-10 % slower on one thread than this,
            # for the same prefetches.
            ahead = b + PREFETCH_ROWS_AHEAD
            s_ahead = s
            if ahead >= hi:
                ahead = b0 + ahead - hi
                s_ahead = s - 1
            if fetch_ahead and (s_ahead == s or ahead < hi_next):
                row_ahead = (len_p[ahead] - 1 - s_ahead if reverse
                             else s_ahead) * B + ahead
                sklstm_prefetch_span(gates_p + row_ahead * G,
                                     G * sizeof(floating))
                sklstm_prefetch_span(cells_p + row_ahead * H,
                                     H * sizeof(floating))
                if s_ahead > 0:
                    sklstm_prefetch_span(cells_p + (row_ahead + prev_offset) * H,
                                         H * sizeof(floating))
            # The cell backward works in place: on the gates themselves
            # when dgates is the gates array, else on a copy of them.
            if dgates_p != gates_p:
                memcpy(dgates_p + row * G, gates_p + row * G,
                       G * sizeof(floating))
            if project:
                _cell_backward_projected(
                    H, dgates_p + row * G, cells_p + row * H, cell_prev,
                    dm_p + b * H, m_seq_p + row * H, dc_p + b * H,
                )
            else:
                _cell_backward(
                    H, dgates_p + row * G, cells_p + row * H, cell_prev,
                    dhidden_p + row * ldd if dhidden_p != NULL else NULL,
                    dhidden2_p + row * ldd if dhidden2_p != NULL else NULL,
                    dh_p + b * H, dc_p + b * H,
                )
            if reverse:
                memcpy(dstep_p + b * G, dgates_p + row * G, G * sizeof(floating))
        if s > 0:
            # This step's dgates rows, contiguous: dgates[s, b0:hi] forward,
            # the step buffer reverse.
            step_rows = dstep_p if reverse else dgates_p + s * B * G
            # dh_rec[b0:hi] = dgates_step[b0:hi] @ W_hh
            if W_hh_packed_p != NULL:
                _packed_gemm(<int> (hi - b0), <int> P, <int> G,
                             step_rows + b0 * G, <int> G, W_hh_packed_p, False,
                             dh_p + b0 * P, <int> P)
            else:
                _small_gemm(False, <int> (hi - b0), <int> P, <int> G,
                            step_rows + b0 * G, <int> G, W_hh_p, <int> P,
                            False, dh_p + b0 * P, <int> P)


cdef inline void _add_column_sums(
    Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t B, Py_ssize_t G,
    Py_ssize_t g0, Py_ssize_t g1, const Py_ssize_t* len_p,
    const floating* dgates_p, floating* dbias_p,
) noexcept nogil:
    """``dbias[g0:g1] += dgates[t0:t1, :, g0:g1]`` summed over the valid
    rows of each time, in time and row order."""
    cdef Py_ssize_t t, row, j
    cdef const floating* drow
    for t in range(t0, t1):
        for row in range(t * B, t * B + _n_active(len_p, B, t)):
            drow = dgates_p + row * G
            for j in range(g0, g1):
                dbias_p[j] += drow[j]


cdef void _weight_grads(
    Py_ssize_t part, Py_ssize_t n_parts,
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t P, Py_ssize_t n_in,
    const Py_ssize_t* len_p, const floating* X_p, const floating* W_ih_p,
    bint reverse, bint finite_padding, const floating* hidden_p,
    Py_ssize_t ldh, const floating* dgates_p, floating* dX_p, floating* dW_ih_p,
    floating* dW_hh_p, floating* dbias_p,
    const floating* dh_seq_p, const floating* m_seq_p, floating* dW_hr_p,
    bint own_ih, bint own_hh, floating* work_p,
) noexcept nogil:
    """Piece ``part`` of the gradients computed after the BPTT loop.

    Piece k has rows [r0, r1) of dX (and, with a projection, of dW_hr) and
    gate units [g0, g1) of dW_ih, dW_hh and dbias; each is one
    single-threaded BLAS call per array, and the pieces write disjoint
    memory, so a prange over ``part`` needs no lock. With ``own_ih`` or
    ``own_hh``, _own_weight_grads computes dbias and that weight gradient
    in its one pass over dgates, in its piece of ``work_p``.
    """
    cdef Py_ssize_t G = 4 * H, t, n_s
    cdef Py_ssize_t g0 = _chunk(G, n_parts, part, 16)
    cdef Py_ssize_t g1 = _chunk(G, n_parts, part + 1, 16)
    cdef Py_ssize_t ng = g1 - g0

    # dX.reshape(T*B, I) = dgates.reshape(T*B, 4H) @ W_ih
    _input_grad_part(part, n_parts, <int> (T * B), <int> n_in, <int> G,
                     dgates_p, W_ih_p, dX_p)
    if dW_hr_p != NULL:
        # dW_hr = dh_seq.reshape(T*B, P).T @ m_seq.reshape(T*B, H); both are
        # zero on padding rows
        _gemm_part(part, n_parts, True, False, <int> P, <int> H,
                   <int> (T * B), <floating> 1, dh_seq_p, <int> P, m_seq_p,
                   <int> H, <floating> 0, dW_hr_p, <int> H)
    if ng <= 0:
        return
    if own_ih or own_hh:
        _own_weight_grads(g0, ng, T, B, G, P, n_in, reverse, own_ih, own_hh,
                          X_p, hidden_p, ldh, dgates_p, dW_ih_p, dW_hh_p,
                          dbias_p,
                          work_p + part * _weight_grad_part_size(
                              G, n_in, P, n_parts, sizeof(floating)))

    if not own_ih:
        if finite_padding:
            # dW_ih[g0:g1] = dgates.reshape(T*B, 4H)[:, g0:g1].T @ X.reshape(T*B, I)
            _small_gemm(True, <int> ng, <int> n_in, <int> (T * B),
                        dgates_p + g0, <int> G, X_p, <int> n_in, False,
                        dW_ih_p + g0 * n_in, <int> n_in)
        else:
            # Non-finite padding in X would turn 0 * X into NaN: sum over the
            # valid rows only, one time at a time.
            memset(dW_ih_p + g0 * n_in, 0, ng * n_in * sizeof(floating))
            for t in range(T):
                n_s = _n_active(len_p, B, t)
                if n_s > 0:
                    # dW_ih[g0:g1] += dgates[t, :n_t, g0:g1].T @ X[t, :n_t]
                    gemm(True, False, <int> ng, <int> n_in, <int> n_s,
                         <floating> 1, dgates_p + t * B * G + g0, <int> G,
                         X_p + t * B * n_in, <int> n_in,
                         <floating> 1, dW_ih_p + g0 * n_in, <int> n_in)

    # h_prev of the row at time t is hidden[t-1] forward, hidden[t+1]
    # reverse, and zero at each sequence's first processed step. Pairing
    # whole shifted time slices is exact: dgates is zero on padding rows,
    # and the one valid row paired with a padding row (a reverse
    # sequence's first step, t = lengths[b]-1, with hidden[t+1] padding)
    # meets hidden = 0, its zero initial state.
    if not own_hh:
        if T == 1:
            memset(dW_hh_p + g0 * P, 0, ng * P * sizeof(floating))
        elif reverse:
            # dW_hh[g0:g1] = dgates[:-1].reshape(-1, 4H)[:, g0:g1].T
            #                @ hidden[1:].reshape(-1, P)
            gemm(True, False, <int> ng, <int> P, <int> ((T - 1) * B),
                 <floating> 1, dgates_p + g0, <int> G, hidden_p + B * ldh,
                 <int> ldh,
                 <floating> 0, dW_hh_p + g0 * P, <int> P)
        else:
            # dW_hh[g0:g1] = dgates[1:].reshape(-1, 4H)[:, g0:g1].T
            #                @ hidden[:-1].reshape(-1, P)
            gemm(True, False, <int> ng, <int> P, <int> ((T - 1) * B),
                 <floating> 1, dgates_p + B * G + g0, <int> G, hidden_p,
                 <int> ldh,
                 <floating> 0, dW_hh_p + g0 * P, <int> P)

    # dbias[g0:g1] = dgates.reshape(T*B, 4H)[:, g0:g1].sum(axis=0), valid rows
    if not (own_ih or own_hh):
        memset(dbias_p + g0, 0, ng * sizeof(floating))
        _add_column_sums(0, T, B, G, g0, g1, len_p, dgates_p, dbias_p)


cdef void _weight_grads_times(
    Py_ssize_t part, Py_ssize_t n_parts,
    Py_ssize_t t0, Py_ssize_t t1, bint first,
    Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_in,
    const Py_ssize_t* len_p, const floating* X_p, const floating* W_ih_p,
    const floating* hidden_p, Py_ssize_t ldh, const floating* dgates_p,
    floating* dX_p, floating* dW_ih_p, floating* dW_hh_p, floating* dbias_p,
) noexcept nogil:
    """Times [t0, t1) of _weight_grads, piece ``part`` of ``n_parts``:
    forward direction, no projection, finite padding; accumulated into
    dW_ih, dW_hh and dbias unless ``first``.

    lstm_backward calls it on each chunk of steps right after the BPTT loop
    wrote the chunk's dgates rows, while they are still in cache: the
    post-loop GEMMs read all of dgates (T*B*4H, 3.2 MB at W2) from memory,
    and packing it transposed was 10 % of a W2 epoch. As in _weight_grads,
    piece k has rows [r0, r1) of the chunk's dX and gate units [g0, g1) of
    dW_ih, dW_hh and dbias.
    """
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t ta = max(t0, 1)
    cdef int rows = <int> ((t1 - t0) * B)
    cdef const floating* dg_p = dgates_p + t0 * B * G
    cdef Py_ssize_t g0 = _chunk(G, n_parts, part, 16)
    cdef Py_ssize_t g1 = _chunk(G, n_parts, part + 1, 16)
    cdef Py_ssize_t ng = g1 - g0
    # dX[t0:t1] = dgates[t0:t1] @ W_ih, if dX is wanted (a NULL dX_p must
    # stay NULL: offset, it would be written to)
    _input_grad_part(part, n_parts, rows, <int> n_in, <int> G, dg_p, W_ih_p,
                     dX_p + t0 * B * n_in if dX_p != NULL else NULL)
    if ng <= 0:
        return
    # dW_ih[g0:g1] (+)= dgates[t0:t1, :, g0:g1].T @ X[t0:t1]
    _small_gemm(True, <int> ng, <int> n_in, rows, dg_p + g0, <int> G,
                X_p + t0 * B * n_in, <int> n_in, not first,
                dW_ih_p + g0 * n_in, <int> n_in)
    # dW_hh[g0:g1] (+)= dgates[ta:t1, :, g0:g1].T @ hidden[ta-1:t1-1],
    # ta = max(t0, 1)
    if t1 > ta:
        _small_gemm(True, <int> ng, <int> H, <int> ((t1 - ta) * B),
                    dgates_p + ta * B * G + g0, <int> G,
                    hidden_p + (ta - 1) * B * ldh, <int> ldh, not first,
                    dW_hh_p + g0 * H, <int> H)
    elif first:
        memset(dW_hh_p + g0 * H, 0, ng * H * sizeof(floating))
    # dbias[g0:g1] (+)= column sums of dgates[t0:t1, :, g0:g1], valid rows
    if first:
        memset(dbias_p + g0, 0, ng * sizeof(floating))
    _add_column_sums(t0, t1, B, G, g0, g1, len_p, dgates_p, dbias_p)


cdef inline Py_ssize_t _row_grads_size(Py_ssize_t G, Py_ssize_t n_in,
                                       Py_ssize_t P) noexcept nogil:
    """Elements of one row block's weight-gradient sums (_backward_block):
    dW_hh (4H, P), the transposed dW_ih (I, 4H) and dbias (4H,), in this
    order."""
    return (n_in + P + 1) * G


cdef inline bint _row_grads_fit(Py_ssize_t G, Py_ssize_t n_in, Py_ssize_t P,
                                Py_ssize_t itemsize) noexcept nogil:
    """Whether a row block's sums are small enough for lstm_backward to
    sum the weight gradients by row blocks (_backward_block): they stay in
    L2 beside the chunk of dgates being summed. W1, W2 and W4 of the
    benchmark do (17, 73 and at most 193 KiB); W3 (1.2 MiB) does not."""
    return _row_grads_size(G, n_in, P) * itemsize <= ROW_GRADS_MAX_BYTES


cdef inline void _steps_tn(int m, int n, int n_steps, int n_rows,
                           const floating* A, int lda, Py_ssize_t sa,
                           const floating* Bm, int ldb, Py_ssize_t sb,
                           bint accumulate, floating* C, int ldc) noexcept nogil:
    """``C (m, n) (+)= sum over steps s and rows p of A[s, p].T B[s, p]``,
    rows ``lda`` (``ldb``) apart within a step and steps ``sa`` (``sb``)
    apart (``_small_gemm.h``, SK_DEFINE_STEPS_TN)."""
    if floating is float:
        sklstm_steps_tn_f(m, n, n_steps, n_rows, A, lda, sa, Bm, ldb, sb,
                          accumulate, C, ldc)
    else:
        sklstm_steps_tn_d(m, n, n_steps, n_rows, A, lda, sa, Bm, ldb, sb,
                          accumulate, C, ldc)


cdef void _weight_grads_rows(
    Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t t0, Py_ssize_t t1, bint first,
    Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_in, const Py_ssize_t* len_p,
    const floating* X_p, const floating* W_ih_p, const floating* hidden_p,
    Py_ssize_t ldh, const floating* dgates_p, floating* dX_p,
    floating* sums_p,
) noexcept nogil:
    """Times [t0, t1) of rows [b0, b1): their dX, and their terms of the
    weight gradients added (set, if ``first``) to this block's sums
    ``sums_p`` (see _row_grads_size): forward direction, no projection,
    finite padding, whose dgates are zero on padding rows."""
    cdef Py_ssize_t G = 4 * H, ta = max(t0, 1), t, row, j
    cdef int rows = <int> (b1 - b0)
    cdef floating* dW_hh = sums_p
    cdef floating* Ct_ih = sums_p + G * H
    cdef floating* db = Ct_ih + n_in * G
    cdef const floating* drow
    cdef bint few_inputs = <Py_ssize_t> G * n_in * sizeof(floating) <= L1_BYTES
    # dX[t, b0:b1] = dgates[t, b0:b1] @ W_ih: few inputs as _input_grad_part
    # computes them; more, W_ih read in place (or BLAS, past 128 KiB)
    if dX_p != NULL:
        for t in range(t0, t1):
            if few_inputs:
                _input_grad_part(0, 1, rows, <int> n_in, <int> G,
                                 dgates_p + (t * B + b0) * G, W_ih_p,
                                 dX_p + (t * B + b0) * n_in)
            else:
                _small_gemm(False, rows, <int> n_in, <int> G,
                            dgates_p + (t * B + b0) * G, <int> G, W_ih_p,
                            <int> n_in, False, dX_p + (t * B + b0) * n_in,
                            <int> n_in)
    # dW_ih.T (+)= X[t0:t1, b0:b1].T @ dgates[t0:t1, b0:b1]: transposed, so
    # that few inputs still fill whole vectors (of gate units)
    _steps_tn(<int> n_in, <int> G, <int> (t1 - t0), rows,
              X_p + (t0 * B + b0) * n_in, <int> n_in, B * n_in,
              dgates_p + (t0 * B + b0) * G, <int> G, B * G, not first,
              Ct_ih, <int> G)
    # dW_hh (+)= dgates[ta:t1, b0:b1].T @ hidden[ta-1:t1-1, b0:b1]
    if t1 > ta:
        _steps_tn(<int> G, <int> H, <int> (t1 - ta), rows,
                  dgates_p + (ta * B + b0) * G, <int> G, B * G,
                  hidden_p + ((ta - 1) * B + b0) * ldh, <int> ldh, B * ldh,
                  not first, dW_hh, <int> H)
    elif first:
        memset(dW_hh, 0, G * H * sizeof(floating))
    # dbias (+)= dgates[t, b0:b1] summed over the valid rows, in order
    if first:
        memset(db, 0, G * sizeof(floating))
    for t in range(t0, t1):
        for row in range(t * B + b0, t * B + min(b1, _n_active(len_p, B, t))):
            drow = dgates_p + row * G
            for j in range(G):
                db[j] += drow[j]


cdef void _backward_block(
    Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t chunk,
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_in,
    const Py_ssize_t* len_p, const floating* X_p, const floating* W_ih_p,
    const floating* W_hh_p, const floating* W_hh_packed_p,
    const floating* gates_p, const floating* cells_p,
    const floating* dhidden_p, const floating* dhidden2_p, Py_ssize_t ldd,
    const floating* dh_n_p, const floating* hidden_p, Py_ssize_t ldh,
    floating* dgates_p, floating* dstep_p, floating* dh_p, floating* dc_p,
    floating* dX_p, floating* sums_p,
) noexcept nogil:
    """The backward of rows [b0, b1), alone (forward direction, no
    projection, finite padding): BPTT ``chunk`` steps at a time, each chunk
    followed by its dX and its terms of the weight gradients of these rows
    (_weight_grads_rows), while its dgates are in this core's cache.

    Why by rows: cut by gate units (_weight_grads_times), each thread's
    weight gradients read the dgates rows the other threads had just
    written, from their caches, and every chunk took two parallel regions,
    the second waiting for all threads to finish the first. By rows, a
    thread reads only what it wrote, and waits once, for the sums of the
    blocks (_sum_row_grads)."""
    cdef Py_ssize_t hi = T, lo
    if b1 <= b0:
        memset(sums_p, 0, _row_grads_size(4 * H, n_in, H) * sizeof(floating))
        return
    while hi > 0:
        lo = max(0, hi - chunk)
        _backward_rows(b0, b1, lo, hi, T, B, H, H, len_p, W_hh_p,
                       W_hh_packed_p, NULL, False, gates_p, cells_p,
                       dhidden_p, dhidden2_p, ldd, dh_n_p, dgates_p, dstep_p,
                       dh_p, dc_p, NULL, NULL, NULL, NULL)
        _weight_grads_rows(b0, b1, lo, hi, hi == T, B, H, n_in, len_p, X_p,
                           W_ih_p, hidden_p, ldh, dgates_p, dX_p, sums_p)
        hi = lo


cdef void _sum_row_grads(
    Py_ssize_t part, Py_ssize_t n_parts, Py_ssize_t n_blocks, Py_ssize_t G,
    Py_ssize_t n_in, Py_ssize_t H, const floating* sums_p,
    floating* dW_ih_p, floating* dW_hh_p, floating* dbias_p,
) noexcept nogil:
    """Gate units [g0, g1), piece ``part`` of ``n_parts``, of dW_ih, dW_hh
    and dbias: the row blocks' sums (_backward_block) added in block
    order, whichever thread computed each."""
    cdef Py_ssize_t g0 = _chunk(G, n_parts, part, 16)
    cdef Py_ssize_t g1 = _chunk(G, n_parts, part + 1, 16)
    cdef Py_ssize_t size = _row_grads_size(G, n_in, H), i, g, blk
    cdef const floating* Ct_ih = sums_p + G * H
    cdef floating total
    for i in range(g0 * H, g1 * H):
        total = sums_p[i]
        for blk in range(1, n_blocks):
            total = total + sums_p[blk * size + i]
        dW_hh_p[i] = total
    for i in range(n_in + 1):  # the rows of dW_ih.T, then dbias
        for g in range(g0, g1):
            total = Ct_ih[i * G + g]
            for blk in range(1, n_blocks):
                total = total + Ct_ih[blk * size + i * G + g]
            if i < n_in:
                dW_ih_p[g * n_in + i] = total
            else:
                dbias_p[g] = total


cdef bint _padding_is_finite(
    const floating* X,        # (T, B, I)
    const Py_ssize_t* lengths,  # (B,)
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t n_in,
) noexcept nogil:
    """Whether every padding entry of X is finite (so 0 * X is 0)."""
    cdef Py_ssize_t t, k, n_t
    cdef const floating* pad
    for t in range(T):
        n_t = _n_active(lengths, B, t)
        pad = X + (t * B + n_t) * n_in
        for k in range((B - n_t) * n_in):
            if not isfinite(pad[k]):
                return False
    return True


# ---------------------------------------------------------------------------
# Checks (with the GIL, before the nogil block)

# Compared as C integers: the tuples of the message are built only when it
# is raised (building them for every check was ~3 us of a kernel call, of
# a W1 minibatch's ~20 checks).

cdef int _shape_error(str name, tuple actual, tuple expected) except -1:
    raise ValueError(f"{name} has shape {actual}, expected {expected}")


cdef inline int _check1(str name, Py_ssize_t n, Py_ssize_t e0) except -1:
    if n != e0:
        _shape_error(name, (n,), (e0,))
    return 0


cdef inline int _check2(str name, Py_ssize_t* shape, Py_ssize_t e0,
                        Py_ssize_t e1) except -1:
    if shape[0] != e0 or shape[1] != e1:
        _shape_error(name, (shape[0], shape[1]), (e0, e1))
    return 0


cdef inline int _check3(str name, Py_ssize_t* shape, Py_ssize_t e0,
                        Py_ssize_t e1, Py_ssize_t e2) except -1:
    if shape[0] != e0 or shape[1] != e1 or shape[2] != e2:
        _shape_error(name, (shape[0], shape[1], shape[2]), (e0, e1, e2))
    return 0


cdef Py_ssize_t _row_stride(str name, const Py_ssize_t* shape,
                            const Py_ssize_t* strides,
                            Py_ssize_t itemsize) except -1:
    """Elements from one row of a (T, B, width) sequence to the next: rows
    contiguous, each time's B rows one after another, as in a C-contiguous
    array or in a block of columns of one (a direction's half of the
    (T, B, 2H) output of a bidirectional layer). Strides of axes of length
    one are not read."""
    cdef Py_ssize_t T = shape[0], B = shape[1], width = shape[2], ld = width
    if B > 1:
        ld = strides[1] // itemsize
    elif T > 1:
        ld = strides[0] // itemsize
    if ((width > 1 and strides[2] != itemsize) or ld < width
            or (B > 1 and strides[1] != ld * itemsize)
            or (T > 1 and strides[0] != B * ld * itemsize)):
        raise ValueError(
            f"{name} must be C-contiguous or a block of columns of a "
            f"C-contiguous (T, B, width) array; got shape "
            f"{(shape[0], shape[1], shape[2])} and strides "
            f"{(strides[0], strides[1], strides[2])}"
        )
    return ld


cdef int _check_dims(Py_ssize_t T, Py_ssize_t B, Py_ssize_t n_in,
                     Py_ssize_t H, Py_ssize_t P,
                     const floating[:, ::1] W_ih,
                     const floating[:, ::1] W_hh,
                     const floating[:, ::1] W_hr,
                     const Py_ssize_t[::1] lengths) except -1:
    cdef Py_ssize_t b
    if H < 1 or P < 1 or n_in < 1:
        raise ValueError(
            f"need at least one input feature and one hidden unit, got {n_in} and {H}"
        )
    _check2("W_ih", W_ih.shape, 4 * H, n_in)
    _check2("W_hh", W_hh.shape, 4 * H, P)
    if W_hr is not None:
        _check2("W_hr", W_hr.shape, P, H)
    _check1("lengths", lengths.shape[0], B)
    # BLAS takes int dimensions.
    if T * B > INT_MAX or 4 * H > INT_MAX or n_in > INT_MAX:
        raise ValueError(f"T * B = {T * B} or 4H = {4 * H} too large for BLAS")
    for b in range(B):
        if lengths[b] < 0 or lengths[b] > T:
            raise ValueError(f"lengths[{b}] = {lengths[b]} is outside [0, {T}]")
        if b > 0 and lengths[b] > lengths[b - 1]:
            raise ValueError("lengths must be sorted in descending order")
    return 0


# ---------------------------------------------------------------------------
# Entry points

def lstm_forward(
    const floating[:, :, ::1] X,      # (T, B, I) input; padding rows ignored
    const Py_ssize_t[::1] lengths,    # (B,) descending, 0 <= lengths[b] <= T
    const floating[:, ::1] W_ih,      # (4H, I) input weights, blocks i|f|g|o
    const floating[:, ::1] W_hh,      # (4H, P) recurrent weights
    const floating[::1] bias,         # (4H,) b_ih + b_hh
    bint reverse,                     # run each sequence from its last step
    bint training,                    # store the cells (for lstm_backward)
    floating[:, :, ::1] gates,        # (T, B, 4H) out: activated i|f|g|o on
                                      #   valid rows (workspace at inference)
    floating[:, :, ::1] cells,        # (T, B, H) out: c_t on valid rows;
                                      #   None unless training
    floating[:, :, :] hidden,         # (T, B, P) out: h_t, zero on padding;
                                      #   None: not stored (not if training);
                                      #   C-contiguous, or a block of columns
                                      #   of a C-contiguous array
    floating[:, ::1] h_state,         # (B, P) out: h_n, h of the last step
    floating[:, ::1] c_state,         # (B, H) out: c_n, c of the last step
    floating[:, ::1] step_gates,      # (B, 4H) workspace: h_prev @ W_hh.T
    int n_threads=1,                  # OpenMP threads running the pieces;
                                      #   BLAS must then be single-threaded
                                      #   (the caller's job)
    const floating[:, ::1] W_hr=None,  # (P, H) projection, or None (P = H)
    floating[:, ::1] m_step=None,     # (B, H) workspace with W_hr: m_t
    int n_parts=0,                    # pieces the work is cut into; 0: as
                                      #   many as n_threads (see below)
    floating[:, ::1] W_hh_t=None,     # (P, 4H) workspace: W_hh.T, made
                                      #   here (packed panels or plain)
                                      #   for NN per-step GEMMs
    floating[:, ::1] xh=None,         # (B, I + H) workspace: [x_t | h]
    floating[:, ::1] W_cat_t=None,    # (I + H, 4H) workspace: [W_ih | W_hh].T
                                      #   as W_hh_t; with xh and no W_hr:
                                      #   one GEMM per step on [x_t | h]
                                      #   (then gates may be None at
                                      #   inference)
):
    """LSTM forward over a minibatch, in place into the given arrays.

    Each valid row of ``gates`` receives its activated gates. (Without
    ``xh`` and ``W_cat_t``, or with a projection, ``gates`` first receives
    the input projection of every row, in one GEMM.) Rows of ``gates`` and
    ``cells`` past a sequence's length are left undefined; ``hidden`` is
    zero there.

    ``n_parts`` decides the arithmetic (which GEMM calls compute what) and
    ``n_threads`` only how many threads run those calls: for a given
    ``n_parts`` the results are bit for bit the same on any ``n_threads``
    (at most ``n_parts`` of them work).
    """
    cdef Py_ssize_t T = X.shape[0], B = X.shape[1], n_in = X.shape[2]
    cdef Py_ssize_t P = W_hh.shape[1]
    cdef Py_ssize_t H = P if W_hr is None else W_hh.shape[0] // 4, G = 4 * H
    _check_dims(T, B, n_in, H, P, W_ih, W_hh, W_hr, lengths)
    _check1("bias", bias.shape[0], G)
    cdef bint fused = W_hr is None and xh is not None and W_cat_t is not None
    if fused:
        _check2("xh", xh.shape, B, n_in + H)
        _check2("W_cat_t", W_cat_t.shape, n_in + H, G)
    if training or not fused:
        if gates is None:
            raise ValueError("gates is needed for training, and unless xh and "
                             "W_cat_t are given, for inference")
        _check3("gates", gates.shape, T, B, G)
    _check2("h_state", h_state.shape, B, P)
    _check2("c_state", c_state.shape, B, H)
    _check2("step_gates", step_gates.shape, B, G)
    if training and (cells is None or hidden is None):
        raise ValueError("training needs the cells and hidden outputs")
    if cells is not None:
        _check3("cells", cells.shape, T, B, H)
    cdef Py_ssize_t ldh = P
    if hidden is not None:
        _check3("hidden", hidden.shape, T, B, P)
        ldh = _row_stride("hidden", hidden.shape, hidden.strides, sizeof(floating))
    if W_hr is not None:
        if m_step is None:
            raise ValueError("a projection W_hr needs the m_step workspace")
        _check2("m_step", m_step.shape, B, H)
    if W_hh_t is not None:
        _check2("W_hh_t", W_hh_t.shape, P, G)
    if B == 0:
        return

    cdef bint store_hidden = hidden is not None and T > 0
    cdef const floating* X_p = &X[0, 0, 0] if T > 0 else NULL
    cdef const Py_ssize_t* len_p = &lengths[0]
    cdef const floating* W_ih_p = &W_ih[0, 0]
    cdef const floating* W_hh_p = &W_hh[0, 0]
    cdef floating* W_hh_t_p = NULL
    cdef const floating* W_hr_p = &W_hr[0, 0] if W_hr is not None else NULL
    cdef const floating* bias_p = &bias[0]
    cdef floating* gates_p = (&gates[0, 0, 0] if T > 0 and (training or not fused)
                              else NULL)
    cdef floating* xh_p = &xh[0, 0] if fused else NULL
    cdef floating* W_cat_t_p = &W_cat_t[0, 0] if fused else NULL
    cdef floating* cells_p = &cells[0, 0, 0] if training and T > 0 else NULL
    cdef floating* hidden_p = &hidden[0, 0, 0] if store_hidden else NULL
    cdef floating* h_p = &h_state[0, 0]
    cdef floating* c_p = &c_state[0, 0]
    cdef floating* step_p = &step_gates[0, 0]
    cdef floating* m_p = &m_step[0, 0] if W_hr is not None else NULL
    cdef Py_ssize_t part, lo, hi
    cdef Py_ssize_t pieces = _pieces(n_parts, n_threads)
    cdef Py_ssize_t n_blocks = _row_parts(pieces, B)
    cdef int workers = _workers(n_threads, pieces)

    cdef Py_ssize_t j, k, K = n_in + H
    # The most rows a piece of the recurrence has (the first piece's).
    cdef Py_ssize_t block_rows = _chunk(B, n_blocks, 1, 1)
    cdef bint packed = False
    if W_hh_t is not None and T > 1 and not fused:
        W_hh_t_p = &W_hh_t[0, 0]
    if fused:
        packed = _packs_b(block_rows, K, G, sizeof(floating))
        with nogil:
            # W_cat_t = [W_ih | W_hh].T, (I + H, 4H)
            if packed:
                _pack_b(<int> K, <int> G, 0, <int> n_in, W_ih_p, 1, n_in,
                        W_cat_t_p)
                _pack_b(<int> K, <int> G, <int> n_in, <int> K, W_hh_p, 1, H,
                        W_cat_t_p)
            else:
                for k in range(n_in):
                    for j in range(G):
                        W_cat_t_p[k * G + j] = W_ih_p[j * n_in + k]
                for k in range(H):
                    for j in range(G):
                        W_cat_t_p[(n_in + k) * G + j] = W_hh_p[j * H + k]
            if n_blocks == 1:
                _fused_rows(0, B, T, B, H, n_in, len_p, X_p, W_cat_t_p, packed,
                            bias_p, reverse, store_hidden, hidden_p, ldh, h_p,
                            c_p, step_p, xh_p, gates_p, cells_p)
            else:
                for part in prange(n_blocks,
                                   num_threads=min(workers, n_blocks),
                                   schedule="static"):
                    lo = _chunk(B, n_blocks, part, 1)
                    hi = _chunk(B, n_blocks, part + 1, 1)
                    if hi > lo:
                        _fused_rows(lo, hi, T, B, H, n_in, len_p, X_p,
                                    W_cat_t_p, packed, bias_p, reverse,
                                    store_hidden, hidden_p, ldh, h_p, c_p,
                                    step_p, xh_p, gates_p, cells_p)
        return
    if W_hh_t_p != NULL:
        packed = _packs_b(block_rows, P, G, sizeof(floating))
    with nogil:
        if W_hh_t_p != NULL:
            # W_hh_t = W_hh.T
            if packed:
                _pack_b(<int> P, <int> G, 0, <int> P, W_hh_p, 1, P, W_hh_t_p)
            else:
                for k in range(P):
                    for j in range(G):
                        W_hh_t_p[k * G + j] = W_hh_p[j * P + k]
        if T > 0:
            # gates.reshape(T*B, 4H) = X.reshape(T*B, I) @ W_ih.T
            if pieces == 1:
                gemm(False, True, <int> (T * B), <int> G, <int> n_in,
                     <floating> 1, X_p, <int> n_in, W_ih_p, <int> n_in,
                     <floating> 0, gates_p, <int> G)
            else:
                for part in prange(pieces, num_threads=workers,
                                   schedule="static"):
                    _gemm_part(part, pieces, False, True, <int> (T * B),
                               <int> G, <int> n_in, <floating> 1, X_p,
                               <int> n_in, W_ih_p, <int> n_in,
                               <floating> 0, gates_p, <int> G)
        if n_blocks == 1:
            _forward_rows(0, B, T, B, H, P, len_p, W_hh_p, W_hh_t_p, packed,
                          W_hr_p, bias_p,
                          reverse, training, store_hidden, gates_p, cells_p,
                          hidden_p, ldh, h_p, c_p, step_p, m_p)
        else:
            for part in prange(n_blocks, num_threads=min(workers, n_blocks),
                               schedule="static"):
                lo = _chunk(B, n_blocks, part, 1)
                hi = _chunk(B, n_blocks, part + 1, 1)
                if hi > lo:
                    _forward_rows(lo, hi, T, B, H, P, len_p, W_hh_p, W_hh_t_p,
                                  packed, W_hr_p,
                                  bias_p, reverse, training, store_hidden,
                                  gates_p, cells_p, hidden_p, ldh, h_p, c_p,
                                  step_p, m_p)


def lstm_backward(
    const floating[:, :, ::1] X,        # (T, B, I) the forward input
    const Py_ssize_t[::1] lengths,      # (B,) as given to lstm_forward
    const floating[:, ::1] W_ih,        # (4H, I)
    const floating[:, ::1] W_hh,        # (4H, P)
    bint reverse,                       # as given to lstm_forward
    const floating[:, :, ::1] gates,    # (T, B, 4H) from lstm_forward(training)
    const floating[:, :, ::1] cells,    # (T, B, H) from lstm_forward(training)
    const floating[:, :, :] hidden,     # (T, B, P) from lstm_forward, zero on
                                        #   padding (dW_hh relies on it);
                                        #   rows as lstm_forward's
    const floating[:, :, :] dhidden,    # (T, B, P) dL/dhidden; padding
                                        #   ignored; None: zero; rows as
                                        #   hidden's (own strides)
    floating[:, :, ::1] dX,             # (T, B, I) out, zero on padding;
                                        #   None: not computed (a first
                                        #   layer's input needs none)
    floating[:, ::1] dW_ih,             # (4H, I) out
    floating[:, ::1] dW_hh,             # (4H, P) out
    floating[::1] dbias,                # (4H,) out
    floating[:, :, ::1] dgates,         # (T, B, 4H) workspace: dL/d(gate
                                        #   pre-activations), zero on
                                        #   padding; may be ``gates``
                                        #   itself, overwritten then
    floating[:, ::1] dgates_step,       # (B, 4H) workspace (reverse only)
    floating[:, ::1] dh_rec,            # (B, P) workspace: dL/dh_prev
    floating[:, ::1] dc_state,          # (B, H) workspace: dL/dc_prev
    int n_threads=1,                    # OpenMP threads running the
                                        #   pieces; BLAS must then be single-
                                        #   threaded (the caller's job)
    const floating[:, ::1] W_hr=None,   # (P, H) projection, or None (P = H)
    floating[:, ::1] dW_hr=None,        # (P, H) out, with W_hr
    floating[:, :, ::1] dh_seq=None,    # (T, B, P) workspace with W_hr: total
                                        #   dL/dh_t, zero on padding
    floating[:, :, ::1] m_seq=None,     # (T, B, H) workspace with W_hr: m_t,
                                        #   recomputed, zero on padding
    floating[:, ::1] dh_step=None,      # (B, P) workspace with W_hr
    floating[:, ::1] dm_step=None,      # (B, H) workspace with W_hr: dL/dm_t
    int n_parts=0,                      # pieces the work is cut into; 0: as
                                        #   many as n_threads
    int chunked_grads=-1,               # weight gradients chunk by chunk
                                        #   (1) or after the loop (0); -1:
                                        #   as this build does best
    floating[:, ::1] W_hh_packed=None,  # (4H, P) workspace: W_hh as packed
                                        #   panels for the per-step GEMMs;
                                        #   None: read in place, or by BLAS
    int own_weight_grads=-1,            # dW_ih, dW_hh, dbias after the loop
                                        #   in sklstm's kernel (1) or BLAS
                                        #   (0); -1: as this build does best
    floating[::1] weight_grad_work=None,  # its workspace, of
                                          #   weight_grad_workspace_size(4H,
                                          #   I, P, n_parts, itemsize)
                                          #   elements; None: BLAS
    const floating[:, ::1] dh_n=None,   # (B, P) dL/dh_n, on each sequence's
                                        #   h after its last step (added to
                                        #   dhidden there); None: zero
    # (T, B, P) more of dL/dhidden, added to dhidden (which must be given),
    # with the same strides; None: none
    const floating[:, :, :] dhidden_add=None,
):
    """Backpropagation through time, in place into the given arrays.

    As in :func:`lstm_forward`, ``n_parts`` fixes the arithmetic and
    ``n_threads`` the threads running it. ``chunked_grads`` changes the
    order of the weight gradients' sums, so it fixes the arithmetic too; the
    chunked path applies to the forward direction without a projection
    only. So does ``own_weight_grads`` (with ``weight_grad_work``), which
    sums dW_ih, dW_hh and dbias in blocks of rows; it applies to those of
    at most 128 KiB (``_own_weight_grad``).

    ``dgates`` may be the ``gates`` array itself: each step's gates are read
    once, by that step's cell backward, which then stores their gradients in
    their place. That saves T * B * 4H elements, the largest array of
    training after the gates, and leaves the gradients in ``gates``.

    ``dh_n`` is the gradient of what reads only h_n (the head of
    ``output="last"``): with ``dhidden=None`` it spares a (T, B, P) array
    that would be zero but at each sequence's last step, and its reads.

    ``hidden`` may be a block of columns of a wider array (lstm_forward
    wrote it there), and so may ``dhidden`` and ``dhidden_add``: below a
    bidirectional layer, a direction's hidden sequence is its half of the
    next layer's input, and its gradient the sum of its halves of the two
    directions' ``dX`` there, without copies (``dhidden + dhidden_add`` is
    rounded once, as a summed array would hold it).
    """
    cdef Py_ssize_t T = X.shape[0], B = X.shape[1], n_in = X.shape[2]
    cdef Py_ssize_t P = W_hh.shape[1]
    cdef Py_ssize_t H = P if W_hr is None else W_hh.shape[0] // 4, G = 4 * H
    _check_dims(T, B, n_in, H, P, W_ih, W_hh, W_hr, lengths)
    _check3("gates", gates.shape, T, B, G)
    _check3("cells", cells.shape, T, B, H)
    _check3("hidden", hidden.shape, T, B, P)
    cdef Py_ssize_t ldh = _row_stride("hidden", hidden.shape, hidden.strides,
                                      sizeof(floating))
    cdef Py_ssize_t ldd = P
    if dhidden is not None:
        _check3("dhidden", dhidden.shape, T, B, P)
        ldd = _row_stride("dhidden", dhidden.shape, dhidden.strides,
                          sizeof(floating))
    if dhidden_add is not None:
        if dhidden is None:
            raise ValueError("dhidden_add is added to dhidden: give dhidden too")
        _check3("dhidden_add", dhidden_add.shape, T, B, P)
        if _row_stride("dhidden_add", dhidden_add.shape, dhidden_add.strides,
                       sizeof(floating)) != ldd:
            raise ValueError("dhidden_add must have the strides of dhidden")
    if dh_n is not None:
        _check2("dh_n", dh_n.shape, B, P)
    if dX is not None:
        _check3("dX", dX.shape, T, B, n_in)
    _check3("dgates", dgates.shape, T, B, G)
    _check2("dW_ih", dW_ih.shape, G, n_in)
    _check2("dW_hh", dW_hh.shape, G, P)
    _check1("dbias", dbias.shape[0], G)
    _check2("dgates_step", dgates_step.shape, B, G)
    _check2("dh_rec", dh_rec.shape, B, P)
    _check2("dc_state", dc_state.shape, B, H)
    if W_hr is not None:
        if (dW_hr is None or dh_seq is None or m_seq is None or dh_step is None
                or dm_step is None):
            raise ValueError(
                "a projection W_hr needs dW_hr, dh_seq, m_seq, dh_step and dm_step"
            )
        _check2("dW_hr", dW_hr.shape, P, H)
        _check3("dh_seq", dh_seq.shape, T, B, P)
        _check3("m_seq", m_seq.shape, T, B, H)
        _check2("dh_step", dh_step.shape, B, P)
        _check2("dm_step", dm_step.shape, B, H)
    if W_hh_packed is not None:
        _check2("W_hh_packed", W_hh_packed.shape, G, P)
    if T == 0 or B == 0:
        dW_ih[:, :] = 0
        dW_hh[:, :] = 0
        dbias[:] = 0
        if W_hr is not None:
            dW_hr[:, :] = 0
        return

    cdef const Py_ssize_t* len_p = &lengths[0]
    cdef const floating* X_p = &X[0, 0, 0]
    cdef const floating* W_ih_p = &W_ih[0, 0]
    cdef const floating* W_hh_p = &W_hh[0, 0]
    cdef const floating* gates_p = &gates[0, 0, 0]
    cdef const floating* cells_p = &cells[0, 0, 0]
    cdef const floating* hidden_p = &hidden[0, 0, 0]
    cdef const floating* dhidden_p = (&dhidden[0, 0, 0] if dhidden is not None
                                      else NULL)
    cdef const floating* dhidden2_p = (&dhidden_add[0, 0, 0]
                                       if dhidden_add is not None else NULL)
    cdef const floating* dh_n_p = &dh_n[0, 0] if dh_n is not None else NULL
    cdef floating* dX_p = NULL if dX is None else &dX[0, 0, 0]
    cdef floating* dW_ih_p = &dW_ih[0, 0]
    cdef floating* dW_hh_p = &dW_hh[0, 0]
    cdef floating* dbias_p = &dbias[0]
    cdef floating* dgates_p = &dgates[0, 0, 0]
    cdef Py_ssize_t n_gates = T * B * G
    if dgates_p != gates_p and (dgates_p < gates_p + n_gates
                                and gates_p < dgates_p + n_gates):
        raise ValueError("dgates overlaps gates: pass the gates array itself "
                         "(to overwrite it) or an array of its own")
    cdef floating* dstep_p = &dgates_step[0, 0]
    cdef floating* dh_p = &dh_rec[0, 0]
    cdef floating* dc_p = &dc_state[0, 0]
    # With a projection only (NULL otherwise).
    cdef const floating* W_hr_p = NULL
    cdef floating* dW_hr_p = NULL
    cdef floating* dh_seq_p = NULL
    cdef floating* m_seq_p = NULL
    cdef floating* dh_step_p = NULL
    cdef floating* dm_p = NULL
    if W_hr is not None:
        W_hr_p = &W_hr[0, 0]
        dW_hr_p = &dW_hr[0, 0]
        dh_seq_p = &dh_seq[0, 0, 0]
        m_seq_p = &m_seq[0, 0, 0]
        dh_step_p = &dh_step[0, 0]
        dm_p = &dm_step[0, 0]
    cdef Py_ssize_t part, lo, hi
    cdef Py_ssize_t pieces = _pieces(n_parts, n_threads)
    cdef Py_ssize_t n_blocks = _row_parts(pieces, B)
    cdef int workers = _workers(n_threads, pieces)
    cdef bint finite, chunked, own_ih, own_hh, by_rows
    if own_weight_grads == -1:
        own_weight_grads = SKLSTM_OWN_WEIGHT_GRADS
    if weight_grad_work is None:
        own_weight_grads = 0  # no workspace: BLAS
    cdef floating* work_p = NULL
    cdef Py_ssize_t work_size, work_len = 0
    if own_weight_grads == 1:
        work_size = pieces * _weight_grad_part_size(G, n_in, P, pieces,
                                                    sizeof(floating))
        work_len = weight_grad_work.shape[0]
        if work_len < work_size:
            raise ValueError(
                f"weight_grad_work has {work_len} elements, expected {work_size}"
            )
        work_p = &weight_grad_work[0]
    # Steps per chunk of the chunked paths: ~256 KiB of dgates (of a row
    # block's rows, when summing by row blocks).
    cdef Py_ssize_t chunk = max(1, (1 << 18) // (B * G * sizeof(floating)))
    cdef Py_ssize_t block_chunk = max(1, (1 << 18) // (
        _chunk(B, n_blocks, 1, 1) * G * sizeof(floating)))
    # W_hh packed once for the T per-step products dgates_step @ W_hh.
    cdef floating* W_hh_packed_p = NULL
    if (W_hh_packed is not None and T > 1
            and _packs_b(_chunk(B, n_blocks, 1, 1), G, P, sizeof(floating))):
        W_hh_packed_p = &W_hh_packed[0, 0]

    with nogil:
        if W_hh_packed_p != NULL:
            _pack_b(<int> G, <int> P, 0, <int> G, W_hh_p, P, 1, W_hh_packed_p)
        finite = _padding_is_finite(X_p, len_p, T, B, n_in)
        if chunked_grads == -1:
            chunked_grads = SKLSTM_CHUNKED_WEIGHT_GRADS
        chunked = (chunked_grads == 1 and not reverse and W_hr_p == NULL
                   and finite)
        own_ih = (work_p != NULL and finite
                  and _own_weight_grad(G, n_in, sizeof(floating)))
        own_hh = (work_p != NULL and T > 1
                  and _own_weight_grad(G, P, sizeof(floating)))
        # Cut into row blocks, each sums its own rows' weight gradients
        # (_backward_block), given room for their sums.
        by_rows = (chunked and n_blocks > 1 and work_p != NULL
                   and _row_grads_fit(G, n_in, P, sizeof(floating))
                   and n_blocks * _row_grads_size(G, n_in, P) <= work_len)
        if by_rows:
            for part in prange(n_blocks, num_threads=min(workers, n_blocks),
                               schedule="static"):
                _backward_block(_chunk(B, n_blocks, part, 1),
                                _chunk(B, n_blocks, part + 1, 1), block_chunk,
                                T, B, H, n_in, len_p, X_p, W_ih_p, W_hh_p,
                                W_hh_packed_p, gates_p, cells_p, dhidden_p,
                                dhidden2_p, ldd, dh_n_p, hidden_p, ldh,
                                dgates_p, dstep_p, dh_p, dc_p, dX_p,
                                work_p + part * _row_grads_size(G, n_in, P))
            for part in prange(pieces, num_threads=workers, schedule="static"):
                _sum_row_grads(part, pieces, n_blocks, G, n_in, H, work_p,
                               dW_ih_p, dW_hh_p, dbias_p)
        elif chunked:
            # BPTT in chunks of steps, each followed by its share of the
            # weight gradients (see _weight_grads_times): per chunk, the row
            # blocks' BPTT, then the pieces of the weight gradients.
            hi = T
            while hi > 0:
                lo = max(0, hi - chunk)
                if n_blocks == 1:
                    _backward_rows(0, B, lo, hi, T, B, H, P, len_p, W_hh_p,
                                   W_hh_packed_p, NULL, False, gates_p, cells_p,
                                   dhidden_p, dhidden2_p, ldd, dh_n_p, dgates_p,
                                   dstep_p, dh_p, dc_p, NULL, NULL, NULL, NULL)
                else:
                    for part in prange(n_blocks,
                                       num_threads=min(workers, n_blocks),
                                       schedule="static"):
                        _backward_rows(_chunk(B, n_blocks, part, 1),
                                       _chunk(B, n_blocks, part + 1, 1),
                                       lo, hi, T, B, H, P, len_p, W_hh_p,
                                       W_hh_packed_p, NULL, False, gates_p,
                                       cells_p, dhidden_p, dhidden2_p, ldd,
                                       dh_n_p, dgates_p, dstep_p, dh_p, dc_p,
                                       NULL, NULL, NULL, NULL)
                if pieces == 1:
                    _weight_grads_times(0, 1, lo, hi, hi == T, B, H, n_in,
                                        len_p, X_p, W_ih_p, hidden_p, ldh,
                                        dgates_p, dX_p, dW_ih_p, dW_hh_p,
                                        dbias_p)
                else:
                    for part in prange(pieces, num_threads=workers,
                                       schedule="static"):
                        _weight_grads_times(part, pieces, lo, hi, hi == T, B,
                                            H, n_in, len_p, X_p, W_ih_p,
                                            hidden_p, ldh, dgates_p, dX_p,
                                            dW_ih_p, dW_hh_p, dbias_p)
                hi = lo
        elif n_blocks == 1:
            _backward_rows(0, B, 0, T, T, B, H, P, len_p, W_hh_p,
                           W_hh_packed_p, W_hr_p, reverse, gates_p, cells_p,
                           dhidden_p, dhidden2_p, ldd, dh_n_p, dgates_p,
                           dstep_p, dh_p, dc_p, dh_seq_p, m_seq_p, dh_step_p,
                           dm_p)
        else:
            for part in prange(n_blocks, num_threads=min(workers, n_blocks),
                               schedule="static"):
                lo = _chunk(B, n_blocks, part, 1)
                hi = _chunk(B, n_blocks, part + 1, 1)
                if hi > lo:
                    _backward_rows(lo, hi, 0, T, T, B, H, P, len_p, W_hh_p,
                                   W_hh_packed_p, W_hr_p,
                                   reverse, gates_p, cells_p, dhidden_p,
                                   dhidden2_p, ldd, dh_n_p, dgates_p, dstep_p,
                                   dh_p, dc_p, dh_seq_p, m_seq_p, dh_step_p,
                                   dm_p)
        if chunked:
            pass  # done chunk by chunk (or by row blocks) above
        elif pieces == 1:
            _weight_grads(0, 1, T, B, H, P, n_in, len_p, X_p, W_ih_p, reverse,
                          finite, hidden_p, ldh, dgates_p, dX_p, dW_ih_p, dW_hh_p,
                          dbias_p, dh_seq_p, m_seq_p, dW_hr_p, own_ih, own_hh,
                          work_p)
        else:
            for part in prange(pieces, num_threads=workers,
                               schedule="static"):
                _weight_grads(part, pieces, T, B, H, P, n_in, len_p, X_p,
                              W_ih_p, reverse, finite, hidden_p, ldh, dgates_p,
                              dX_p, dW_ih_p, dW_hh_p, dbias_p, dh_seq_p,
                              m_seq_p, dW_hr_p, own_ih, own_hh, work_p)


def adam_update(
    floating[::1] params,             # (n,) updated in place
    const floating[::1] grad,         # (n,)
    floating[::1] m,                  # (n,) first moment, updated in place
    floating[::1] v,                  # (n,) second moment, updated in place
    *, double beta_1, double beta_2, double step_size, double epsilon,
):
    """One Adam step over the flat parameter buffer, in one pass.

    The arithmetic of ``adam_update`` in ``_backends/_lstm_cuda.cu``: the
    moments in the parameters' dtype, the step ``m * step_size / (sqrt(v) +
    epsilon)`` in double, rounded once when subtracted. NumPy's version runs
    eleven passes over the buffer (18.6 us of a W1 minibatch's ~540 us at
    4.5k parameters); this one reads each array once.
    """
    cdef Py_ssize_t k, n = params.shape[0]
    cdef floating b1 = <floating> beta_1, one_minus_b1 = <floating> (1.0 - beta_1)
    cdef floating b2 = <floating> beta_2, one_minus_b2 = <floating> (1.0 - beta_2)
    cdef floating eps = <floating> epsilon
    cdef floating g, m_k, v_k, denominator
    if grad.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("params, grad, m and v must have the same length")
    with nogil:
        for k in range(n):
            g = grad[k]
            m_k = m[k] * b1 + g * one_minus_b1
            v_k = v[k] * b2 + (g * one_minus_b2) * g
            m[k] = m_k
            v[k] = v_k
            denominator = <floating> sqrt(v_k) + eps
            params[k] = <floating> (<double> params[k]
                                    - <double> m_k * step_size / <double> denominator)


def _activations_memview(
    const floating[::1] x,            # (n,)
    floating[::1] sigmoid_out,        # (n,) out: sigmoid(x); None: not computed
    floating[::1] tanh_out,           # (n,) out: tanh(x); None: not computed
):
    """The inlined gate activations of the kernels, elementwise, each in a
    loop of its own (as the kernels' gate loops run them); for tests, and
    for ``benchmarks/bench_kernels.py``, which times each alone."""
    cdef Py_ssize_t k, n = x.shape[0]
    if ((sigmoid_out is not None and sigmoid_out.shape[0] != n)
            or (tanh_out is not None and tanh_out.shape[0] != n)):
        raise ValueError("x, sigmoid_out and tanh_out must have the same length")
    with nogil:
        if sigmoid_out is not None:
            for k in range(n):
                sigmoid_out[k] = sigmoid(x[k])
        if tanh_out is not None:
            for k in range(n):
                tanh_out[k] = tanh(x[k])
