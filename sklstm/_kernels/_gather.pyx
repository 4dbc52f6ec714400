"""Sequences gathered into a time-major minibatch in one pass.

Why: the kernels read a minibatch time-major, ``(T, B, F)``, while the data
are sample-major, ``(N, T, F)``. With NumPy that is two copies: the fancy
index ``X[rows]`` gathers the rows, and a transposed copy makes them
time-major. Here each step of each chosen sequence is read once and
written once, in its place. A W2 minibatch of ``benchmarks/bench_cpu.py``
(64 sequences of 50 x 8 floats, ~2.3 ms of kernels), with the caches
flushed as the kernels leave them in a fit: 79 us with NumPy, 57 us here;
in warm caches 31 against 12 us.

The sequences are copied in groups of ROW_GROUP, step by step, so that each
step writes one contiguous run of ``ROW_GROUP * F`` values of ``out``.
Copied one whole sequence at a time, each step wrote one row ``B * F``
values further down ``out`` (2 KiB at W2, 16 KiB at W3), lines that map to
few cache sets. With the caches flushed, alternating in one process
(medians): W2's minibatch 50-55 -> 40-41 us, W3's (128 sequences of
100 x 32) 254-257 -> 225-232 us, W1's ~17 us either way.
"""

from cython cimport floating

# Sequences copied together, a step at a time (see above).
DEF ROW_GROUP = 16


def gather_time_major(const floating[:, :, ::1] X, const Py_ssize_t[::1] rows,
                      floating[:, :, ::1] out):
    """``out[t, b] = X[rows[b], t]`` for the ``T = out.shape[0]`` first steps.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_timesteps, n_features), C-contiguous
    rows : ndarray of shape (B,), dtype intp
        Rows of ``X``, each in ``[0, n_samples)``.
    out : ndarray of shape (T, B, n_features), C-contiguous, ``X``'s dtype
        ``T <= n_timesteps``. Written in full.
    """
    cdef Py_ssize_t N = X.shape[0], n_steps = X.shape[1], F = X.shape[2]
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1]
    cdef Py_ssize_t b, b0, b1, t, k
    cdef const floating* src
    cdef floating* dst
    if rows.shape[0] != B or out.shape[2] != F or T > n_steps:
        raise ValueError(
            f"out has shape {(T, B, out.shape[2])}, expected (T <= {n_steps}, "
            f"{rows.shape[0]}, {F})"
        )
    for b in range(B):
        if not 0 <= rows[b] < N:
            raise ValueError(f"row {rows[b]} is outside [0, {N})")
    if T == 0 or B == 0 or F == 0:
        return
    with nogil:
        for b0 in range(0, B, ROW_GROUP):
            b1 = min(b0 + ROW_GROUP, B)
            for t in range(T):
                # step t of sequences [b0, b1): one run of (b1 - b0) * F
                dst = &out[t, b0, 0]
                for b in range(b0, b1):
                    src = &X[rows[b], t, 0]
                    for k in range(F):
                        dst[k] = src[k]
                    dst += F
