"""The row-major BLAS wrappers of sklstm._kernels._blas against NumPy."""

import numpy as np
import pytest
from sklstm._kernels._blas import _axpy_memview, _gemm_memview, _scal_memview

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (2.5, -0.5), (-1.0, 1.0)])
def test_gemm(dtype, trans_a, trans_b, alpha, beta):
    rng = np.random.default_rng(0)
    m, n, k = 7, 4, 5
    A = _random(rng, (k, m) if trans_a else (m, k), dtype)
    B = _random(rng, (n, k) if trans_b else (k, n), dtype)
    C = _random(rng, (m, n), dtype)
    op_A = A.T if trans_a else A
    op_B = B.T if trans_b else B
    expected = alpha * op_A.astype(np.float64) @ op_B + beta * C.astype(np.float64)

    _gemm_memview(trans_a, trans_b, alpha, A, B, beta, C)
    np.testing.assert_allclose(C, expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_blocks_of_larger_arrays(dtype, trans_a, trans_b):
    # Row strides larger than the row length: lda, ldb, ldc != n_columns.
    rng = np.random.default_rng(1)
    m, n, k = 3, 6, 4
    A_big = _random(rng, (10, 9), dtype)
    B_big = _random(rng, (8, 11), dtype)
    C_big = _random(rng, (5, 13), dtype)
    A = A_big[2 : 2 + (k if trans_a else m), 1 : 1 + (m if trans_a else k)]
    B = B_big[1 : 1 + (n if trans_b else k), 3 : 3 + (k if trans_b else n)]
    C = C_big[1 : 1 + m, 2 : 2 + n]
    op_A = A.T if trans_a else A
    op_B = B.T if trans_b else B
    expected_big = C_big.copy()
    expected_big[1 : 1 + m, 2 : 2 + n] = 2.0 * op_A @ op_B - C

    _gemm_memview(trans_a, trans_b, 2.0, A, B, -1.0, C)
    # Outside the block C_big is untouched.
    np.testing.assert_allclose(C_big, expected_big, rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (1, 5, 3), (6, 1, 2), (4, 3, 1)])
def test_gemm_thin_shapes(dtype, m, n, k):
    rng = np.random.default_rng(2)
    A = _random(rng, (m, k), dtype)
    B = _random(rng, (n, k), dtype)
    C = np.zeros((m, n), dtype=dtype)
    _gemm_memview(False, True, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B.T, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n", [(7, 1), (1, 6)])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (2.5, -0.5)])
def test_gemm_with_one_output_row_or_column(dtype, trans_a, trans_b, m, n,
                                            alpha, beta):
    # These go to GEMV, whose vector strides are the matrices' row strides:
    # every operand is cut from a larger array, and C's other elements and
    # a NaN in C (beta = 0) must not show.
    rng = np.random.default_rng(5)
    k = 5
    A = _random(rng, (12, 14), dtype)[1 : 1 + (k if trans_a else m),
                                      2 : 2 + (m if trans_a else k)]
    B = _random(rng, (11, 13), dtype)[3 : 3 + (n if trans_b else k),
                                      1 : 1 + (k if trans_b else n)]
    C_big = _random(rng, (9, 10), dtype)
    C = C_big[1 : 1 + m, 2 : 2 + n]
    if beta == 0:
        C[...] = np.nan
    op_A = A.T if trans_a else A
    op_B = B.T if trans_b else B
    expected_big = C_big.astype(np.float64)
    expected_big[1 : 1 + m, 2 : 2 + n] = (
        alpha * op_A.astype(np.float64) @ op_B
        + (beta * C.astype(np.float64) if beta else 0.0)
    )

    _gemm_memview(trans_a, trans_b, alpha, A, B, beta, C)
    np.testing.assert_allclose(C_big, expected_big, rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_nan_in_c(dtype):
    # BLAS does not read C when beta == 0, so garbage (np.empty) is fine.
    rng = np.random.default_rng(3)
    A = _random(rng, (4, 3), dtype)
    B = _random(rng, (3, 2), dtype)
    C = np.full((4, 2), np.nan, dtype=dtype)
    _gemm_memview(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_read_only_operands(dtype):
    rng = np.random.default_rng(4)
    A = _random(rng, (4, 3), dtype)
    B = _random(rng, (3, 2), dtype)
    A.flags.writeable = False
    B.flags.writeable = False
    C = np.zeros((4, 2), dtype=dtype)
    _gemm_memview(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B, rtol=RTOL[dtype])


def test_gemm_shape_mismatch():
    A = np.ones((3, 4))
    B = np.ones((5, 2))
    C = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shapes do not match"):
        _gemm_memview(False, False, 1.0, A, B, 0.0, C)


def test_gemm_rejects_non_contiguous_rows():
    A = np.ones((3, 8))[:, ::2]
    B = np.ones((4, 2))
    C = np.zeros((3, 2))
    with pytest.raises(ValueError, match="contiguous rows"):
        _gemm_memview(False, False, 1.0, A, B, 0.0, C)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step_x, step_y", [(1, 1), (2, 3)])
def test_axpy(dtype, step_x, step_y):
    rng = np.random.default_rng(5)
    x = _random(rng, 7 * step_x, dtype)[::step_x]
    y_full = _random(rng, 7 * step_y, dtype)
    y = y_full[::step_y]
    expected = y_full.copy()
    expected[::step_y] = -1.5 * x + y

    _axpy_memview(-1.5, x, y)
    np.testing.assert_allclose(y_full, expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step", [1, 2])
def test_scal(dtype, step):
    rng = np.random.default_rng(6)
    x_full = _random(rng, 6 * step, dtype)
    expected = x_full.copy()
    expected[::step] *= 0.25

    _scal_memview(0.25, x_full[::step])
    np.testing.assert_allclose(x_full, expected, rtol=RTOL[dtype])
