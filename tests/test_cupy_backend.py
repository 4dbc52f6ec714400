"""The CuPy backend on a real GPU: kernels, gradients, estimators.

Skipped as a whole unless CuPy is installed and sees a GPU. The same loop
and kernel source are also checked on the CPU, on every machine, by
``tests/test_cuda_kernels_on_cpu.py``; this module checks what only a GPU
can: NVRTC compiling the kernels, cuBLAS with CuPy's arrays, launch
configurations, device memory and the estimators end to end.
"""

import pickle
import warnings

import numpy as np
import pytest

from sklstm._backends import cuda_status

cupy, _reason = cuda_status()
if cupy is None:
    pytest.skip(f"needs CuPy and a GPU: {_reason}", allow_module_level=True)

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklstm import LSTMClassifier, LSTMRegressor  # noqa: E402
from sklstm._backends import get_backend  # noqa: E402
from sklstm._backends._cupy import CupyBackend, default_ops  # noqa: E402
from sklstm._backends._reference import ReferenceBackend  # noqa: E402
from sklstm._network import LSTMNetwork  # noqa: E402
from sklstm._optimizers import Adam  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
LENGTHS = {"equal": [9, 9, 9, 9, 9, 9], "variable": [9, 8, 8, 5, 2, 1]}


def _layer(rng, dtype, lengths, n_features=3, n_units=5, proj_size=0):
    lengths = np.asarray(lengths, dtype=np.intp)
    n_steps, n_seq, n_out = lengths[0], len(lengths), proj_size or n_units
    X = rng.standard_normal((n_steps, n_seq, n_features)).astype(dtype)
    X[np.arange(n_steps)[:, np.newaxis] >= lengths] = 1e3  # padding: ignored
    weights = dict(
        W_ih=rng.uniform(-0.5, 0.5, (4 * n_units, n_features)).astype(dtype),
        W_hh=rng.uniform(-0.5, 0.5, (4 * n_units, n_out)).astype(dtype),
        bias=rng.uniform(-0.5, 0.5, 4 * n_units).astype(dtype),
    )
    if proj_size:
        weights["W_hr"] = rng.uniform(-0.5, 0.5, (n_out, n_units)).astype(dtype)
    return X, lengths, weights


def test_get_backend_cuda_and_auto_give_the_gpu_backend():
    assert isinstance(get_backend("cuda"), CupyBackend)
    assert isinstance(get_backend("auto"), CupyBackend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("lengths", list(LENGTHS))
def test_layer_matches_reference(dtype, reverse, proj_size, lengths):
    rng = np.random.RandomState(0)
    X, lengths, weights = _layer(rng, dtype, LENGTHS[lengths], proj_size=proj_size)
    gpu, ref = CupyBackend(), ReferenceBackend()
    hidden, h_n, c_n, cache = gpu.forward(cupy.asarray(X), lengths,
                                          reverse=reverse, **weights)
    assert isinstance(hidden, cupy.ndarray) and hidden.dtype == dtype
    expected = ref.forward(X, lengths, reverse=reverse, **weights)
    for ours, theirs in zip((hidden, h_n, c_n), expected[:3]):
        np.testing.assert_allclose(ours.get(), theirs, **TOL[dtype])

    # Inference mode: per-step states only, the same values.
    _, h_n_inf, c_n_inf, none = gpu.forward(X, lengths, reverse=reverse,
                                            training=False, return_sequences=False,
                                            **weights)
    assert none is None
    np.testing.assert_allclose(h_n_inf.get(), expected[1], **TOL[dtype])
    np.testing.assert_allclose(c_n_inf.get(), expected[2], **TOL[dtype])

    dhidden = rng.standard_normal(hidden.shape).astype(dtype)
    dhidden[np.arange(X.shape[0])[:, np.newaxis] >= lengths] = 0
    grads = gpu.backward(cupy.asarray(dhidden), cache)
    grads_ref = ref.backward(dhidden, expected[3])
    assert len(grads) == len(grads_ref)
    for ours, theirs in zip(grads, grads_ref):
        np.testing.assert_allclose(ours.get(), theirs, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_matches_numpy_adam(dtype):
    rng = np.random.RandomState(0)
    n_params = 100_003  # several blocks, and not a multiple of a block
    params = rng.standard_normal(n_params).astype(dtype)
    cpu = Adam(n_params, dtype, learning_rate=0.01)
    gpu = Adam(n_params, dtype, learning_rate=0.01, xp=cupy,
               fused_update=default_ops().adam_update)
    params_gpu = cupy.asarray(params)
    for _ in range(3):
        grad = rng.standard_normal(n_params).astype(dtype)
        cpu.update(params, grad)
        gpu.update(params_gpu, cupy.asarray(grad))
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(params_gpu.get(), params, rtol=rtol)
    np.testing.assert_allclose(gpu.m.get(), cpu.m, rtol=rtol)


@pytest.mark.parametrize("loss", ["squared_error", "softmax_log_loss",
                                  "logistic_log_loss"])
@pytest.mark.parametrize("output", ["last", "sequence"])
def test_network_gradient_matches_reference(loss, output):
    rng = np.random.RandomState(1)
    network = LSTMNetwork(3, (6, 6), 3, bidirectional=True, loss=loss,
                          output=output, proj_size=4)
    flat = network.init_params(np.random.RandomState(0), np.float64)
    X, lengths, _ = _layer(rng, np.float64, LENGTHS["variable"])
    shape = (9, 6, 3) if output == "sequence" else (6, 3)
    if loss == "squared_error":
        Y = rng.standard_normal(shape)
    elif loss == "softmax_log_loss":
        Y = np.eye(3)[rng.randint(3, size=shape[:-1])]
    else:
        Y = rng.randint(2, size=shape).astype(float)
    weight = rng.uniform(0.5, 2.0, shape[:-1])
    loss_gpu, grad_gpu = network.loss_and_grad(
        CupyBackend(), cupy.asarray(flat), cupy.asarray(X), lengths,
        cupy.asarray(Y), cupy.asarray(weight), alpha=1e-3,
        weight_mask=cupy.asarray(network.weight_mask().astype(float)))
    loss_ref, grad_ref = network.loss_and_grad(
        ReferenceBackend(), flat, X, lengths, Y, weight, alpha=1e-3)
    np.testing.assert_allclose(float(loss_gpu), loss_ref, rtol=1e-10)
    np.testing.assert_allclose(grad_gpu.get(), grad_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_gradients_match_torch(proj_size, reverse):
    """Our GPU gradients against PyTorch's autograd (on its GPU if it has one)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.RandomState(2)
    X, lengths, _ = _layer(rng, np.float64, LENGTHS["variable"])
    n_steps, n_seq, n_features = X.shape
    lstm = torch.nn.LSTM(n_features, 5, proj_size=proj_size, bidirectional=reverse,
                         dtype=torch.float64).to(device)
    suffix = "_l0_reverse" if reverse else "_l0"
    params = {name: param for name, param in lstm.named_parameters()}
    X_t = torch.tensor(X, device=device, requires_grad=True)
    packed = pack_padded_sequence(X_t, torch.as_tensor(lengths), enforce_sorted=True)
    out, _ = pad_packed_sequence(lstm(packed)[0], total_length=n_steps)
    n_out = proj_size or 5
    half = out[:, :, n_out:] if reverse else out[:, :, :n_out]
    dhidden = rng.standard_normal((n_steps, n_seq, n_out))
    dhidden[np.arange(n_steps)[:, np.newaxis] >= lengths] = 0
    (half * torch.tensor(dhidden, device=device)).sum().backward()

    weights = {key: cupy.asarray(params[name + suffix].detach().cpu().numpy())
               for key, name in (("W_ih", "weight_ih"), ("W_hh", "weight_hh"))}
    if proj_size:
        weights["W_hr"] = cupy.asarray(
            params["weight_hr" + suffix].detach().cpu().numpy())
    bias = (params["bias_ih" + suffix] + params["bias_hh" + suffix]).detach()
    backend = CupyBackend()
    hidden, _, _, cache = backend.forward(cupy.asarray(X), lengths,
                                          bias=cupy.asarray(bias.cpu().numpy()),
                                          reverse=reverse, **weights)
    np.testing.assert_allclose(hidden.get(), half.detach().cpu().numpy(),
                               rtol=1e-10, atol=1e-12)
    dX, dW_ih, dW_hh, dbias, *dW_hr = backend.backward(cupy.asarray(dhidden), cache)
    expected = {"weight_ih": dW_ih, "weight_hh": dW_hh, "bias_ih": dbias}
    if proj_size:
        expected["weight_hr"] = dW_hr[0]
    np.testing.assert_allclose(dX.get(), X_t.grad.cpu().numpy(), rtol=1e-9,
                               atol=1e-12)
    for name, ours in expected.items():
        np.testing.assert_allclose(ours.get(), params[name + suffix].grad.cpu().numpy(),
                                   rtol=1e-9, atol=1e-12)


def _sequences(n_samples=300, n_steps=12, n_features=3, dtype=np.float32):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, n_steps, n_features)).astype(dtype)
    return X, np.tanh(X[:, :, 0]).mean(axis=1).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_fit_matches_cpu_fit_and_predicts_on_the_cpu(dtype):
    X, y = _sequences(dtype=dtype)
    params = dict(hidden_layer_sizes=(16,), max_iter=5, batch_size=32,
                  random_state=0)
    cpu = LSTMRegressor(**params).fit(X, y)
    gpu = LSTMRegressor(device="cuda", **params).fit(X, y)
    tol = dict(rtol=1e-3, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-8)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, **tol)
    assert type(gpu._params) is np.ndarray
    gpu_predictions = gpu.predict(X)  # on the GPU (device='cuda')
    restored = pickle.loads(pickle.dumps(gpu)).set_params(device="cpu")
    np.testing.assert_allclose(restored.predict(X), gpu_predictions, **tol)
    np.testing.assert_allclose(gpu_predictions, cpu.predict(X), **tol)


def test_gpu_classifier_with_everything():
    """Stacked bidirectional layers with a projection, dropout, early
    stopping, variable lengths and per-timestep outputs, on the GPU."""
    rng = np.random.RandomState(0)
    X = [rng.standard_normal((rng.randint(3, 15), 2)) for _ in range(200)]
    y = [(x[:, 0] > 0).astype(int) for x in X]
    params = dict(hidden_layer_sizes=(8, 8), bidirectional=True, proj_size=4,
                  dropout=0.1, output="sequence", early_stopping=True,
                  max_iter=4, random_state=0)
    cpu = LSTMClassifier(**params).fit(X, y)
    gpu = LSTMClassifier(device="cuda", **params).fit(X, y)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-8)
    np.testing.assert_allclose(gpu._params, cpu._params, rtol=1e-7, atol=1e-10)


def test_allow_tf32_trains():
    X, y = _sequences(n_samples=256)
    params = dict(hidden_layer_sizes=(64,), max_iter=3, batch_size=64,
                  random_state=0, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exact = LSTMRegressor(**params).fit(X, y)
        tf32 = LSTMRegressor(allow_tf32=True, **params).fit(X, y)
    # TF32 rounds GEMM inputs to 10 mantissa bits: close, not equal.
    np.testing.assert_allclose(tf32.loss_curve_, exact.loss_curve_, rtol=2e-2)


# ------------------------------------------------------------- CUDA graphs
def test_own_cublas_handle_matches_cupy_matmul():
    """The ctypes cuBLAS GEMM the graphs use, on the operand kinds of the
    backend (transposed views, leading rows of a step, column blocks)."""
    from sklstm._backends._cublas import CublasHandle

    rng = np.random.RandomState(0)
    stream = cupy.cuda.Stream(non_blocking=True)
    workspace = cupy.empty(2**22, dtype=cupy.uint8)
    handle = CublasHandle(stream.ptr, workspace.data.ptr, workspace.nbytes)
    for dtype in DTYPES:
        big = cupy.asarray(rng.standard_normal((6, 9, 8)).astype(dtype))
        wide = cupy.asarray(rng.standard_normal((7, 10)).astype(dtype))
        w = cupy.asarray(rng.standard_normal((12, 8)).astype(dtype))
        cases = [(big[2, :5], w.T), (w.T, w), (wide[:, 3:7], w[:4, :3]),
                 (big[1:].reshape(-1, 8).T, big[1:].reshape(-1, 8))]
        for a, b in cases:
            out = cupy.empty((a.shape[0], b.shape[1]), dtype=dtype)
            with stream:
                handle.gemm(a, b, out)
            stream.synchronize()
            np.testing.assert_allclose(out.get(), (a @ b).get(), **TOL[dtype])
    handle.close()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fit_replays_cuda_graphs_and_matches_the_eager_fit(monkeypatch,
                                                           bidirectional):
    from sklstm._backends import _graphs

    X, y = _sequences(n_samples=200, dtype=np.float64)
    params = dict(hidden_layer_sizes=(16, 8), bidirectional=bidirectional,
                  alpha=1e-3, max_iter=3, batch_size=32, random_state=0,
                  device="cuda")
    made = []
    original = CupyBackend.minibatch_steps

    def spy(self, *args, **kwargs):
        made.append(original(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(CupyBackend, "minibatch_steps", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        graphed = LSTMRegressor(**params).fit(X, y)
    assert made[0].enabled and made[0].n_replays >= 3 * (200 // 32) - 2
    monkeypatch.setattr(_graphs, "ENABLED", False)
    eager = LSTMRegressor(**params).fit(X, y)
    np.testing.assert_allclose(graphed.loss_curve_, eager.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(graphed._params, eager._params, rtol=1e-8,
                               atol=1e-11)
