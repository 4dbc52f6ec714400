"""The compiled head, loss and L2 penalty (``sklstm/_kernels/_head.pyx``)
against the array-module version every backend inherits (NumPy here), and
against finite differences."""

import numpy as np
import pytest

from sklstm._backends._cpu import CPUBackend, specialised
from sklstm._backends._reference import ReferenceBackend
from sklstm._kernels import _head

LOSSES = list(_head.LOSS_CODES)


def _targets(loss, n_rows, n_outputs, rng):
    if loss == "squared_error":
        return rng.standard_normal((n_rows, n_outputs))
    if loss == "softmax_log_loss":
        return np.eye(n_outputs)[rng.integers(0, n_outputs, n_rows)]
    return rng.integers(0, 2, (n_rows, n_outputs)).astype(float)


def _problem(loss, n_rows, width, n_outputs, dtype, seed=0, scale=1.0,
             unit_weights=False):
    rng = np.random.default_rng(seed)
    head_input = rng.standard_normal((n_rows, width)).astype(dtype)
    W_out = (scale * rng.standard_normal((n_outputs, width))).astype(dtype)
    b_out = rng.standard_normal(n_outputs).astype(dtype)
    Y = _targets(loss, n_rows, n_outputs, rng).astype(dtype)
    weight = (np.ones(n_rows) if unit_weights
              else rng.uniform(0.2, 3.0, n_rows)).astype(dtype)
    return head_input, W_out, b_out, Y, weight


def _head_grads(backend, loss, head_input, W_out, b_out, Y, weight):
    dW_out = np.full_like(W_out, np.nan)  # every element must be written
    db_out = np.full_like(b_out, np.nan)
    value, dhead_input = backend.head_loss_and_grad(
        head_input, W_out, b_out, Y, weight, loss, dW_out, db_out)
    return float(value), dW_out, db_out, dhead_input


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_rows, width, n_outputs",
                         [(32, 32, 1), (7, 5, 3), (1, 4, 2), (5, 1, 1), (64, 20, 10)])
@pytest.mark.parametrize("unit_weights", [False, True], ids=["weighted", "unit"])
def test_compiled_head_matches_the_numpy_one(loss, n_rows, width, n_outputs,
                                             dtype, unit_weights):
    args = _problem(loss, n_rows, width, n_outputs, dtype, unit_weights=unit_weights)
    compiled = _head_grads(CPUBackend(), loss, *args)
    expected = _head_grads(ReferenceBackend(), loss, *args)
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    np.testing.assert_allclose(compiled[0], expected[0], rtol=rtol)
    for got, want in zip(compiled[1:], expected[1:]):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("loss", LOSSES)
def test_compiled_head_gradients_match_finite_differences(loss):
    head_input, W_out, b_out, Y, weight = _problem(loss, 6, 4, 3, np.float64, seed=1)
    backend = CPUBackend()
    _, dW_out, db_out, dhead_input = _head_grads(backend, loss, head_input, W_out,
                                                 b_out, Y, weight)

    def loss_at(head_input, W_out, b_out):
        return _head_grads(backend, loss, head_input, W_out, b_out, Y, weight)[0]

    for position, grad in enumerate([dhead_input, dW_out, db_out]):
        args = [head_input, W_out, b_out]
        expected = np.empty_like(grad)
        for index in np.ndindex(grad.shape):
            shifted = [a.copy() for a in args]
            shifted[position][index] += 1e-6
            up = loss_at(*shifted)
            shifted[position][index] -= 2e-6
            expected[index] = (up - loss_at(*shifted)) / 2e-6
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["softmax_log_loss", "logistic_log_loss"])
def test_log_losses_stay_finite_for_huge_logits(loss, dtype):
    """Logits whose exp overflows still give the exact loss and gradient
    (computed here in float64 from the same logits)."""
    head_input, W_out, b_out, Y, weight = _problem(loss, 9, 4, 3, dtype, seed=2,
                                                   scale=1e4)
    value, _, db_out, _ = _head_grads(CPUBackend(), loss, head_input, W_out,
                                      b_out, Y, weight)
    raw = head_input.astype(float) @ W_out.T.astype(float) + b_out
    if loss == "softmax_log_loss":
        log_p = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
        per_row = -(Y * log_p).sum(axis=1)
        draw = np.exp(log_p) - Y
    else:
        per_row = (np.logaddexp(0, raw) - Y * raw).sum(axis=1)
        draw = 0.5 * (1 + np.tanh(0.5 * raw)) - Y
    w = weight.astype(float)
    assert np.isfinite(value)
    # In float32 the logits themselves carry rounding of ~1e4 * 6e-8.
    rtol = 1e-3 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(value, np.dot(w, per_row) / w.sum(), rtol=rtol)
    np.testing.assert_allclose(db_out, (draw * (w / w.sum())[:, None]).sum(axis=0),
                               rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_non_finite_head_output_gives_a_non_finite_loss(loss):
    """A diverged fit is caught by its loss: NaN or inf in the head's input
    must not come out as a finite loss."""
    head_input, W_out, b_out, Y, weight = _problem(loss, 5, 3, 2, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        head_input[3, 1] = bad
        value = _head_grads(CPUBackend(), loss, head_input, W_out, b_out, Y,
                            weight)[0]
        assert not np.isfinite(value)


def test_compiled_head_rejects_mismatched_shapes_and_unknown_losses():
    head_input, W_out, b_out, Y, weight = _problem("squared_error", 4, 3, 2,
                                                   np.float64)
    kernel = specialised(_head.head_loss_and_grad, np.float64)
    draw, dW_out = np.empty_like(Y), np.empty_like(W_out)
    db_out, dhead_input = np.empty_like(b_out), np.empty_like(head_input)
    with pytest.raises(ValueError, match="shapes do not match"):
        kernel(head_input, W_out, b_out, Y[:3], weight, 0, draw, dW_out, db_out,
               dhead_input)
    with pytest.raises(ValueError, match="shapes do not match"):
        kernel(head_input, W_out[:, :2].copy(), b_out, Y, weight, 0, draw, dW_out,
               db_out, dhead_input)
    with pytest.raises(ValueError, match="shapes do not match"):
        kernel(head_input, W_out, b_out, Y, weight, 0, draw, dW_out, db_out,
               dhead_input[:, :2].copy())
    with pytest.raises(ValueError, match="loss must be one of"):
        kernel(head_input, W_out, b_out, Y, weight, 7, draw, dW_out, db_out,
               dhead_input)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_params", [1, 3, 4, 5, 4461])
def test_compiled_l2_penalty_matches_the_numpy_one(n_params, dtype):
    rng = np.random.default_rng(n_params)
    params = rng.standard_normal(n_params).astype(dtype)
    mask = (rng.random(n_params) < 0.8).astype(dtype)
    start = rng.standard_normal(n_params).astype(dtype)
    got, want = start.copy(), start.copy()
    penalty = CPUBackend().add_l2_penalty(params, mask, 0.3, 7, got)
    expected = ReferenceBackend().add_l2_penalty(params, mask, 0.3, 7, want)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(penalty, expected, rtol=rtol)
    np.testing.assert_allclose(penalty, 0.5 * 0.3 * np.sum(
        (params.astype(float) * mask) ** 2) / 7, rtol=rtol)
    # Each element of the gradient is one product and one sum either way.
    np.testing.assert_array_equal(got, want)
    # A boolean mask (LSTMNetwork.weight_mask()) means the same.
    again = start.copy()
    assert CPUBackend().add_l2_penalty(params, mask.astype(bool), 0.3, 7,
                                       again) == penalty
    np.testing.assert_array_equal(again, got)


def test_compiled_l2_penalty_rejects_bad_arguments():
    kernel = specialised(_head.add_l2_penalty, np.float64)
    params = np.ones(5)
    with pytest.raises(ValueError, match="same length"):
        kernel(params, np.ones(4), 0.1, 3, np.zeros(5))
    with pytest.raises(ValueError, match="n_samples must be positive"):
        kernel(params, np.ones(5), 0.1, 0, np.zeros(5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_minibatch_of_zero_weights_has_zero_loss_and_gradient(loss, dtype):
    """Zero-weight samples all in one minibatch (many of them, or sorted and
    not shuffled) count for nothing: 0, not 0 / 0 (a NaN that stopped the
    fit as diverged), on both versions."""
    head_input, W_out, b_out, Y, _ = _problem(loss, 6, 4, 3, dtype)
    weight = np.zeros(6, dtype)
    for backend in (CPUBackend(), ReferenceBackend()):
        value, dW_out, db_out, dhead_input = _head_grads(
            backend, loss, head_input, W_out, b_out, Y, weight)
        assert value == 0
        for grad in (dW_out, db_out, dhead_input):
            assert not np.any(grad)
