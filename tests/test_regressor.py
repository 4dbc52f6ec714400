"""LSTMRegressor: learning, repeatability, dtypes, input forms, failures."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import r2_score

from sklstm import LSTMRegressor


def _sine_windows(n_windows, window, rng, noise=0.05):
    """Windows of a noisy sine and the value that follows each one."""
    t = np.arange(n_windows + window) * 0.3
    series = np.sin(t) + 0.5 * np.sin(0.37 * t) + noise * rng.randn(t.size)
    X = np.stack([series[i : i + window] for i in range(n_windows)])
    return X[:, :, np.newaxis], series[window : window + n_windows]


def _quiet_fit(model, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **kwargs)


def test_learns_to_continue_a_noisy_sine(rng):
    X, y = _sine_windows(700, 20, rng)
    model = LSTMRegressor(
        hidden_layer_sizes=(16,), learning_rate_init=0.01, batch_size=32,
        max_iter=40, random_state=0,
    )
    _quiet_fit(model, X[:500], y[:500])
    assert r2_score(y[500:], model.predict(X[500:])) > 0.9
    assert model.score(X[500:], y[500:]) > 0.9


def test_fit_is_repeatable_bit_for_bit(rng):
    X, y = rng.randn(40, 6, 2), rng.randn(40)
    params = dict(hidden_layer_sizes=(4, 3), bidirectional=True, dropout=0.2,
                  max_iter=3, batch_size=8, random_state=42)
    first = _quiet_fit(LSTMRegressor(**params), X, y)
    second = _quiet_fit(LSTMRegressor(**params), X, y)
    assert first.loss_curve_ == second.loss_curve_
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    for key, value in first.to_torch_state_dict().items():
        np.testing.assert_array_equal(value, second.to_torch_state_dict()[key])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_dtype_follows_X(dtype, rng):
    X, y = rng.randn(30, 5, 2).astype(dtype), rng.randn(30)
    model = _quiet_fit(LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2), X, y)
    assert model.predict(X).dtype == dtype
    assert all(w.dtype == dtype for w in model.to_torch_state_dict().values())


def test_integer_input_computes_in_float64(rng):
    X, y = rng.randint(0, 5, (20, 4, 1)), rng.randn(20)
    model = _quiet_fit(LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2), X, y)
    assert model.predict(X).dtype == np.float64


def test_float32_and_float64_models_agree(rng):
    X, y = rng.randn(30, 6, 2), rng.randn(30)
    params = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, shuffle=False)
    double = _quiet_fit(LSTMRegressor(**params), X, y)
    single = _quiet_fit(LSTMRegressor(**params), X.astype(np.float32), y)
    np.testing.assert_allclose(single.predict(X.astype(np.float32)),
                               double.predict(X), rtol=1e-3, atol=1e-4)


def test_univariate_2d_input_is_read_as_one_feature(rng):
    X, y = rng.randn(30, 7), rng.randn(30)
    params = dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    flat = _quiet_fit(LSTMRegressor(**params), X, y)
    deep = _quiet_fit(LSTMRegressor(**params), X[:, :, np.newaxis], y)
    assert flat.n_features_in_ == 7 and deep.n_features_in_ == 1
    np.testing.assert_array_equal(flat.predict(X), deep.predict(X[:, :, None]))
    # A model fitted on 3-D univariate sequences takes 2-D input of any length.
    assert deep.predict(rng.randn(4, 11)).shape == (4,)
    with pytest.raises(ValueError, match="X has 5 features, but LSTMRegressor "
                       "is expecting 7 features"):
        flat.predict(rng.randn(3, 5))


def test_variable_length_prediction_does_not_depend_on_padding(rng):
    """A sequence predicts the same alone, padded, and among longer ones."""
    lengths = [3, 9, 5, 1, 9, 6]
    sequences = [rng.randn(length, 2) for length in lengths]
    y = rng.randn(len(lengths))
    model = _quiet_fit(
        LSTMRegressor(hidden_layer_sizes=(5, 4), bidirectional=True, max_iter=3,
                      batch_size=4, random_state=0),
        sequences, y,
    )
    in_batch = model.predict(sequences)
    padded = np.full((len(lengths), 12, 2), np.nan)
    for index, seq in enumerate(sequences):
        padded[index, : len(seq)] = seq
    np.testing.assert_allclose(model.predict(padded), in_batch, rtol=1e-12, atol=1e-12)
    for index, seq in enumerate(sequences):
        alone = model.predict([seq])
        np.testing.assert_allclose(alone, in_batch[index : index + 1],
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.predict(seq[np.newaxis]), alone,
                                   rtol=1e-12, atol=1e-12)


def test_multi_output_regression(rng):
    X, Y = rng.randn(40, 5, 3), rng.randn(40, 2)
    model = _quiet_fit(LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2), X, Y)
    assert model.predict(X).shape == (40, 2)
    assert model.n_outputs_ == 2


def test_fitted_attributes_and_convergence_warning(rng):
    X, y = rng.randn(25, 4, 1), rng.randn(25)
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=4, batch_size=10)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        model.fit(X, y)
    assert model.n_iter_ == 4 == len(model.loss_curve_)
    assert model.t_ == 4 * 25
    assert model.loss_ == model.loss_curve_[-1]
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.out_activation_ == "identity"


def test_training_stops_on_a_plateau(rng):
    X, y = rng.randn(20, 3, 1), np.zeros(20)
    model = LSTMRegressor(hidden_layer_sizes=(2,), max_iter=500, tol=10.0,
                          n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X, y)
    assert model.n_iter_ == 2 + 2  # the first epoch, then n_iter_no_change + 1


def test_verbose_prints_one_line_per_epoch(rng, capsys):
    X, y = rng.randn(20, 3, 1), rng.randn(20)
    _quiet_fit(LSTMRegressor(hidden_layer_sizes=(2,), max_iter=3, verbose=True),
               X, y)
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("Iteration")]
    assert len(lines) == 3 and "loss = " in lines[0]


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_solvers_reduce_the_loss(solver, rng):
    X, y = _sine_windows(200, 10, rng)
    model = _quiet_fit(
        LSTMRegressor(hidden_layer_sizes=(8,), solver=solver, max_iter=15,
                      learning_rate_init=0.01, random_state=0),
        X, y,
    )
    assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0]


def test_clip_norm_bounds_the_update(rng):
    """With a tiny clip_norm, SGD without momentum moves the weights by at most
    learning_rate * clip_norm per step."""
    X, y = rng.randn(16, 4, 2), 100 * rng.randn(16)
    params = dict(hidden_layer_sizes=(3,), solver="sgd", momentum=0.0,
                  learning_rate_init=0.1, max_iter=1, batch_size=16,
                  random_state=0, alpha=0.0)
    start = _quiet_fit(LSTMRegressor(**{**params, "learning_rate_init": 1e-300}),
                       X, y).to_torch_state_dict()
    clipped = _quiet_fit(LSTMRegressor(**params, clip_norm=0.01), X, y)
    moved = np.sqrt(sum(((clipped.to_torch_state_dict()[k] - v) ** 2).sum()
                        for k, v in start.items()))
    assert moved == pytest.approx(0.1 * 0.01, rel=1e-6)


def test_divergence_raises_and_keeps_the_previous_model(rng):
    X, y = rng.randn(30, 5, 2), rng.randn(30)
    model = _quiet_fit(LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2,
                                     random_state=0), X, y)
    before = model.predict(X)
    model.set_params(solver="sgd", learning_rate_init=1e12, momentum=0.0, max_iter=100,
                     n_iter_no_change=100)
    with pytest.raises(ValueError, match="learning_rate_init.*clip_norm"):
        model.fit(X, 1e6 * y)
    np.testing.assert_array_equal(model.predict(X), before)
    assert all(np.isfinite(w).all() for w in model.to_torch_state_dict().values())


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        LSTMRegressor().predict(np.zeros((2, 3, 1)))


def test_bad_targets_raise(rng):
    X = rng.randn(10, 4, 2)
    with pytest.raises(ValueError, match="NaN"):
        LSTMRegressor(max_iter=1).fit(X, np.full(10, np.nan))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        LSTMRegressor(max_iter=1).fit(X, np.zeros(9))
    with pytest.raises(ValueError, match="requires y to be passed"):
        LSTMRegressor(max_iter=1).fit(X, None)


@pytest.mark.parametrize("path", ["runner", "general", "reference"])
def test_minibatches_of_zero_weight_samples_train_on_the_others(path, rng,
                                                                monkeypatch):
    """Zero-weight samples together and not shuffled make minibatches whose
    weights are all zero: these count for nothing (the fit used to stop as
    diverged on 0 / 0), and the fit learns from the others. On the CPU
    fit's minibatch runner, its general path, and the NumPy losses (the
    reference backend's, as the GPU backend's)."""
    from sklstm import _base
    from sklstm._backends import _cpu_steps
    from sklstm._backends._reference import ReferenceBackend

    if path == "general":
        monkeypatch.setattr(_cpu_steps, "ENABLED", False)
    elif path == "reference":
        monkeypatch.setattr(_base, "get_backend",
                            lambda *args, **kwargs: ReferenceBackend())
    X = rng.randn(60, 5, 2)
    y = X.sum(axis=(1, 2))
    weights = np.r_[np.zeros(30), np.ones(30)]
    params = dict(hidden_layer_sizes=(4,), batch_size=10, shuffle=False,
                  max_iter=5, random_state=0)
    model = _quiet_fit(LSTMRegressor(**params), X, y, sample_weight=weights)
    assert np.all(np.isfinite(model.loss_curve_))
    # The targets of the zero-weight samples do not matter.
    garbage = y.copy()
    garbage[:30] = 1e6
    other = _quiet_fit(LSTMRegressor(**params), X, garbage, sample_weight=weights)
    np.testing.assert_allclose(other.predict(X), model.predict(X), rtol=1e-10)
