"""The ctypes cuBLAS GEMM of the CUDA-graph path, checked on the CPU.

``sklstm/_backends/_cublas.py`` turns row-major views into column-major
cuBLAS arguments. Here a stand-in for the cuBLAS library does what
``cublasSgemm``/``cublasDgemm`` do, on host memory reached through the very
pointers and leading dimensions it is given, so a wrong transpose flag,
leading dimension or argument order fails on machines without a GPU.
"""

import ctypes

import numpy as np
import pytest

from sklstm._backends._cublas import (
    OP_N,
    OP_T,
    TF32_TENSOR_OP_MATH,
    CublasError,
    CublasHandle,
    gemm_arguments,
)


def _column_major(pointer, ctype, dtype, rows, cols, ld):
    """The (rows x cols) column-major matrix at ``pointer`` (ld >= rows)."""
    extent = (cols - 1) * ld + rows
    flat = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctype)),
                                 shape=(extent,))
    itemsize = np.dtype(dtype).itemsize
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols),
                                           strides=(itemsize, ld * itemsize))


class FakeCublas:
    """The cuBLAS entry points ``CublasHandle`` uses, computed with NumPy."""

    def __init__(self):
        self.calls = []
        self.math_mode = None
        self.status = 0

    def cublasCreate_v2(self, handle_ref):
        handle_ref._obj.value = 1234
        return 0

    def cublasSetStream_v2(self, handle, stream):
        self.calls.append(("stream", stream.value))
        return 0

    def cublasSetWorkspace_v2(self, handle, pointer, size):
        self.calls.append(("workspace", pointer.value, size.value))
        return 0

    def cublasSetMathMode(self, handle, mode):
        self.math_mode = mode.value
        return 0

    def cublasDestroy_v2(self, handle):
        self.calls.append(("destroy",))
        return 0

    def _gemm(self, ctype, dtype, handle, transa, transb, m, n, k, alpha, A, lda,
              B, ldb, beta, C, ldc):
        transa, transb, m, n, k = (v.value for v in (transa, transb, m, n, k))
        lda, ldb, ldc = lda.value, ldb.value, ldc.value
        # cuBLAS's own argument checks.
        assert lda >= max(1, m if transa == OP_N else k)
        assert ldb >= max(1, k if transb == OP_N else n)
        assert ldc >= max(1, m)
        a = _column_major(A.value, ctype, dtype, *((m, k) if transa == OP_N
                                                  else (k, m)), lda)
        b = _column_major(B.value, ctype, dtype, *((k, n) if transb == OP_N
                                                  else (n, k)), ldb)
        c = _column_major(C.value, ctype, dtype, m, n, ldc)
        a = a if transa == OP_N else a.T
        b = b if transb == OP_N else b.T
        c[...] = alpha._obj.value * (a @ b) + beta._obj.value * c
        self.calls.append(("gemm", np.dtype(dtype).name))
        return self.status

    def cublasSgemm_v2(self, *args):
        return self._gemm(ctypes.c_float, np.float32, *args)

    def cublasDgemm_v2(self, *args):
        return self._gemm(ctypes.c_double, np.float64, *args)


def _host_pointer(array):
    return array.ctypes.data


def _operands(rng, dtype):
    """Views of the kinds the backends pass: (name, a, b)."""
    def matrix(*shape):
        return rng.standard_normal(shape).astype(dtype)

    big = matrix(6, 9, 8)
    wide = matrix(7, 10)
    return [
        ("C @ C", matrix(5, 4), matrix(4, 3)),
        ("C @ transposed (h @ W.T)", matrix(5, 4), matrix(3, 4).T),
        ("transposed @ C (dgates.T @ X)", matrix(4, 5).T, matrix(4, 3)),
        ("transposed @ transposed", matrix(4, 5).T, matrix(3, 4).T),
        ("leading rows of a step", big[2, :5], matrix(8, 6)),
        ("column block (strided rows)", wide[:, 3:7], matrix(4, 2)),
        ("one row", matrix(1, 4), matrix(4, 3)),
        ("one column out", matrix(5, 4), matrix(4, 1)),
        ("a column vector operand", matrix(5, 1), matrix(3, 1).T),
        ("reshaped steps, transposed", big[1:].reshape(-1, 8).T, matrix(45, 2)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_matches_numpy_through_a_fake_cublas(rng, dtype):
    fake = FakeCublas()
    handle = CublasHandle(77, 88, 4096, library=fake)
    for name, a, b in _operands(rng, dtype):
        out = rng.standard_normal((a.shape[0], b.shape[1])).astype(dtype)
        before = out.copy()
        handle.gemm(a, b, out, pointer=_host_pointer)
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, err_msg=name)
        handle.gemm(a, b, out, beta=1.0, pointer=_host_pointer)
        np.testing.assert_allclose(out, 2 * (a @ b), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        assert not np.array_equal(out, before)
    # The stream first, then the workspace (setStream resets it).
    assert fake.calls[0] == ("stream", 77)
    assert fake.calls[1] == ("workspace", 88, 4096)


def test_handle_math_mode_and_errors(rng):
    fake = FakeCublas()
    handle = CublasHandle(1, 2, 3, allow_tf32=True, library=fake)
    assert fake.math_mode == TF32_TENSOR_OP_MATH
    fake.status = 13  # CUBLAS_STATUS_EXECUTION_FAILED
    a = np.ones((2, 2), np.float32)
    with pytest.raises(CublasError, match="status 13"):
        handle.gemm(a, a, np.empty((2, 2), np.float32), pointer=_host_pointer)
    handle.close()
    handle.close()  # idempotent
    assert fake.calls.count(("destroy",)) == 1


def test_empty_products_do_not_call_cublas():
    fake = FakeCublas()
    handle = CublasHandle(1, 2, 3, library=fake)
    out = np.full((2, 3), 5.0, np.float32)
    # k = 0: out = beta * out.
    handle.gemm(np.empty((2, 0), np.float32), np.empty((0, 3), np.float32), out,
                beta=0.5, pointer=_host_pointer)
    np.testing.assert_array_equal(out, 2.5)
    handle.gemm(np.empty((0, 4), np.float32), np.ones((4, 3), np.float32),
                np.empty((0, 3), np.float32), pointer=_host_pointer)
    assert not any(call[0] == "gemm" for call in fake.calls)


def test_gemm_arguments_reject_what_cublas_cannot_read():
    a = np.ones((4, 6))[:, ::2]  # neither rows nor columns contiguous
    with pytest.raises(ValueError, match="row- or column-contiguous"):
        gemm_arguments(a, np.ones((3, 2)), np.empty((4, 2)))
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm_arguments(np.ones((4, 3)), np.ones((2, 2)), np.empty((4, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm_arguments(np.ones((4, 3)), np.ones((3, 2)), np.empty((2, 4)).T)


def test_transposed_operands_are_read_in_place():
    a, b = np.ones((3, 5)).T, np.ones((3, 4))
    args = gemm_arguments(a, np.ones((3, 4)), np.empty((5, 4)))
    assert args.trans_second == OP_T and args.second is a
    args = gemm_arguments(np.ones((5, 4)), b.T, np.empty((5, 3)))
    assert args.trans_first == OP_T and args.first.base is b
