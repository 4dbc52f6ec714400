"""Early stopping, partial_fit, warm_start, learning-rate schedules, verbose."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklstm import LSTMClassifier, LSTMRegressor


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(rng, n=60, n_steps=6, n_features=2):
    X = rng.randn(n, n_steps, n_features)
    return X, X[:, :, 0].sum(axis=1)


def _same_model(a, b):
    for key, value in a.to_torch_state_dict().items():
        np.testing.assert_array_equal(value, b.to_torch_state_dict()[key])


def test_warm_start_continues_weights_and_optimizer_state(rng):
    X, y = _data(rng)
    params = dict(hidden_layer_sizes=(4,), batch_size=16, random_state=0)
    straight = LSTMRegressor(max_iter=4, **params).fit(X, y)
    resumed = LSTMRegressor(max_iter=2, **params).fit(X, y)
    resumed.set_params(warm_start=True).fit(X, y)
    assert resumed.n_iter_ == 4 and resumed.loss_curve_ == straight.loss_curve_
    _same_model(resumed, straight)


def test_partial_fit_epochs_equal_fit_epochs(rng):
    X, y = _data(rng)
    params = dict(hidden_layer_sizes=(4,), batch_size=16, random_state=0)
    fitted = LSTMRegressor(max_iter=3, **params).fit(X, y)
    streamed = LSTMRegressor(**params)
    for _ in range(3):
        streamed.partial_fit(X, y)
    assert streamed.loss_curve_ == fitted.loss_curve_
    assert streamed.t_ == 3 * len(X)
    _same_model(streamed, fitted)


def test_classifier_partial_fit_needs_classes_and_rejects_new_ones(rng):
    X = rng.randn(30, 5, 2)
    y = np.array(["a", "b", "c"])[rng.randint(0, 2, 30)]  # only 'a', 'b' seen
    model = LSTMClassifier(hidden_layer_sizes=(3,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        model.partial_fit(X, y)
    model.partial_fit(X, y, classes=["a", "b", "c"])
    assert model.predict_proba(X).shape == (30, 3)
    before = model.predict_proba(X)
    with pytest.raises(ValueError, match=r"labels \['d'\] that are not in classes_"):
        model.partial_fit(X, np.where(y == "a", "d", y))
    with pytest.raises(ValueError, match="X has 3 features"):
        model.partial_fit(rng.randn(30, 5, 3), y)
    np.testing.assert_array_equal(model.predict_proba(X), before)
    assert model.n_iter_ == 1


def test_partial_fit_rejects_a_different_output_shape(rng):
    X, y = _data(rng)
    model = LSTMRegressor(hidden_layer_sizes=(3,)).partial_fit(X, y)
    before = model.predict(X)
    with pytest.raises(ValueError, match="y has 2 output"):
        model.partial_fit(X, np.column_stack([y, y]))
    np.testing.assert_array_equal(model.predict(X), before)


def test_warm_start_cannot_change_the_architecture(rng):
    X, y = _data(rng)
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1).fit(X, y)
    model.set_params(warm_start=True, hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match="architecture"):
        model.fit(X, y)


def test_early_stopping_keeps_the_best_epoch(rng):
    X, y = _data(rng, n=120)
    model = LSTMRegressor(hidden_layer_sizes=(6,), early_stopping=True,
                          validation_fraction=0.25, n_iter_no_change=3,
                          learning_rate_init=0.02, max_iter=60, random_state=0)
    model.fit(X, y)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ and model.best_loss_ is None
    assert model.best_validation_score_ == max(scores)
    # The fitted weights are those of the best epoch, not the last one.
    validation = _validation_rows(model, len(X))
    assert model.score(X[validation], y[validation]) == pytest.approx(
        model.best_validation_score_, rel=1e-9
    )


def _validation_rows(model, n_samples):
    """The rows fit held out: the split is drawn right after initialisation."""
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    from sklstm._network import LSTMNetwork

    rng = check_random_state(model.random_state)
    LSTMNetwork(**model._network_spec).init_params(rng, np.float64)
    return train_test_split(np.arange(n_samples), random_state=rng,
                            test_size=model.validation_fraction)[1]


def test_early_stopping_split_is_stratified(rng):
    X = rng.randn(100, 4, 1)
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    model = LSTMClassifier(hidden_layer_sizes=(3,), early_stopping=True,
                           validation_fraction=0.2, max_iter=2, random_state=0)
    model.fit(X, y)
    assert len(model.validation_scores_) == 2


def test_too_small_validation_set(rng):
    X, y = _data(rng, n=8)
    with pytest.raises(ValueError, match="validation set is too small"):
        LSTMRegressor(early_stopping=True, validation_fraction=0.1).fit(X, y)


def test_invscaling_learning_rate(rng):
    X, y = _data(rng, n=20)
    model = LSTMRegressor(hidden_layer_sizes=(3,), solver="sgd",
                          learning_rate="invscaling", power_t=0.5,
                          learning_rate_init=0.1, max_iter=3).fit(X, y)
    assert model._effective_learning_rate == pytest.approx(0.1 / (60 + 1) ** 0.5)


def test_adaptive_learning_rate_divides_by_five_on_plateaus(rng):
    X, y = _data(rng, n=20)
    model = LSTMRegressor(hidden_layer_sizes=(3,), solver="sgd",
                          learning_rate="adaptive", tol=1e9, n_iter_no_change=1,
                          learning_rate_init=0.1, max_iter=6).fit(X, y)
    # Epoch 1 improves on nothing; epochs 2-3 stall (count 2 > 1): /5;
    # epochs 4-5 stall: /5; epoch 6 stalls once.
    assert model._effective_learning_rate == pytest.approx(0.1 / 25)
    assert model.n_iter_ == 6


def test_verbose_levels(rng, capsys):
    X, y = _data(rng, n=40)
    LSTMRegressor(hidden_layer_sizes=(2,), max_iter=2, batch_size=2, verbose=2,
                  early_stopping=True, validation_fraction=0.2).fit(X, y)
    out = capsys.readouterr().out
    assert "validation score = " in out and "time = " in out
    assert "16/16 minibatches" in out


def test_n_params(rng):
    X, y = rng.randn(10, 4, 3), rng.randint(0, 3, 10)
    model = LSTMClassifier(hidden_layer_sizes=(5, 2), bidirectional=True,
                           max_iter=1).fit(X, y)
    lstm = 2 * (4 * 5 * (3 + 5) + 8 * 5) + 2 * (4 * 2 * (10 + 2) + 8 * 2)
    assert model.n_params_ == lstm + 3 * 4 + 3


def test_warm_start_may_switch_the_solver(rng):
    X, y = _data(rng)
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, y)
    model.set_params(warm_start=True, solver="sgd", learning_rate_init=0.01)
    model.fit(X, y)
    assert model.n_iter_ == 4 and model._effective_learning_rate == 0.01
