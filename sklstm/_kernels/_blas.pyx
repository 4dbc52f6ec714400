"""Row-major BLAS wrappers over ``scipy.linalg.cython_blas``.

BLAS is column-major. A row-major matrix ``X`` stored with row stride ``ldx``
is, read column-major, ``X.T`` with leading dimension ``ldx``. So the
row-major product ``C = op(A) @ op(B)`` is computed as the column-major
product ``C.T = op(B).T @ op(A).T``: swap the operands and ``m`` with ``n``,
keep the transpose flags (as ``sklearn/utils/_cython_blas.pyx`` does).

The ``_*_memview`` functions exist only so the tests can check each wrapper
against NumPy.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport (
    daxpy, dgemm, dgemv, dscal, saxpy, sgemm, sgemv, sscal,
)


cdef void _gemv(bint trans, int m, int n, floating alpha, const floating* A,
                int lda, const floating* x, int incx, floating beta,
                floating* y, int incy) noexcept nogil:
    """Column-major ``y = alpha op(A) x + beta y``, A (m, n); ``y`` is
    zeroed first when beta is 0, so that whatever it held (it may be
    uninitialised memory) cannot leak in as ``0 * NaN``."""
    cdef char t = b"t" if trans else b"n"
    cdef int i, n_y = n if trans else m
    if beta == 0:
        for i in range(n_y):
            y[i * incy] = 0
    if floating is float:
        sgemv(&t, &m, &n, &alpha, <float*> A, &lda, <float*> x, &incx,
              &beta, y, &incy)
    else:
        dgemv(&t, &m, &n, &alpha, <double*> A, &lda, <double*> x, &incx,
              &beta, y, &incy)


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* A, int lda,
               const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil:
    cdef char ta = b"t" if trans_a else b"n"
    cdef char tb = b"t" if trans_b else b"n"
    # A product with one column (or one row) of output is a matrix-vector
    # product. OpenBLAS's sgemm still packs the whole matrix operand for it:
    # dX = dgates @ W_ih and dW_ih = dgates.T @ X at one input feature
    # (W1: dgates 640 x 128) spent more time packing dgates than the rest
    # of the backward pass spent in GEMM kernels. GEMV streams it once.
    if n == 1 and k > 1:
        # C[:, 0] = op(A) @ op(B)[:, 0]; row-major A (m, k) read
        # column-major is A.T (k, m), and (k, m) stored A is op(A) = A.T.
        if trans_a:
            _gemv(False, m, k, alpha, A, lda, B, 1 if trans_b else ldb,
                  beta, C, ldc)
        else:
            _gemv(True, k, m, alpha, A, lda, B, 1 if trans_b else ldb,
                  beta, C, ldc)
        return
    if m == 1 and k > 1:
        # C[0, :] = op(B).T @ op(A)[0, :]; row-major (k, n) B read
        # column-major is B.T (n, k), and (n, k) stored B is op(B).T.
        if trans_b:
            _gemv(True, k, n, alpha, B, ldb, A, lda if trans_a else 1,
                  beta, C, 1)
        else:
            _gemv(False, n, k, alpha, B, ldb, A, lda if trans_a else 1,
                  beta, C, 1)
        return
    # row-major C = op(A) @ op(B)  ==  column-major C.T = op(B).T @ op(A).T
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> B, &ldb,
              <float*> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> B, &ldb,
              <double*> A, &lda, &beta, C, &ldc)


cdef void axpy(int n, floating alpha, const floating* x, int incx,
               floating* y, int incy) noexcept nogil:
    if floating is float:
        saxpy(&n, &alpha, <float*> x, &incx, y, &incy)
    else:
        daxpy(&n, &alpha, <double*> x, &incx, y, &incy)


cdef void scal(int n, floating alpha, floating* x, int incx) noexcept nogil:
    if floating is float:
        sscal(&n, &alpha, x, &incx)
    else:
        dscal(&n, &alpha, x, &incx)


cdef int _row_stride(const floating[:, :] X, str name) except -1:
    """Row stride of X in elements (BLAS's leading dimension).

    BLAS needs contiguous rows and a leading dimension of at least
    max(1, n_columns); a stride that cannot matter (one row, one column) is
    replaced by that minimum.
    """
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t ld = max(X.shape[1], 1)
    if X.shape[1] > 1 and X.strides[1] != itemsize:
        raise ValueError(f"{name} must have contiguous rows")
    if X.shape[0] > 1:
        if X.strides[0] % itemsize != 0 or X.strides[0] // itemsize < ld:
            raise ValueError(f"{name} has an unsupported row stride")
        ld = X.strides[0] // itemsize
    return <int> ld


def _gemm_memview(bint trans_a, bint trans_b, double alpha,
                  const floating[:, :] A,   # (m, k), or (k, m) if trans_a
                  const floating[:, :] B,   # (k, n), or (n, k) if trans_b
                  double beta,
                  floating[:, :] C):        # (m, n), updated in place
    """C = alpha * op(A) @ op(B) + beta * C, in place; for tests only.

    Each array must have contiguous rows; the row stride may exceed the row
    length (a block of a larger C-ordered array).
    """
    cdef int m = A.shape[1] if trans_a else A.shape[0]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int n = B.shape[0] if trans_b else B.shape[1]
    cdef int k_b = B.shape[1] if trans_b else B.shape[0]
    if k_b != k or C.shape[0] != m or C.shape[1] != n:
        raise ValueError(
            f"shapes do not match: op(A) is ({m}, {k}), op(B) is ({k_b}, {n}), "
            f"C is ({C.shape[0]}, {C.shape[1]})"
        )
    cdef int lda = _row_stride(A, "A")
    cdef int ldb = _row_stride(B, "B")
    cdef int ldc = _row_stride(C, "C")
    if m == 0 or n == 0:
        return
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha, &A[0, 0], lda,
             &B[0, 0], ldb, <floating> beta, &C[0, 0], ldc)


cdef int _element_stride(const floating[:] x, str name) except -1:
    """Positive element stride of x (1 when it cannot matter)."""
    if x.shape[0] <= 1:
        return 1
    if x.strides[0] <= 0 or x.strides[0] % sizeof(floating) != 0:
        raise ValueError(f"{name} must have a positive element stride")
    return <int> (x.strides[0] // sizeof(floating))


def _axpy_memview(double alpha,
                  const floating[:] x,   # (n,)
                  floating[:] y):        # (n,), updated in place
    """y += alpha * x, in place; for tests only (positive element strides)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} elements, y has {y.shape[0]}")
    cdef int n = x.shape[0]
    cdef int incx = _element_stride(x, "x")
    cdef int incy = _element_stride(y, "y")
    if n == 0:
        return
    with nogil:
        axpy(n, <floating> alpha, &x[0], incx, &y[0], incy)


def _scal_memview(double alpha,
                  floating[:] x):        # (n,), updated in place
    """x *= alpha, in place; for tests only (positive element stride)."""
    cdef int n = x.shape[0]
    cdef int incx = _element_stride(x, "x")
    if n == 0:
        return
    with nogil:
        scal(n, <floating> alpha, &x[0], incx)
