"""The update rules of the optimizers, on hand-computed cases."""

import numpy as np
import pytest

from sklstm._optimizers import SGD, Adam, clip_by_global_norm


def test_sgd_without_momentum_is_plain_gradient_descent():
    params = np.array([1.0, -2.0])
    SGD(2, np.float64, learning_rate=0.1, momentum=0.0, nesterov=False).update(
        params, np.array([0.5, -1.0])
    )
    np.testing.assert_allclose(params, [0.95, -1.9])


def test_sgd_momentum_accumulates_velocity():
    params = np.zeros(1)
    optimizer = SGD(1, np.float64, learning_rate=0.1, momentum=0.9, nesterov=False)
    optimizer.update(params, np.array([1.0]))  # v = -0.1
    optimizer.update(params, np.array([1.0]))  # v = -0.09 - 0.1 = -0.19
    np.testing.assert_allclose(params, [-0.29])


def test_sgd_nesterov_looks_ahead():
    params = np.zeros(1)
    optimizer = SGD(1, np.float64, learning_rate=0.1, momentum=0.9, nesterov=True)
    optimizer.update(params, np.array([1.0]))
    # v = -0.1; update = 0.9 * v - 0.1 * g = -0.19
    np.testing.assert_allclose(params, [-0.19])


def test_adam_first_step_moves_by_learning_rate():
    """With bias correction, Adam's first step is lr * sign(grad)."""
    params = np.array([1.0, 1.0])
    Adam(2, np.float64, learning_rate=0.01).update(params, np.array([3.0, -0.2]))
    np.testing.assert_allclose(params, [0.99, 1.01], rtol=1e-6)


def test_adam_second_step_matches_formula():
    lr, beta_1, beta_2, eps = 0.1, 0.9, 0.999, 1e-8
    params = np.array([0.0])
    optimizer = Adam(1, np.float64, lr, beta_1, beta_2, eps)
    optimizer.update(params, np.array([1.0]))
    optimizer.update(params, np.array([-2.0]))
    m1, v1 = (1 - beta_1) * 1.0, (1 - beta_2) * 1.0
    first = lr * np.sqrt(1 - beta_2) / (1 - beta_1) * m1 / (np.sqrt(v1) + eps)
    m2, v2 = beta_1 * m1 + (1 - beta_1) * -2.0, beta_2 * v1 + (1 - beta_2) * 4.0
    second = lr * np.sqrt(1 - beta_2**2) / (1 - beta_1**2) * m2 / (np.sqrt(v2) + eps)
    expected = -first - second
    np.testing.assert_allclose(params, [expected], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizers_keep_the_dtype(dtype):
    for optimizer in (SGD(3, dtype, 0.1), Adam(3, dtype, 0.1)):
        params = np.ones(3, dtype=dtype)
        optimizer.update(params, np.ones(3, dtype=dtype))
        assert params.dtype == dtype


def test_clip_by_global_norm():
    grad = np.array([3.0, 4.0])
    assert clip_by_global_norm(grad, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grad, [0.6, 0.8])
    grad = np.array([0.3, 0.4])
    clip_by_global_norm(grad, 1.0)
    np.testing.assert_allclose(grad, [0.3, 0.4])
    clip_by_global_norm(grad, None)
    np.testing.assert_allclose(grad, [0.3, 0.4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_fused_adam_matches_numpy_adam(dtype):
    """The Cython one-pass Adam step (what CPU fits use) computes what the
    NumPy step computes: moments in the dtype, the step in float64."""
    from sklstm._kernels._dispatch import adam_update

    rng = np.random.default_rng(0)
    n = 1000
    params = rng.standard_normal(n).astype(dtype)
    numpy_adam = Adam(n, dtype, 1e-2)
    fused_adam = Adam(n, dtype, 1e-2, fused_update=adam_update)
    expected, actual = params.copy(), params.copy()
    for step in range(20):
        grad = (rng.standard_normal(n) * 10.0 ** (step % 5 - 2)).astype(dtype)
        numpy_adam.update(expected, grad)
        fused_adam.update(actual, grad)
    # FMA contraction may round the moments once instead of twice.
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-13)
    np.testing.assert_allclose(actual, expected, **tol)
    np.testing.assert_allclose(fused_adam.m, numpy_adam.m, **tol)
    np.testing.assert_allclose(fused_adam.v, numpy_adam.v, **tol)
    with pytest.raises(ValueError, match="same length"):
        adam_update(actual, grad[:-1], fused_adam.m, fused_adam.v, beta_1=0.9,
                    beta_2=0.999, step_size=1e-3, epsilon=1e-8)
