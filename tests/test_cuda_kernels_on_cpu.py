"""The GPU backend's kernels and step loop, checked on the CPU.

CI has no GPU, so a regression in ``sklstm/_backends/_lstm_cuda.cu`` or in
the step loop of ``sklstm/_backends/_cupy.py`` could hide until someone runs
``tests/test_cupy_backend.py`` on a GPU. Here the same ``.cu`` source is
compiled by g++ through ``tests/cuda_on_cpu/cuda_shim.h`` and driven through
ctypes; ``CupyBackend`` then runs its exact loop with NumPy arrays and these
compiled kernels, and is compared with the reference backend.

Skipped when no C++ compiler is found.
"""

import ctypes
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sklstm import LSTMClassifier, LSTMRegressor
from sklstm._backends import _cupy, _graphs
from sklstm._backends._cupy import CupyBackend, LSTMOps, kernel_options
from sklstm._backends._graphs import CapturedStep
from sklstm._backends._reference import ReferenceBackend
from sklstm._base import BaseLSTM
from sklstm._network import LSTMNetwork
from sklstm._optimizers import Adam

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
SHIM = Path(__file__).parent / "cuda_on_cpu" / "cuda_shim.h"
# The emulated launch grid: a few blocks and threads, so the kernels'
# grid-stride indexing is exercised with several "threads" sharing the work.
EMULATED_GRID = (2, 3)

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


class _Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


def _compile(directory, dtype):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the CUDA kernels for the CPU")
    library = directory / f"lstm_cuda_{np.dtype(dtype).name}.so"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-x", "c++",
         "-include", str(SHIM), *kernel_options(dtype), str(_cupy.KERNEL_SOURCE),
         "-o", str(library), "-lm"],
        check=True, capture_output=True,
    )
    return ctypes.CDLL(str(library))


class HostOps(LSTMOps):
    """NumPy GEMMs and the ``.cu`` kernels compiled for the CPU."""

    xp = np

    def __init__(self, libraries):
        self._libraries = libraries  # dtype -> ctypes.CDLL
        self.launches = {}  # kernel name -> number of launches

    def gemm(self, a, b, out, beta=0.0):
        assert out.flags.c_contiguous and a.dtype == b.dtype == out.dtype
        if beta == 0.0:
            np.matmul(a, b, out=out)
        else:
            out *= beta
            out += a @ b

    def _launch(self, name, n_items, dtype, args):
        library = self._libraries[np.dtype(dtype)]
        c_args = []
        for arg in args:
            if isinstance(arg, np.ndarray):
                # What would go wrong silently on the GPU: a strided view or
                # a dtype that is not the kernel's `real`.
                assert arg.flags.c_contiguous, name
                assert arg.dtype == dtype, name
                c_args.append(ctypes.c_void_p(arg.ctypes.data))
            elif isinstance(arg, np.int32):
                c_args.append(ctypes.c_int(int(arg)))
            elif isinstance(arg, np.int64):
                c_args.append(ctypes.c_longlong(int(arg)))
            elif isinstance(arg, np.float64):
                c_args.append(ctypes.c_double(float(arg)))
            else:
                raise TypeError(f"{name}: argument of type {type(arg)}")
        n_blocks, n_threads = EMULATED_GRID
        block_idx = _Dim3.in_dll(library, "blockIdx")
        thread_idx = _Dim3.in_dll(library, "threadIdx")
        _Dim3.in_dll(library, "gridDim").x = n_blocks
        _Dim3.in_dll(library, "blockDim").x = n_threads
        kernel = getattr(library, name)
        for block in range(n_blocks):
            for thread in range(n_threads):
                block_idx.x, thread_idx.x = block, thread
                kernel(*c_args)
        self.launches[name] = self.launches.get(name, 0) + 1


@pytest.fixture(scope="module")
def host_ops(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cuda_on_cpu")
    return HostOps({np.dtype(dtype): _compile(directory, dtype) for dtype in DTYPES})


def _layer(rng, dtype, n_steps=6, n_seq=5, n_features=3, n_units=4, proj_size=0,
           lengths=None):
    n_out = proj_size or n_units
    X = rng.standard_normal((n_steps, n_seq, n_features)).astype(dtype)
    if lengths is None:
        lengths = np.full(n_seq, n_steps)
    lengths = np.asarray(lengths, dtype=np.intp)
    weights = dict(
        W_ih=rng.uniform(-0.5, 0.5, (4 * n_units, n_features)).astype(dtype),
        W_hh=rng.uniform(-0.5, 0.5, (4 * n_units, n_out)).astype(dtype),
        bias=rng.uniform(-0.5, 0.5, 4 * n_units).astype(dtype),
    )
    if proj_size:
        weights["W_hr"] = rng.uniform(-0.5, 0.5, (n_out, n_units)).astype(dtype)
    # Garbage on padding rows: it must not leak into any result.
    steps = np.arange(n_steps)[:, np.newaxis]
    X[steps >= lengths] = 1e3
    return X, lengths, weights


LENGTHS = [None, [6, 6, 4, 2, 1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("lengths", LENGTHS, ids=["equal", "variable"])
def test_forward_backward_match_reference(host_ops, rng, dtype, reverse,
                                          proj_size, lengths):
    X, lengths, weights = _layer(rng, dtype, proj_size=proj_size, lengths=lengths)
    gpu, ref = CupyBackend(ops=host_ops), ReferenceBackend()
    hidden, h_n, c_n, cache = gpu.forward(X, lengths, reverse=reverse, **weights)
    hidden_ref, h_n_ref, c_n_ref, cache_ref = ref.forward(
        X, lengths, reverse=reverse, **weights)
    tol = TOL[dtype]
    for ours, theirs in [(hidden, hidden_ref), (h_n, h_n_ref), (c_n, c_n_ref)]:
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **tol)

    dhidden = rng.standard_normal(hidden.shape).astype(dtype)
    steps = np.arange(X.shape[0])[:, np.newaxis]
    dhidden_clean = dhidden.copy()
    dhidden_clean[steps >= lengths] = 0
    dhidden[steps >= lengths] = np.nan  # ignored on padding, per the contract
    grads = gpu.backward(dhidden, cache)
    grads_ref = ref.backward(dhidden_clean, cache_ref)
    assert len(grads) == len(grads_ref) == (5 if proj_size else 4)
    for ours, theirs in zip(grads, grads_ref):
        assert ours.shape == theirs.shape and ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_inference_matches_training_forward(host_ops, rng, dtype, reverse,
                                            proj_size, return_sequences):
    """training=False keeps only per-step states and gives the same outputs."""
    X, lengths, weights = _layer(rng, dtype, proj_size=proj_size,
                                 lengths=[6, 5, 5, 3, 1])
    gpu = CupyBackend(ops=host_ops)
    hidden, h_n, c_n, _ = gpu.forward(X, lengths, reverse=reverse, **weights)
    hidden_inf, h_n_inf, c_n_inf, cache = gpu.forward(
        X, lengths, reverse=reverse, training=False,
        return_sequences=return_sequences, **weights)
    assert cache is None
    np.testing.assert_allclose(h_n_inf, h_n, **TOL[dtype])
    np.testing.assert_allclose(c_n_inf, c_n, **TOL[dtype])
    if return_sequences:
        np.testing.assert_allclose(hidden_inf, hidden, **TOL[dtype])
    else:
        assert hidden_inf is None


def test_backward_skips_the_input_gradient_on_request(host_ops, rng):
    X, lengths, weights = _layer(rng, np.float64, lengths=[6, 5, 5, 3, 1])
    gpu = CupyBackend(ops=host_ops)
    dhidden = rng.standard_normal((6, 5, 4))
    grads = [gpu.backward(dhidden, gpu.forward(X, lengths, **weights)[3],
                          input_grad=flag) for flag in (True, False)]
    assert grads[1][0] is None and grads[0][0].shape == X.shape
    for ours, full in zip(grads[1][1:], grads[0][1:]):
        np.testing.assert_array_equal(ours, full)


def test_one_launch_per_step(host_ops, rng):
    """One fused kernel per step forward and per step backward (DESIGN §4)."""
    X, lengths, weights = _layer(rng, np.float32, n_steps=7)
    gpu = CupyBackend(ops=host_ops)
    host_ops.launches.clear()
    _, _, _, cache = gpu.forward(X, lengths, **weights)
    gpu.backward(np.ones((7, X.shape[1], 4), dtype=np.float32), cache)
    assert host_ops.launches == {"lstm_gates_forward": 7, "lstm_gates_backward": 7}


def test_float64_input_of_other_dtype_computes_in_float64(host_ops, rng):
    X, lengths, weights = _layer(rng, np.float64)
    hidden, *_ = CupyBackend(ops=host_ops).forward(X.astype(np.float16).astype(
        np.int64), lengths, **weights)
    assert hidden.dtype == np.float64


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_matches_adam_optimizer(host_ops, rng, dtype):
    n_params = 1000
    params = rng.standard_normal(n_params).astype(dtype)
    params_kernel = params.copy()
    optimizer = Adam(n_params, dtype, learning_rate=0.01)
    m = np.zeros(n_params, dtype=dtype)
    v = np.zeros(n_params, dtype=dtype)
    for step in range(1, 4):
        grad = rng.standard_normal(n_params).astype(dtype)
        optimizer.update(params, grad)
        step_size = (0.01 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step))
        host_ops.adam_update(params_kernel, grad, m, v, beta_1=0.9, beta_2=0.999,
                             step_size=step_size, epsilon=1e-8)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(params_kernel, params, rtol=rtol)
    np.testing.assert_allclose(m, optimizer.m, rtol=rtol)
    np.testing.assert_allclose(v, optimizer.v, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["last", "sequence"])
def test_network_gradient_matches_reference(host_ops, rng, dtype, output):
    """The whole network (stacked, bidirectional, projection, variable
    lengths) on the GPU backend's loop equals the reference backend."""
    network = LSTMNetwork(n_features=3, hidden_layer_sizes=(5, 5), n_outputs=2,
                          bidirectional=True, output=output, proj_size=3)
    flat = network.init_params(np.random.RandomState(0), dtype)
    X, lengths, _ = _layer(rng, dtype, n_steps=6, n_seq=4, n_features=3,
                           lengths=[6, 4, 4, 2])
    shape = (6, 4, 2) if output == "sequence" else (4, 2)
    Y = rng.standard_normal(shape).astype(dtype)
    weight = np.ones(shape[:-1], dtype=dtype)
    results = [
        network.loss_and_grad(backend, flat, X, lengths, Y, weight, alpha=1e-3)
        for backend in (CupyBackend(ops=host_ops), ReferenceBackend())
    ]
    (loss, grad), (loss_ref, grad_ref) = results
    np.testing.assert_allclose(float(loss), loss_ref, **TOL[dtype])
    np.testing.assert_allclose(grad, grad_ref, **TOL[dtype])


# ------------------------------------------------------------------ estimators
# The estimators' GPU code path (device arrays through the network, losses
# summed on the device, the fused Adam kernel, NumPy weights at the end),
# run with the emulated backend in place of CuPy's.
def _emulate_gpu_fit(monkeypatch, host_ops):
    monkeypatch.setattr(BaseLSTM, "_fit_backend",
                        lambda self: CupyBackend(ops=host_ops))


def _padded_sequences(rng, dtype, n_samples=40, n_steps=7, n_features=2):
    X = rng.standard_normal((n_samples, n_steps, n_features)).astype(dtype)
    lengths = rng.randint(2, n_steps + 1, n_samples)
    X[np.arange(n_steps) >= lengths[:, np.newaxis]] = np.nan  # padding
    return X, lengths


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_regressor_fit_through_gpu_path_matches_cpu(monkeypatch, host_ops, rng,
                                                    dtype, solver):
    X, lengths = _padded_sequences(rng, dtype)
    y = np.nan_to_num(X[:, :, 0]).sum(axis=1)
    params = dict(hidden_layer_sizes=(5,), max_iter=4, batch_size=16, solver=solver,
                  alpha=1e-3, clip_norm=1.0, random_state=0)
    cpu = LSTMRegressor(**params).fit(X, y)
    _emulate_gpu_fit(monkeypatch, host_ops)
    host_ops.launches.clear()
    gpu = LSTMRegressor(**params).fit(X, y)
    assert host_ops.launches["lstm_gates_forward"] > 0
    assert ("adam_update" in host_ops.launches) == (solver == "adam")
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, **tol)
    assert type(gpu._params) is np.ndarray and gpu._params.dtype == dtype
    assert all(isinstance(value, (np.ndarray, int))
               for value in gpu._optimizer_state.values())
    # Predictions run on the CPU backend (device='cpu') with the GPU weights,
    # also after a pickle round trip.
    restored = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(restored.predict(X), cpu.predict(X), **tol)


def test_classifier_fit_through_gpu_path_matches_cpu(monkeypatch, host_ops, rng):
    """Early stopping, dropout, bidirectional stacked layers, a projection and
    per-timestep outputs, on the GPU code path."""
    X, lengths = _padded_sequences(rng, np.float64, n_samples=60)
    y = [(np.nan_to_num(x[:length, 0]) > 0).astype(int)
         for x, length in zip(X, lengths)]
    y = np.array([np.pad(labels, (0, X.shape[1] - len(labels))) for labels in y])
    params = dict(hidden_layer_sizes=(6, 6), bidirectional=True, proj_size=3,
                  dropout=0.2, output="sequence", early_stopping=True,
                  validation_fraction=0.2, max_iter=3, batch_size=16,
                  random_state=0)
    X_list = [x[:length] for x, length in zip(X, lengths)]
    y_list = [labels[:length] for labels, length in zip(y, lengths)]
    cpu = LSTMClassifier(**params).fit(X_list, y_list)
    _emulate_gpu_fit(monkeypatch, host_ops)
    gpu = LSTMClassifier(**params).fit(X_list, y_list)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(gpu.validation_scores_, cpu.validation_scores_)
    np.testing.assert_allclose(gpu._params, cpu._params, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------- CUDA graphs
# ``_backends/_graphs.py`` replays a minibatch's loss and gradient as a CUDA
# graph: fixed kernels on fixed memory, refilled with each minibatch. The
# stand-in below keeps those semantics on the CPU: a "graph" re-runs the
# captured step and writes its results into the arrays the capture returned.
class _ReplayGraph:
    def __init__(self, step, outputs, runtime):
        self._step, self._outputs, self._runtime = step, outputs, runtime

    def launch(self):
        self._runtime.launches += 1
        for target, value in zip(self._outputs, self._step()):
            target[...] = value


class ReplayRuntime:
    """Stands in for ``CupyGraphRuntime``; ``copies`` False forgets to copy
    the minibatch in (a static-input bug), ``error`` makes capture fail."""

    def __init__(self, copies=True, error=None):
        self.copies, self.error = copies, error
        self.captures = self.launches = 0

    def copy_in(self, static, host):
        if self.copies:
            np.copyto(static, host)

    def capture(self, step, keep=()):
        if self.error is not None:
            raise self.error
        step()  # the warm-up
        outputs = step()
        self.captures += 1
        return CapturedStep(_ReplayGraph(step, outputs, self), outputs, keep)


def _fit_with_graphs(monkeypatch, host_ops, runtime, X, y, **params):
    monkeypatch.setattr(BaseLSTM, "_fit_backend",
                        lambda self: CupyBackend(ops=host_ops))
    monkeypatch.setattr(type(host_ops), "graph_runtime", lambda self: runtime,
                        raising=False)
    return LSTMRegressor(**params).fit(X, y)


GRAPH_FIT = dict(hidden_layer_sizes=(5, 4), max_iter=3, batch_size=16,
                 alpha=1e-3, clip_norm=1.0, random_state=0)


def _eager_fit(monkeypatch, host_ops, X, y, **params):
    with monkeypatch.context() as patch:
        patch.setattr(_graphs, "ENABLED", False)
        return _fit_with_graphs(patch, host_ops, ReplayRuntime(), X, y, **params)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_graph_replays_give_the_eager_fit(monkeypatch, host_ops, rng,
                                          bidirectional):
    X = rng.standard_normal((40, 6, 2))  # minibatches of 16, 16 and 8
    y = X[:, :, 0].sum(axis=1)
    params = dict(GRAPH_FIT, bidirectional=bidirectional)
    eager = _eager_fit(monkeypatch, host_ops, X, y, **params)
    runtime = ReplayRuntime()
    graphed = _fit_with_graphs(monkeypatch, host_ops, runtime, X, y, **params)
    assert runtime.captures == 2  # the full minibatch and the last one
    # 9 minibatches: 2 computed eagerly while capturing, 7 replays, and 2
    # more launches that check each capture.
    assert runtime.launches == 9
    np.testing.assert_array_equal(graphed.loss_curve_, eager.loss_curve_)
    np.testing.assert_array_equal(graphed._params, eager._params)


def test_padded_minibatches_run_eagerly(monkeypatch, host_ops, rng):
    X, _ = _padded_sequences(rng, np.float64, n_samples=32)
    X[:16] = np.nan_to_num(X[:16], nan=0.5)  # the first minibatch is full
    y = np.nan_to_num(X[:, :, 0]).sum(axis=1)
    params = dict(GRAPH_FIT, shuffle=False)
    eager = _eager_fit(monkeypatch, host_ops, X, y, **params)
    runtime = ReplayRuntime()
    graphed = _fit_with_graphs(monkeypatch, host_ops, runtime, X, y, **params)
    assert runtime.captures == 1
    np.testing.assert_array_equal(graphed._params, eager._params)


@pytest.mark.parametrize("runtime, message", [
    (ReplayRuntime(copies=False), "differs from the eager one"),
    (ReplayRuntime(error=RuntimeError("no capture here")), "capture failed"),
])
def test_graph_failures_fall_back_to_eager_training(monkeypatch, host_ops, rng,
                                                    runtime, message):
    """A capture that fails, or a replay that disagrees with the eager step
    (here: a minibatch not copied in), stops replays with a warning; the fit
    is the eager one."""
    X = rng.standard_normal((40, 6, 2))
    y = X[:, :, 0].sum(axis=1)
    eager = _eager_fit(monkeypatch, host_ops, X, y, **GRAPH_FIT)
    with pytest.warns(RuntimeWarning, match=message):
        graphed = _fit_with_graphs(monkeypatch, host_ops, runtime, X, y,
                                   **GRAPH_FIT)
    np.testing.assert_array_equal(graphed._params, eager._params)


def test_no_graphs_for_sequence_output_or_dropout(monkeypatch, host_ops, rng):
    X = rng.standard_normal((20, 5, 2))
    runtime = ReplayRuntime()
    _fit_with_graphs(monkeypatch, host_ops, runtime, X, X[:, :, 0],
                     **dict(GRAPH_FIT, output="sequence"))
    _fit_with_graphs(monkeypatch, host_ops, runtime, X, X[:, 0, 0],
                     **dict(GRAPH_FIT, dropout=0.3))
    assert runtime.captures == 0


def _nvrtc():
    """CuPy's NVRTC bindings with the library loaded, or skip."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        try:
            nvrtc.getVersion()
        except Exception:
            # CuPy 14 finds pip-installed CUDA libraries through
            # cuda-pathfinder; load NVRTC through it explicitly.
            from cuda import pathfinder

            pathfinder.load_nvidia_dynamic_lib("nvrtc")
            nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"CuPy's NVRTC is not usable here ({type(exc).__name__})")
    return nvrtc


@pytest.mark.parametrize("dtype", DTYPES)
def test_source_compiles_with_nvrtc(dtype):
    """NVRTC, the compiler behind cupy.RawModule, accepts the source and
    exports the kernels under their C names. Needs CuPy and NVRTC, no GPU."""
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_cupy.KERNEL_SOURCE.read_text(), "lstm.cu",
                                  [], [])
    nvrtc.compileProgram(program, kernel_options(dtype)
                         + ("--gpu-architecture=compute_80",))
    ptx = nvrtc.getPTX(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    for name in ("lstm_gates_forward", "lstm_gates_backward", "adam_update"):
        assert f".entry {name}(" in ptx
