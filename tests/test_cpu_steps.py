"""The CPU fit's minibatch runner (``_backends/_cpu_steps.py``) against the
general path it replaces: the same fit, bit for bit."""

import threading
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklstm import LSTMClassifier, LSTMRegressor
from sklstm._backends import _cpu, _cpu_steps
from sklstm._backends._cpu import CPUBackend
from sklstm._network import LSTMNetwork


@pytest.fixture
def runners(monkeypatch):
    """The runners the CPU fits of a test make, in order."""
    made = []
    original = CPUBackend.minibatch_steps

    def spy(self, *args, **kwargs):
        made.append(original(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(CPUBackend, "minibatch_steps", spy)
    return made


def _fit(estimator, X, y, *, enabled, method="fit", **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "dropout=.* has no effect", UserWarning)
        previous, _cpu_steps.ENABLED = _cpu_steps.ENABLED, enabled
        try:
            return getattr(estimator, method)(X, y, **fit_params)
        finally:
            _cpu_steps.ENABLED = previous


def _assert_same_fit(a, b):
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a._params, b._params)


def _sequences(n_samples=70, n_steps=7, n_features=3, dtype=np.float64,
               ragged=False, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_steps, n_features)).astype(dtype)
    if ragged:  # trailing NaN padding: lengths 7, 5, 3, ...
        X[::3, 5:] = np.nan
        X[1::4, 3:] = np.nan
    y = np.nansum(X[:, :, 0], axis=1)
    return X, y


CONFIGS = {
    "one_layer": dict(hidden_layer_sizes=(6,)),
    # B = H = 32: each kernel call is cut in pieces for the threads.
    "pieces": dict(hidden_layer_sizes=(32,), batch_size=32),
    "stacked": dict(hidden_layer_sizes=(5, 4, 3)),
    "bidirectional": dict(hidden_layer_sizes=(6, 5), bidirectional=True),
    "no_l2_clipped": dict(hidden_layer_sizes=(7,), alpha=0.0, clip_norm=0.5),
    # One layer: dropout has nothing to act on, so the runner takes it.
    "one_layer_dropout": dict(hidden_layer_sizes=(6,), dropout=0.3),
    "early_stopping": dict(hidden_layer_sizes=(6,), early_stopping=True,
                           n_iter_no_change=2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_regressor_fit_is_the_general_path_bit_for_bit(runners, config, ragged,
                                                       dtype):
    X, y = _sequences(dtype=dtype, ragged=ragged)
    params = dict(dict(batch_size=16, max_iter=3, random_state=0),
                  **CONFIGS[config])
    lean = _fit(LSTMRegressor(**params), X, y, enabled=True)
    general = _fit(LSTMRegressor(**params), X, y, enabled=False)
    _assert_same_fit(lean, general)
    n_train = len(X) - (7 if "early" in config else 0)  # 10 % held out
    assert runners[0].enabled
    assert runners[0].n_runs == lean.n_iter_ * -(-n_train // lean.batch_size)
    assert not runners[1].enabled and runners[1].n_runs == 0


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_fit_is_the_general_path_bit_for_bit(runners, n_classes,
                                                        bidirectional):
    X, y = _sequences(ragged=True)
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1]))
    params = dict(hidden_layer_sizes=(6, 4), bidirectional=bidirectional,
                  batch_size=16, max_iter=3, random_state=0)
    lean = _fit(LSTMClassifier(**params), X, labels, enabled=True)
    general = _fit(LSTMClassifier(**params), X, labels, enabled=False)
    _assert_same_fit(lean, general)
    assert runners[0].n_runs > 0


def test_multilabel_sample_weight_and_partial_fit(runners):
    X, y = _sequences(ragged=True)
    Y = np.stack([y > 0, y > 1], axis=1).astype(int)
    weight = np.random.default_rng(1).uniform(0.1, 2.0, len(X))
    params = dict(hidden_layer_sizes=(5,), batch_size=16, random_state=0)
    lean, general = LSTMClassifier(**params), LSTMClassifier(**params)
    for _ in range(2):
        _fit(lean, X, Y, enabled=True, method="partial_fit",
             sample_weight=weight)
        _fit(general, X, Y, enabled=False, method="partial_fit",
             sample_weight=weight)
    _assert_same_fit(lean, general)
    assert runners[0].n_runs > 0 and runners[2].n_runs > 0


def test_minibatches_longer_than_the_first_grow_the_workspaces(runners):
    # Without shuffling, the first minibatch has 3 steps and a later one 7.
    X, y = _sequences(n_samples=48)
    X[:16, 3:] = np.nan
    y = np.nansum(X[:, :, 0], axis=1)
    params = dict(hidden_layer_sizes=(6, 5), bidirectional=True, batch_size=16,
                  shuffle=False, max_iter=2, random_state=0)
    lean = _fit(LSTMRegressor(**params), X, y, enabled=True)
    general = _fit(LSTMRegressor(**params), X, y, enabled=False)
    _assert_same_fit(lean, general)
    assert runners[0].n_runs == 6
    assert runners[0]._plans[16].n_steps == 7


@pytest.mark.parametrize("params", [
    dict(output="sequence"),
    dict(proj_size=2),
    dict(hidden_layer_sizes=(6, 5), dropout=0.2),
], ids=["sequence_output", "projection", "dropout_masks"])
def test_other_fits_run_the_general_path(runners, params):
    X, y = _sequences()
    if params.get("output") == "sequence":
        y = X[:, :, 0]
    _fit(LSTMRegressor(**dict(dict(hidden_layer_sizes=(6,), max_iter=1,
                                   random_state=0), **params)), X, y,
         enabled=True)
    assert all(runner is None or runner.n_runs == 0 for runner in runners)


def test_a_fit_outside_the_main_thread_runs_the_general_path(runners):
    # BLAS is held at one thread for the whole fit in the main thread only.
    X, y = _sequences()
    params = dict(hidden_layer_sizes=(6,), max_iter=2, random_state=0)
    fitted = []
    thread = threading.Thread(target=lambda: fitted.append(
        _fit(LSTMRegressor(**params), X, y, enabled=True)))
    thread.start()
    thread.join()
    assert not runners[0].enabled and runners[0].n_runs == 0
    _assert_same_fit(fitted[0], _fit(LSTMRegressor(**params), X, y, enabled=False))


def test_sizes_past_max_plans_are_handed_back():
    network = LSTMNetwork(n_features=2, hidden_layer_sizes=(4,), n_outputs=1)
    params = network.init_params(np.random.RandomState(0), np.float64)
    with _cpu._blas_hold():
        runner = _cpu_steps.CPUMinibatchSteps(
            network, params, alpha=1e-4,
            weight_mask=network.weight_mask().astype(np.float64), max_plans=1)
        for n_seq, expected in [(8, True), (8, True), (5, False)]:
            X = np.ones((3, n_seq, 2))
            out = runner.run(X, np.full(n_seq, 3, dtype=np.intp),
                             np.zeros((n_seq, 1)), np.ones(n_seq))
            assert (out is not None) == expected
    assert runner.n_runs == 2
