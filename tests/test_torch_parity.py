"""Parity with PyTorch's ``nn.LSTM``: forward values and autograd gradients.

Three levels:

1. one layer-direction of a backend against a one-layer ``nn.LSTM`` (the
   reverse direction against the reverse half of a bidirectional one);
2. the whole :class:`LSTMNetwork` (flat buffer, stacked layers, head, loss)
   against ``nn.LSTM`` + ``nn.Linear`` on the last valid hidden state, every
   parameter gradient key by key and the input gradient;
3. fitted estimators: ``to_torch_state_dict()`` loaded into PyTorch predicts
   what ``predict``/``predict_proba`` return.

Variable lengths go through ``pack_padded_sequence``, so PyTorch never sees
the padding: any leak of padding into our results shows up as a mismatch.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.special import expit  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from sklstm import LSTMClassifier, LSTMRegressor  # noqa: E402
from sklstm._backends import get_backend  # noqa: E402
from sklstm._losses import LOSSES  # noqa: E402
from sklstm._network import LSTMNetwork  # noqa: E402


def _cpu_backend_available():
    try:
        import sklstm._kernels._lstm_fast  # noqa: F401

        import sklstm._backends._cpu  # noqa: F401
    except ImportError:
        return False
    return True


requires_cpu = pytest.mark.skipif(
    not _cpu_backend_available(),
    reason="the Cython CPU backend (sklstm._kernels._lstm_fast) is not built",
)

BACKENDS = ["reference", pytest.param("cpu", marks=requires_cpu)]
DTYPES = [np.float64, np.float32]
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}
TOL = {
    np.float64: dict(rtol=1e-9, atol=1e-12),
    np.float32: dict(rtol=1e-4, atol=1e-5),
}
LOSS_NAMES = ["squared_error", "softmax_log_loss", "logistic_log_loss"]


# --------------------------------------------------------------------- helpers
def _torch_key(name):
    """Key of our state-dict entry ``name`` in a :class:`_TorchModel`."""
    return name if name.startswith("head.") else "lstm." + name


def _tensor(array, torch_dtype, requires_grad=False):
    tensor = torch.tensor(np.asarray(array), dtype=torch_dtype)
    return tensor.requires_grad_(requires_grad)


def _run_lstm(lstm, X, lengths, packed):
    """Run ``nn.LSTM``; return the padded output, ``h_n`` and ``c_n``.

    ``X`` is time-major unless ``lstm.batch_first``. With ``packed`` the input
    goes through ``pack_padded_sequence`` so padding is never read.
    """
    if not packed:
        out, (h_n, c_n) = lstm(X)
        return out, h_n, c_n
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    sorted_ = bool(np.all(np.diff(lengths.numpy()) <= 0))
    sequence = pack_padded_sequence(
        X, lengths, batch_first=lstm.batch_first, enforce_sorted=sorted_
    )
    out, (h_n, c_n) = lstm(sequence)
    total_length = X.shape[1] if lstm.batch_first else X.shape[0]
    out, _ = pad_packed_sequence(
        out, batch_first=lstm.batch_first, total_length=total_length
    )
    return out, h_n, c_n


class _TorchModel(nn.Module):
    """``nn.LSTM`` + ``nn.Linear`` on the last valid hidden state.

    The head reads the last layer's ``h_n``: the forward direction's state at
    ``t = length - 1``, concatenated with the reverse direction's at ``t = 0``
    when bidirectional, which is what ``LSTMNetwork`` documents.
    """

    def __init__(self, n_features, n_units, n_layers, n_outputs, bidirectional,
                 torch_dtype, batch_first=False):
        super().__init__()
        self.n_directions = 2 if bidirectional else 1
        self.lstm = nn.LSTM(
            n_features, n_units, num_layers=n_layers, bidirectional=bidirectional,
            batch_first=batch_first, dtype=torch_dtype,
        )
        self.head = nn.Linear(self.n_directions * n_units, n_outputs,
                              dtype=torch_dtype)

    def forward(self, X, lengths):
        _, h_n, _ = _run_lstm(self.lstm, X, lengths, packed=True)
        h_last = torch.cat(list(h_n[-self.n_directions:]), dim=1)
        return self.head(h_last)


def _torch_model_from_state_dict(state_dict, n_features, n_units, n_layers,
                                 n_outputs, bidirectional, torch_dtype,
                                 batch_first=False):
    """A :class:`_TorchModel` holding our weights; ``strict`` loading checks
    that our keys and shapes are exactly PyTorch's."""
    model = _TorchModel(n_features, n_units, n_layers, n_outputs, bidirectional,
                        torch_dtype, batch_first)
    model.load_state_dict(
        {_torch_key(name): _tensor(value, torch_dtype)
         for name, value in state_dict.items()},
        strict=True,
    )
    return model


def _random_inputs(rng, lengths, n_features, dtype):
    """Time-major ``X`` whose padding holds large garbage, never read."""
    lengths = np.asarray(lengths, dtype=np.intp)
    X = rng.randn(lengths[0], len(lengths), n_features)
    padding = np.arange(lengths[0])[:, np.newaxis] >= lengths[np.newaxis, :]
    X[padding] = 1e3
    return np.ascontiguousarray(X.astype(dtype)), lengths, padding


def _targets(loss, rng, n_samples, n_outputs):
    if loss == "squared_error":
        return rng.randn(n_samples, n_outputs)
    if loss == "softmax_log_loss":
        return np.eye(n_outputs)[rng.randint(0, n_outputs, n_samples)]
    return rng.randint(0, 2, (n_samples, n_outputs)).astype(float)


def _torch_loss(loss, raw, Y, sample_weight):
    """Weighted mean loss written with PyTorch's own loss functions."""
    if loss == "squared_error":
        per_sample = 0.5 * ((raw - Y) ** 2).sum(dim=1)
    elif loss == "softmax_log_loss":
        per_sample = F.cross_entropy(raw, Y.argmax(dim=1), reduction="none")
    else:
        per_sample = F.binary_cross_entropy_with_logits(
            raw, Y, reduction="none"
        ).sum(dim=1)
    return (sample_weight * per_sample).sum() / sample_weight.sum()


# ----------------------------------------------- 1. one layer-direction kernel
LENGTH_CASES = {
    "equal": [5, 5, 5, 5],
    "variable": [5, 4, 4, 2, 1],
}


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("length_case", list(LENGTH_CASES))
# One feature makes the kernels' dX and dW_ih matrix-vector products (GEMV);
# nine take dW_ih into sklstm's TN kernel (from one vector of features).
@pytest.mark.parametrize("n_features", [1, 3, 9])
def test_layer_direction_matches_torch(backend_name, dtype, reverse, length_case,
                                       n_features):
    _check_layer_direction(backend_name, dtype, reverse, length_case,
                           n_features, n_units=4)


@requires_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
# 24 features: W_ih (36 KiB in float32) past L1, so dX goes to BLAS.
@pytest.mark.parametrize("n_features", [3, 24])
def test_large_layer_direction_matches_torch(dtype, reverse, n_features):
    # H = 96: W_hh (147 KiB in float32) is past the sizes where forward and
    # backward read the weights as packed panels rather than in place or
    # through BLAS (see _small_gemm.h).
    _check_layer_direction("cpu", dtype, reverse, "variable", n_features,
                           n_units=96)


@pytest.mark.skipif(not _cpu_backend_available(), reason="Cython kernels not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_parts", [2, 3])
def test_backward_by_row_blocks_matches_torch(dtype, n_parts):
    """The backward cut into row blocks, each summing its own rows' weight
    gradients chunk by chunk (asked for here: which path a fit takes
    depends on the build and the sizes), against torch.nn.LSTM."""
    from sklstm._kernels._dispatch import kernels

    torch_dtype, tol = TORCH_DTYPES[dtype], TOL[dtype]
    rng = np.random.RandomState(3)
    lengths = np.sort(rng.randint(1, 12, size=40))[::-1].copy()
    lengths[0] = 11
    n_features, H = 5, 16
    X, lengths, padding = _random_inputs(rng, lengths, n_features, dtype)
    T, B = X.shape[:2]
    lstm = nn.LSTM(n_features, H, dtype=torch_dtype)
    state = {name: rng.uniform(-1, 1, tuple(param.shape))
             for name, param in lstm.state_dict().items()}
    lstm.load_state_dict({name: _tensor(value, torch_dtype)
                          for name, value in state.items()})
    W_ih, W_hh = (np.ascontiguousarray(state[name].astype(dtype))
                  for name in ("weight_ih_l0", "weight_hh_l0"))
    bias = (state["bias_ih_l0"] + state["bias_hh_l0"]).astype(dtype)

    G = 4 * H
    gates, cells = np.empty((T, B, G), dtype), np.empty((T, B, H), dtype)
    hidden, h_n, c_n = (np.empty((T, B, H), dtype), np.empty((B, H), dtype),
                        np.empty((B, H), dtype))
    kernels.lstm_forward(X, lengths, W_ih, W_hh, bias, False, True, gates, cells,
                         hidden, h_n, c_n, np.empty((B, G), dtype), n_parts,
                         n_parts=n_parts)
    dhidden = rng.randn(T, B, H)
    dhidden[padding] = 0.0
    dhidden = np.ascontiguousarray(dhidden.astype(dtype))
    dX, dW_ih, dW_hh, dbias = (np.empty(X.shape, dtype), np.empty_like(W_ih),
                               np.empty_like(W_hh), np.empty(G, dtype))
    size = kernels.weight_grad_workspace_size(G, n_features, H, n_parts,
                                              np.dtype(dtype).itemsize)
    kernels.lstm_backward(
        X, lengths, W_ih, W_hh, False, gates, cells, hidden, dhidden, dX, dW_ih,
        dW_hh, dbias, gates, np.empty((B, G), dtype), np.empty((B, H), dtype),
        np.empty((B, H), dtype), n_parts, n_parts=n_parts, chunked_grads=1,
        own_weight_grads=1, weight_grad_work=np.full(size, np.nan, dtype),
    )

    X_t = _tensor(X, torch_dtype, requires_grad=True)
    out_t, h_n_t, _ = _run_lstm(lstm, X_t, lengths, packed=True)
    np.testing.assert_allclose(hidden, out_t.detach().numpy(), **tol)
    (out_t * _tensor(dhidden, torch_dtype)).sum().backward()
    params = dict(lstm.named_parameters())
    np.testing.assert_allclose(dX, X_t.grad.numpy(), **tol)
    np.testing.assert_allclose(dW_ih, params["weight_ih_l0"].grad.numpy(), **tol)
    np.testing.assert_allclose(dW_hh, params["weight_hh_l0"].grad.numpy(), **tol)
    np.testing.assert_allclose(dbias, params["bias_ih_l0"].grad.numpy(), **tol)


def _check_layer_direction(backend_name, dtype, reverse, length_case,
                           n_features, n_units):
    """One layer-direction's forward (training and inference) and backward
    against torch.nn.LSTM with the same weights."""
    backend = get_backend(backend_name)
    torch_dtype = TORCH_DTYPES[dtype]
    tol = TOL[dtype]
    rng = np.random.RandomState(0)
    X, lengths, padding = _random_inputs(
        rng, LENGTH_CASES[length_case], n_features, dtype
    )
    n_steps, n_seq = X.shape[:2]
    packed = length_case == "variable"

    lstm = nn.LSTM(n_features, n_units, bidirectional=reverse, dtype=torch_dtype)
    suffix = "_l0_reverse" if reverse else "_l0"
    state = {name: rng.uniform(-1, 1, tuple(param.shape))
             for name, param in lstm.state_dict().items()}
    lstm.load_state_dict({name: _tensor(value, torch_dtype)
                          for name, value in state.items()})
    W_ih, W_hh, b_ih, b_hh = (
        np.ascontiguousarray(state[name + suffix].astype(dtype))
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    bias = b_ih + b_hh

    # Forward, in training and inference mode.
    hidden, h_n, c_n, cache = backend.forward(
        X, lengths, W_ih, W_hh, bias, reverse=reverse, training=True
    )
    X_t = _tensor(X, torch_dtype, requires_grad=True)
    out_t, h_n_t, c_n_t = _run_lstm(lstm, X_t, lengths, packed)
    half = slice(n_units, 2 * n_units) if reverse else slice(0, n_units)
    direction = 1 if reverse else 0
    np.testing.assert_allclose(hidden, out_t[:, :, half].detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, h_n_t[direction].detach().numpy(), **tol)
    np.testing.assert_allclose(c_n, c_n_t[direction].detach().numpy(), **tol)
    assert not hidden[padding].any()

    hidden_inf, h_n_inf, c_n_inf, cache_inf = backend.forward(
        X, lengths, W_ih, W_hh, bias, reverse=reverse, training=False
    )
    assert cache_inf is None
    np.testing.assert_allclose(hidden_inf, hidden, **tol)
    np.testing.assert_allclose(h_n_inf, h_n, **tol)
    np.testing.assert_allclose(c_n_inf, c_n, **tol)

    # Backward of a random upstream gradient, zero on padding.
    dhidden = rng.randn(n_steps, n_seq, n_units)
    dhidden[padding] = 0.0
    dhidden = np.ascontiguousarray(dhidden.astype(dtype))
    (out_t[:, :, half] * _tensor(dhidden, torch_dtype)).sum().backward()
    dX, dW_ih, dW_hh, dbias = backend.backward(dhidden, cache)
    params = dict(lstm.named_parameters())
    np.testing.assert_allclose(dX, X_t.grad.numpy(), **tol)
    assert not dX[padding].any()
    np.testing.assert_allclose(dW_ih, params["weight_ih" + suffix].grad.numpy(), **tol)
    np.testing.assert_allclose(dW_hh, params["weight_hh" + suffix].grad.numpy(), **tol)
    np.testing.assert_allclose(dbias, params["bias_ih" + suffix].grad.numpy(), **tol)
    np.testing.assert_allclose(dbias, params["bias_hh" + suffix].grad.numpy(), **tol)


# ------------------------------------------- 2. whole network, flat parameters
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_network_matches_torch(backend_name, dtype, loss, n_layers, bidirectional):
    backend = get_backend(backend_name)
    torch_dtype = TORCH_DTYPES[dtype]
    tol = TOL[dtype]
    rng = np.random.RandomState(1)
    n_features, n_units, n_outputs = 3, 4, 3
    X, lengths, padding = _random_inputs(rng, [6, 5, 5, 3, 1], n_features, dtype)
    n_seq = X.shape[1]
    Y = _targets(loss, rng, n_seq, n_outputs).astype(dtype)
    # Non-uniform: a bug that drops the weights or their normalisation shows.
    sample_weight = rng.uniform(0.1, 3.0, n_seq).astype(dtype)

    network = LSTMNetwork(n_features, (n_units,) * n_layers, n_outputs,
                          bidirectional, loss)
    # Wider than the default initialisation, so the gates saturate unevenly.
    params = rng.uniform(-1.0, 1.0, network.n_params).astype(dtype)

    model = _torch_model_from_state_dict(
        network.to_state_dict(params), n_features, n_units, n_layers, n_outputs,
        bidirectional, torch_dtype,
    )
    X_t = _tensor(X, torch_dtype, requires_grad=True)
    raw_t = model(X_t, lengths)
    loss_t = _torch_loss(loss, raw_t, _tensor(Y, torch_dtype),
                         _tensor(sample_weight, torch_dtype))
    loss_t.backward()

    # Raw output.
    raw, _ = network.forward(backend, params, X, lengths)
    np.testing.assert_allclose(raw, raw_t.detach().numpy(), **tol)

    # Loss and every parameter gradient, key by key.
    loss_value, grad = network.loss_and_grad(
        backend, params, X, lengths, Y, sample_weight, alpha=0.0
    )
    assert grad.dtype == dtype
    np.testing.assert_allclose(loss_value, loss_t.item(), **tol)
    torch_params = dict(model.named_parameters())
    grads = network.to_state_dict(grad)
    assert {_torch_key(name) for name in grads} == set(torch_params)
    for name, value in grads.items():
        expected = torch_params[_torch_key(name)].grad.numpy()
        np.testing.assert_allclose(value, expected, err_msg=name, **tol)

    # Input gradient, through forward(training=True) and backward.
    raw_train, cache = network.forward(backend, params, X, lengths, training=True)
    np.testing.assert_allclose(raw_train, raw, **tol)
    _, draw = LOSSES[loss](Y, raw_train, sample_weight)
    grad_again, dX = network.backward(
        backend, params, draw.astype(dtype, copy=False), cache,
        return_input_grad=True,
    )
    np.testing.assert_allclose(grad_again, grad, **tol)
    np.testing.assert_allclose(dX, X_t.grad.numpy(), **tol)
    assert not dX[padding].any()


# ------------------------------------------------ 3. fitted estimators' weights
def _proba_binary(raw):
    return expit(raw[:, 0])


def _proba_softmax(raw):
    return torch.softmax(torch.from_numpy(raw), dim=1).numpy()


ESTIMATOR_CASES = {
    # name: (estimator, y from rng, prediction of the estimator, of raw torch)
    "regressor": (
        lambda: LSTMRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=0),
        lambda rng, n: rng.randn(n),
        lambda est, X: est.predict(X),
        lambda raw: raw[:, 0],
    ),
    "binary_classifier": (
        lambda: LSTMClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0),
        lambda rng, n: np.arange(n) % 2,
        lambda est, X: est.predict_proba(X)[:, 1],
        _proba_binary,
    ),
    "multiclass_classifier": (
        lambda: LSTMClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0),
        lambda rng, n: np.arange(n) % 3,
        lambda est, X: est.predict_proba(X),
        _proba_softmax,
    ),
    "bidirectional_2_layer_regressor": (
        lambda: LSTMRegressor(hidden_layer_sizes=(4, 4), bidirectional=True,
                              max_iter=3, random_state=0),
        lambda rng, n: rng.randn(n),
        lambda est, X: est.predict(X),
        lambda raw: raw[:, 0],
    ),
}


@requires_cpu
@pytest.mark.parametrize("case", list(ESTIMATOR_CASES))
def test_fitted_estimator_state_dict_predicts_like_torch(case):
    make_estimator, make_y, predict, from_raw = ESTIMATOR_CASES[case]
    rng = np.random.RandomState(2)
    n_samples, n_steps, n_features = 12, 6, 2
    X = rng.randn(n_samples, n_steps, n_features)
    # Some sequences end early: trailing all-NaN timesteps are padding.
    lengths = rng.randint(2, n_steps + 1, n_samples)
    lengths[0] = n_steps
    for sample, length in enumerate(lengths):
        X[sample, length:] = np.nan
    y = make_y(rng, n_samples)

    estimator = make_estimator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)

    n_layers = len(estimator.hidden_layer_sizes)
    n_units = estimator.hidden_layer_sizes[0]
    state_dict = estimator.to_torch_state_dict()
    n_outputs = state_dict["head.bias"].shape[0]
    model = _torch_model_from_state_dict(
        state_dict, n_features, n_units, n_layers, n_outputs,
        estimator.bidirectional, torch.float64, batch_first=True,
    )
    with torch.no_grad():
        # Unsorted lengths: pack_padded_sequence sorts and restores the order.
        raw_t = model(torch.from_numpy(np.nan_to_num(X, nan=0.0)), lengths).numpy()

    np.testing.assert_allclose(predict(estimator, X), from_raw(raw_t),
                               rtol=1e-9, atol=1e-12)


# ------------------------------------------- 4. per-timestep head and loss
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("n_layers, bidirectional", [(1, False), (2, True)])
def test_sequence_output_matches_torch(backend_name, dtype, loss, n_layers,
                                       bidirectional):
    """output="sequence": nn.Linear on every valid timestep of the packed
    output, the loss averaged over valid timesteps with per-timestep weights."""
    backend = get_backend(backend_name)
    torch_dtype, tol = TORCH_DTYPES[dtype], TOL[dtype]
    rng = np.random.RandomState(1)
    n_features, n_units, n_outputs = 3, 4, 3
    X, lengths, padding = _random_inputs(rng, [6, 5, 3, 3, 1], n_features, dtype)
    n_steps, n_seq = X.shape[:2]
    network = LSTMNetwork(n_features, (n_units,) * n_layers, n_outputs,
                          bidirectional, loss, output="sequence")
    flat = network.init_params(rng, dtype)
    Y = _targets(loss, rng, n_steps * n_seq, n_outputs).reshape(n_steps, n_seq, -1)
    Y = Y.astype(dtype)
    weights = rng.uniform(0.5, 2.0, (n_steps, n_seq)).astype(dtype)

    our_loss, grad = network.loss_and_grad(backend, flat, X, lengths, Y, weights)

    model = _torch_model_from_state_dict(
        network.to_state_dict(flat), n_features, n_units, n_layers, n_outputs,
        bidirectional, torch_dtype,
    )
    out, _, _ = _run_lstm(model.lstm, _tensor(X, torch_dtype), lengths, packed=True)
    raw = model.head(out)  # (T, B, n_outputs)
    valid = torch.as_tensor(~padding)
    torch_loss = _torch_loss(loss, raw[valid], _tensor(Y, torch_dtype)[valid],
                             _tensor(weights, torch_dtype)[valid])
    torch_loss.backward()

    np.testing.assert_allclose(our_loss, torch_loss.item(), **tol)
    our_grads = network.to_state_dict(grad)
    for name, param in model.named_parameters():
        key = name.removeprefix("lstm.")
        np.testing.assert_allclose(our_grads[key], param.grad.numpy(), **tol,
                                   err_msg=key)


# ------------------------------------------------------- 5. proj_size
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("output", ["last", "sequence"])
def test_projection_matches_torch(backend_name, dtype, n_layers, bidirectional,
                                  output):
    """proj_size: nn.LSTM(proj_size=P) outputs, h_n and every gradient."""
    backend = get_backend(backend_name)
    torch_dtype, tol = TORCH_DTYPES[dtype], TOL[dtype]
    rng = np.random.RandomState(2)
    n_features, n_units, proj_size, n_outputs = 3, 5, 2, 2
    X, lengths, padding = _random_inputs(rng, [6, 4, 4, 1], n_features, dtype)
    n_steps, n_seq = X.shape[:2]
    network = LSTMNetwork(n_features, (n_units,) * n_layers, n_outputs,
                          bidirectional, "squared_error", output=output,
                          proj_size=proj_size)
    flat = network.init_params(rng, dtype)
    if output == "sequence":
        Y = rng.randn(n_steps, n_seq, n_outputs).astype(dtype)
        weights = rng.uniform(0.5, 2.0, (n_steps, n_seq)).astype(dtype)
    else:
        Y = rng.randn(n_seq, n_outputs).astype(dtype)
        weights = rng.uniform(0.5, 2.0, n_seq).astype(dtype)
    our_loss, grad = network.loss_and_grad(backend, flat, X, lengths, Y, weights)

    lstm = nn.LSTM(n_features, n_units, num_layers=n_layers, proj_size=proj_size,
                   bidirectional=bidirectional, dtype=torch_dtype)
    head = nn.Linear(proj_size * (2 if bidirectional else 1), n_outputs,
                     dtype=torch_dtype)
    state = network.to_state_dict(flat)
    lstm.load_state_dict({name: _tensor(value, torch_dtype)
                          for name, value in state.items()
                          if not name.startswith("head.")}, strict=True)
    head.load_state_dict({"weight": _tensor(state["head.weight"], torch_dtype),
                          "bias": _tensor(state["head.bias"], torch_dtype)})
    out, h_n, _ = _run_lstm(lstm, _tensor(X, torch_dtype), lengths, packed=True)
    Y_t, w_t = _tensor(Y, torch_dtype), _tensor(weights, torch_dtype)
    if output == "sequence":
        valid = torch.as_tensor(~padding)
        raw, Y_t, w_t = head(out)[valid], Y_t[valid], w_t[valid]
    else:
        n_dirs = 2 if bidirectional else 1
        raw = head(torch.cat(list(h_n[-n_dirs:]), dim=1))
    torch_loss = _torch_loss("squared_error", raw, Y_t, w_t)
    torch_loss.backward()

    np.testing.assert_allclose(our_loss, torch_loss.item(), **tol)
    our_grads = network.to_state_dict(grad)
    for name, param in lstm.named_parameters():
        np.testing.assert_allclose(our_grads[name], param.grad.numpy(), **tol,
                                   err_msg=name)
    np.testing.assert_allclose(our_grads["head.weight"], head.weight.grad.numpy(),
                               **tol)


@requires_cpu
def test_fitted_projection_model_predicts_like_torch():
    """A fitted LSTMRegressor(proj_size=...) exported to nn.LSTM(proj_size=...)."""
    rng = np.random.RandomState(3)
    X = rng.randn(30, 7, 3)
    y = X[:, -1, 0] - X[:, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LSTMRegressor(hidden_layer_sizes=(6, 6), proj_size=2,
                              bidirectional=True, max_iter=3,
                              random_state=0).fit(X, y)
    state = model.to_torch_state_dict()
    assert state["weight_hr_l1_reverse"].shape == (2, 6)
    assert model.n_params_ == sum(value.size for value in state.values())
    lstm = nn.LSTM(3, 6, num_layers=2, proj_size=2, bidirectional=True,
                   batch_first=True, dtype=torch.float64)
    lstm.load_state_dict({k: torch.tensor(v) for k, v in state.items()
                          if not k.startswith("head.")}, strict=True)
    with torch.no_grad():
        _, (h_n, _) = lstm(torch.tensor(X))
        predicted = (torch.cat([h_n[-2], h_n[-1]], dim=1).numpy()
                     @ state["head.weight"].T + state["head.bias"])
    np.testing.assert_allclose(model.predict(X), predicted[:, 0], rtol=1e-9)
