# Row-major wrappers over scipy.linalg.cython_blas, on the fused ``floating``
# type (float -> s*, double -> d*). ``_blas.pyx`` is the only module of sklstm
# that cimports scipy.linalg.cython_blas; the kernels cimport these instead.

from cython cimport floating


# Row-major C (m, n) = alpha * op(A) @ op(B) + beta * C, with op(A) of shape
# (m, k) and op(B) of shape (k, n); op(X) is X.T when trans_x is true.
# lda, ldb, ldc are the row strides (in elements) of A, B, C as stored.
cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* A, int lda,
               const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil

# y (n,) += alpha * x (n,), with element strides incx, incy.
cdef void axpy(int n, floating alpha, const floating* x, int incx,
               floating* y, int incy) noexcept nogil

# x (n,) *= alpha, with element stride incx.
cdef void scal(int n, floating alpha, floating* x, int incx) noexcept nogil
