"""Central finite differences of the whole network's loss, in float64."""

import numpy as np
import pytest

from sklstm._backends import get_backend
from sklstm._network import LSTMNetwork

LOSSES = ["squared_error", "softmax_log_loss", "logistic_log_loss"]


def _targets(loss, n_samples, n_outputs, rng):
    if loss == "squared_error":
        return rng.randn(n_samples, n_outputs)
    if loss == "softmax_log_loss":
        return np.eye(n_outputs)[rng.randint(0, n_outputs, n_samples)]
    return rng.randint(0, 2, (n_samples, n_outputs)).astype(float)


def _finite_difference_grad(loss_at, params, eps=1e-6):
    grad = np.empty_like(params)
    for index in range(params.size):
        step = np.zeros_like(params)
        step[index] = eps
        grad[index] = (loss_at(params + step) - loss_at(params - step)) / (2 * eps)
    return grad


def _assert_gradient_is_exact(network, backend, params, X, lengths, Y, weights):
    """The network's gradient of its loss (with L2) equals finite differences."""

    def loss_at(flat):
        return network.loss_and_grad(backend, flat, X, lengths, Y, weights,
                                     alpha=0.01)[0]

    _, grad = network.loss_and_grad(backend, params, X, lengths, Y, weights,
                                    alpha=0.01)
    expected = _finite_difference_grad(loss_at, params)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def _assert_input_gradient_is_exact(network, backend, params, X, lengths, Y,
                                    weights):
    """The gradient of a squared-error network's loss with respect to ``X``
    equals finite differences; returns it."""
    from sklstm._losses import squared_error

    def loss_at_input(X_flat):
        return network.loss_and_grad(
            backend, params, X_flat.reshape(X.shape), lengths, Y, weights
        )[0]

    raw, cache = network.forward(backend, params, X, lengths, training=True)
    _, draw = squared_error(Y, raw, weights)
    _, dX = network.backward(backend, params, draw, cache, return_input_grad=True)
    expected = _finite_difference_grad(loss_at_input, X.ravel()).reshape(X.shape)
    np.testing.assert_allclose(dX, expected, rtol=1e-6, atol=1e-8)
    return dX


@pytest.mark.parametrize("backend_name", ["reference", "cpu"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(
    "hidden_layer_sizes, bidirectional, lengths",
    [
        ((3,), False, [4, 4, 4]),
        ((3,), False, [5, 3, 3, 1]),
        ((3, 2), False, [5, 4, 2]),
        ((3,), True, [5, 3, 1]),
        ((2, 3), True, [4, 4, 2, 1]),
    ],
)
def test_network_gradient_matches_finite_differences(
    backend_name, loss, hidden_layer_sizes, bidirectional, lengths, rng
):
    backend = get_backend(backend_name)
    lengths = np.array(lengths, dtype=np.intp)
    n_outputs = 3
    network = LSTMNetwork(2, hidden_layer_sizes, n_outputs, bidirectional, loss)
    params = network.init_params(rng, np.float64)
    X = rng.randn(lengths[0], len(lengths), 2)
    for column, length in enumerate(lengths):
        X[length:, column] = 0.0
    Y = _targets(loss, len(lengths), n_outputs, rng)
    sample_weight = rng.uniform(0.5, 2.0, len(lengths))
    _assert_gradient_is_exact(network, backend, params, X, lengths, Y,
                              sample_weight)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("n_features", [2, 24])
def test_large_layer_gradient_matches_directional_finite_differences(
    bidirectional, n_features, rng
):
    """H = 70 in float64: W_hh (157 KiB) is past the sizes where forward and
    backward read the weights as packed panels rather than in place or
    through BLAS (see _small_gemm.h); with 24 features W_ih (54 KiB) is past
    L1, so dX goes to BLAS, and dW_ih to sklstm's TN kernel. With 20 000
    parameters, the gradient is checked along random directions v:
    grad . v against the central difference of the loss along v."""
    backend = get_backend("cpu")
    lengths = np.array([4, 3, 3, 1], dtype=np.intp)
    network = LSTMNetwork(n_features, (70,), 2, bidirectional, "squared_error")
    params = network.init_params(rng, np.float64)
    X = rng.randn(lengths[0], len(lengths), n_features)
    for column, length in enumerate(lengths):
        X[length:, column] = 0.0
    Y = rng.randn(len(lengths), 2)
    weights = rng.uniform(0.5, 2.0, len(lengths))

    def loss_at(flat):
        return network.loss_and_grad(backend, flat, X, lengths, Y, weights,
                                     alpha=0.01)[0]

    _, grad = network.loss_and_grad(backend, params, X, lengths, Y, weights,
                                    alpha=0.01)
    eps = 1e-6
    for _ in range(6):
        direction = rng.randn(params.size)
        expected = (loss_at(params + eps * direction)
                    - loss_at(params - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(grad @ direction, expected, rtol=1e-6,
                                   atol=1e-9)


def test_wide_input_gradients_match_finite_differences(rng):
    """Nine input features: dW_ih runs in sklstm's TN kernel (from one
    vector of features) and dX in its NN kernel; parameter and input
    gradients against finite differences, variable lengths."""
    backend = get_backend("cpu")
    lengths = np.array([5, 3, 3, 1], dtype=np.intp)
    network = LSTMNetwork(9, (3,), 1, True, "squared_error")
    params = network.init_params(rng, np.float64)
    X = rng.randn(lengths[0], len(lengths), 9)
    for column, length in enumerate(lengths):
        X[length:, column] = 0.0
    Y = rng.randn(len(lengths), 1)
    weights = rng.uniform(0.5, 2.0, len(lengths))
    _assert_gradient_is_exact(network, backend, params, X, lengths, Y, weights)
    _assert_input_gradient_is_exact(network, backend, params, X, lengths, Y,
                                    weights)


@pytest.mark.parametrize("backend_name", ["reference", "cpu"])
def test_gradient_with_dropout_matches_finite_differences(backend_name, rng):
    """With the dropout mask held fixed, the gradient is exact too."""
    backend = get_backend(backend_name)
    network = LSTMNetwork(2, (3, 3), 1, True, "squared_error")
    params = network.init_params(rng, np.float64)
    lengths = np.array([4, 3, 2], dtype=np.intp)
    X = rng.randn(4, 3, 2)
    Y = rng.randn(3, 1)
    weights = np.ones(3)

    def loss_and_grad(flat):
        return network.loss_and_grad(
            backend, flat, X, lengths, Y, weights, dropout=0.4,
            random_state=np.random.RandomState(7),
        )

    _, grad = loss_and_grad(params)
    expected = _finite_difference_grad(lambda flat: loss_and_grad(flat)[0], params)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def test_input_gradient_matches_finite_differences(rng):
    backend = get_backend("cpu")
    network = LSTMNetwork(2, (3,), 2, True, "squared_error")
    params = network.init_params(rng, np.float64)
    lengths = np.array([3, 3, 1], dtype=np.intp)
    X = rng.randn(3, 3, 2)
    X[1:, 2] = 0.0
    Y = rng.randn(3, 2)
    weights = np.ones(3)
    dX = _assert_input_gradient_is_exact(network, backend, params, X, lengths,
                                         Y, weights)
    assert np.all(dX[1:, 2] == 0.0), "padding must get no gradient"


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_univariate_input_gradients_match_finite_differences(bidirectional, rng):
    """One input feature: the kernels' dX and dW_ih are then matrix-vector
    products (GEMV), in each direction, with variable lengths."""
    backend = get_backend("cpu")
    network = LSTMNetwork(1, (3,), 2, bidirectional, "squared_error")
    params = network.init_params(rng, np.float64)
    lengths = np.array([4, 3, 1], dtype=np.intp)
    X = rng.randn(4, 3, 1)
    for column, length in enumerate(lengths):
        X[length:, column] = 0.0
    Y = rng.randn(3, 2)
    weights = rng.uniform(0.5, 2.0, 3)
    _assert_gradient_is_exact(network, backend, params, X, lengths, Y, weights)
    _assert_input_gradient_is_exact(network, backend, params, X, lengths, Y,
                                    weights)


@pytest.mark.parametrize("backend_name", ["reference", "cpu"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("hidden_layer_sizes, bidirectional",
                         [((3,), False), ((2, 3), True)])
def test_sequence_output_gradient_matches_finite_differences(
    backend_name, loss, hidden_layer_sizes, bidirectional, rng
):
    """A per-timestep head and loss; padding targets must not matter."""
    backend = get_backend(backend_name)
    lengths = np.array([5, 3, 3, 1], dtype=np.intp)
    network = LSTMNetwork(2, hidden_layer_sizes, 3, bidirectional, loss,
                          output="sequence")
    params = network.init_params(rng, np.float64)
    X = rng.randn(5, 4, 2)
    Y = _targets(loss, 5 * 4, 3, rng).reshape(5, 4, 3)
    padding = np.arange(5)[:, None] >= lengths
    X[padding] = 0.0
    Y[padding] = 1e6  # ignored
    weights = rng.uniform(0.5, 2.0, (5, 4))
    _assert_gradient_is_exact(network, backend, params, X, lengths, Y, weights)


@pytest.mark.parametrize("backend_name", ["reference", "cpu"])
@pytest.mark.parametrize("output", ["last", "sequence"])
@pytest.mark.parametrize("hidden_layer_sizes, bidirectional",
                         [((4,), False), ((4, 3), True)])
def test_projection_gradient_matches_finite_differences(
    backend_name, output, hidden_layer_sizes, bidirectional, rng
):
    """proj_size: h_t = (o * tanh(c_t)) @ W_hr.T, W_hr trained too."""
    backend = get_backend(backend_name)
    lengths = np.array([5, 4, 2, 1], dtype=np.intp)
    network = LSTMNetwork(2, hidden_layer_sizes, 2, bidirectional,
                          "squared_error", output=output, proj_size=2)
    params = network.init_params(rng, np.float64)
    X = rng.randn(5, 4, 2)
    X[np.arange(5)[:, None] >= lengths] = 0.0
    if output == "sequence":
        Y, weights = rng.randn(5, 4, 2), rng.uniform(0.5, 2.0, (5, 4))
    else:
        Y, weights = rng.randn(4, 2), rng.uniform(0.5, 2.0, 4)
    _assert_gradient_is_exact(network, backend, params, X, lengths, Y, weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_log_loss_matches_scipy_at_any_scale(dtype):
    """The NumPy softmax cross-entropy (one exp for both log_softmax and
    softmax) gives SciPy's loss and softmax - y, also for logits whose exp
    overflows; a non-finite logit gives a non-finite loss (a diverged fit)."""
    from scipy.special import log_softmax, softmax

    from sklstm._losses import softmax_log_loss

    rng = np.random.RandomState(0)
    weights = rng.uniform(0.5, 2, 9).astype(dtype)
    Y = _targets("softmax_log_loss", 9, 4, rng).astype(dtype)
    for scale in (1.0, 1e4):
        raw = (scale * rng.randn(9, 4)).astype(dtype)
        loss, draw = softmax_log_loss(Y, raw.copy(), weights)
        per_sample = -(Y * log_softmax(raw, axis=1)).sum(axis=1)
        expected = np.dot(weights, per_sample) / weights.sum()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, expected, rtol=rtol)
        np.testing.assert_allclose(
            draw, (softmax(raw, axis=1) - Y) * (weights / weights.sum())[:, None],
            rtol=rtol, atol=1e-7 if dtype == np.float32 else 1e-15)
    raw[2, 1] = np.inf
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(softmax_log_loss(Y, raw, weights)[0])
