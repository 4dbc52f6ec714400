"""The ``device`` parameter without a GPU: lazy CuPy, errors, fallbacks."""

import subprocess
import sys
import types

import numpy as np
import pytest
from sklearn.base import clone

from sklstm import LSTMClassifier, LSTMRegressor
from sklstm._backends import cuda_status, get_backend

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture
def no_cuda(monkeypatch):
    """Make CuPy look absent, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    cuda_status.cache_clear()
    yield
    cuda_status.cache_clear()


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    """Make CuPy look installed on a machine whose driver finds no GPU."""

    def get_device_count():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cuda_status.cache_clear()
    yield
    cuda_status.cache_clear()


def _data(n_samples=24):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, 5, 2))
    return X, X[:, :, 0].sum(axis=1)


def test_import_does_not_import_cupy():
    code = (
        "import sys, numpy as np, sklstm\n"
        "from sklstm import LSTMRegressor\n"
        "X = np.random.RandomState(0).randn(8, 4, 1)\n"
        "LSTMRegressor((3,), max_iter=1).fit(X, X[:, -1, 0]).predict(X)\n"
        "assert 'cupy' not in sys.modules, 'import sklstm imported cupy'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("Estimator", [LSTMRegressor, LSTMClassifier])
def test_device_round_trips_through_params(Estimator):
    model = Estimator(device="cuda", allow_tf32=True)
    params = clone(model).get_params()
    assert params["device"] == "cuda" and params["allow_tf32"] is True
    assert Estimator().get_params()["device"] == "cpu"


def test_unknown_device_is_rejected_at_fit():
    X, y = _data()
    model = LSTMRegressor(device="gpu")  # __init__ stores it, as sklearn asks
    with pytest.raises(ValueError, match="device"):
        model.fit(X, y)


def test_cuda_without_cupy_raises_at_fit_with_install_hint(no_cuda):
    X, y = _data()
    model = LSTMRegressor(max_iter=1)
    model.set_params(device="cuda")  # no error before fit
    with pytest.raises(ImportError, match=r'pip install "sklstm\[gpu\]"'):
        model.fit(X, y)
    assert not hasattr(model, "_params")  # nothing half-fitted


def test_cuda_without_gpu_raises_at_fit(cupy_without_gpu):
    X, y = _data()
    with pytest.raises(RuntimeError, match="cannot reach a GPU.*cupy-cuda12x"):
        LSTMRegressor(max_iter=1, device="cuda").fit(X, y)


@pytest.mark.parametrize("fixture", ["no_cuda", "cupy_without_gpu"])
def test_auto_falls_back_to_the_cpu_silently(request, fixture, recwarn):
    request.getfixturevalue(fixture)
    X, y = _data()
    common = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    auto = LSTMRegressor(device="auto", **common).fit(X, y)
    cpu = LSTMRegressor(device="cpu", **common).fit(X, y)
    np.testing.assert_array_equal(auto.predict(X), cpu.predict(X))
    assert type(get_backend("auto")).__name__ == "CPUBackend"
    assert not [w for w in recwarn if "device" in str(w.message)]


def test_cuda_fitted_model_predicts_without_cupy(no_cuda):
    """A model whose device is 'cuda' (as after a GPU fit) predicts on the
    CPU when no GPU is usable, and set_params(device='cpu') works too."""
    X, y = _data()
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    model.fit(X, y)
    expected = model.predict(X)
    model.set_params(device="cuda")
    np.testing.assert_array_equal(model.predict(X), expected)
    model.set_params(device="cpu")
    np.testing.assert_array_equal(model.predict(X), expected)
