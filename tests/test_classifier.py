"""LSTMClassifier: memory, labels, probabilities, binary/multiclass/multilabel."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklstm import LSTMClassifier


def _quiet_fit(model, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **kwargs)


def test_remembers_the_first_element_of_a_noise_sequence():
    """The label is the sign of the first of 20 noise values: the other 19
    steps carry no information, so only memory can solve it.

    The loss sits on a plateau at log 2 before the model finds the memory,
    and whether it leaves it in time is sensitive to rounding: with 16 units,
    30 epochs and no clipping, 12 seeds reached 0.95 in only 5 to 7 cases,
    depending on the order of the weight gradients' sums. With 32 units,
    clipping and 60 epochs 11 of 12 (seed, order) pairs did, this seed in
    both orders (1.00)."""
    rng = np.random.RandomState(0)
    X = rng.randn(2400, 20, 1).astype(np.float32)
    y = (X[:, 0, 0] > 0).astype(int)
    model = LSTMClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.005,
                           clip_norm=1.0, batch_size=32, max_iter=60,
                           n_iter_no_change=60, random_state=0)
    _quiet_fit(model, X[:2000], y[:2000])
    assert model.score(X[2000:], y[2000:]) > 0.95


def test_keeps_a_running_total_over_fifty_steps():
    """The label is the sign of the sum of 50 noise values."""
    rng = np.random.RandomState(0)
    X = rng.randn(2400, 50, 1)
    y = np.where(X.sum(axis=(1, 2)) > 0, "positive", "negative")
    model = LSTMClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                           batch_size=32, max_iter=25, random_state=0)
    _quiet_fit(model, X[:2000], y[:2000])
    assert model.score(X[2000:], y[2000:]) > 0.95


def test_string_labels_and_classes(rng):
    X = rng.randn(60, 6, 2)
    y = np.array(["cat", "dog", "emu"])[rng.randint(0, 3, 60)]
    model = _quiet_fit(LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2), X, y)
    np.testing.assert_array_equal(model.classes_, ["cat", "dog", "emu"])
    assert set(model.predict(X)) <= {"cat", "dog", "emu"}
    assert model.out_activation_ == "softmax"


@pytest.mark.parametrize("n_classes", [2, 4])
def test_probabilities(n_classes, rng):
    X = rng.randn(50, 5, 3)
    y = rng.randint(0, n_classes, 50)
    model = _quiet_fit(LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2), X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (50, n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(proba))
    np.testing.assert_array_equal(model.predict(X),
                                  model.classes_[proba.argmax(axis=1)])


def test_binary_uses_one_logistic_output(rng):
    X, y = rng.randn(40, 4, 2), np.tile([True, False], 20)
    model = _quiet_fit(LSTMClassifier(hidden_layer_sizes=(3,), max_iter=2), X, y)
    assert model.n_outputs_ == 1 and model.out_activation_ == "logistic"
    assert model.predict(X).dtype == bool


def test_multilabel_indicator_targets(rng):
    X = rng.randn(60, 5, 2)
    Y = np.column_stack([X[:, 0, 0] > 0, X[:, -1, 1] > 0, X[:, 2, 0] > 1])
    Y = Y.astype(int)
    model = _quiet_fit(
        LSTMClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.02,
                       max_iter=60, random_state=0), X, Y)
    assert model.predict(X).shape == (60, 3)
    assert model.predict_proba(X).shape == (60, 3)
    assert (model.predict(X) == Y).mean() > 0.8


def test_single_class_is_an_error(rng):
    with pytest.raises(ValueError, match="at least 2 classes"):
        LSTMClassifier(max_iter=1).fit(rng.randn(10, 3, 1), np.ones(10))


def test_unit_sample_weight_equals_no_weight(rng):
    X, y = rng.randn(30, 4, 2), rng.randint(0, 3, 30)
    params = dict(hidden_layer_sizes=(3,), max_iter=3, random_state=0)
    plain = _quiet_fit(LSTMClassifier(**params), X, y)
    weighted = _quiet_fit(LSTMClassifier(**params), X, y, sample_weight=np.ones(30))
    assert plain.loss_curve_ == weighted.loss_curve_
    np.testing.assert_array_equal(plain.predict_proba(X), weighted.predict_proba(X))


def test_zero_weight_samples_do_not_count(rng):
    X, y = rng.randn(30, 4, 2), rng.randint(0, 2, 30)
    params = dict(hidden_layer_sizes=(3,), max_iter=3, random_state=0,
                  shuffle=False, batch_size=30)
    weights = np.r_[np.ones(20), np.zeros(10)]
    weighted = _quiet_fit(LSTMClassifier(**params), X, y, sample_weight=weights)
    garbage = y.copy()
    garbage[20:] = 1 - garbage[20:]
    flipped = _quiet_fit(LSTMClassifier(**params), X, garbage, sample_weight=weights)
    np.testing.assert_allclose(weighted.predict_proba(X), flipped.predict_proba(X),
                               rtol=1e-12)
