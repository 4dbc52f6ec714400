"""output="sequence": one prediction per timestep."""

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


def test_regressor_learns_a_delayed_copy(rng):
    """y_t = x_{t-1}: each step must remember the previous input."""
    X = rng.randn(600, 15, 1)
    y = np.zeros((600, 15))
    y[:, 1:] = X[:, :-1, 0]
    model = LSTMRegressor(hidden_layer_sizes=(16,), output="sequence",
                          learning_rate_init=0.01, batch_size=32, max_iter=40,
                          random_state=0).fit(X[:500], y[:500])
    assert model.predict(X[500:]).shape == (100, 15)
    assert model.score(X[500:], y[500:]) > 0.9


def test_variable_lengths_give_lists_and_ignore_padding(rng):
    sequences = [rng.randn(n, 2) for n in (4, 7, 1, 7, 5)]
    targets = [seq[:, 0].cumsum() for seq in sequences]
    model = LSTMRegressor(hidden_layer_sizes=(5,), bidirectional=True,
                          output="sequence", max_iter=3, batch_size=2,
                          random_state=0).fit(sequences, targets)
    predictions = model.predict(sequences)
    assert isinstance(predictions, list)
    assert [p.shape for p in predictions] == [(4,), (7,), (1,), (7,), (5,)]
    padded = np.full((5, 9, 2), np.nan)
    for index, seq in enumerate(sequences):
        padded[index, : len(seq)] = seq
    for index, seq in enumerate(sequences):
        alone = model.predict([seq])[0]
        np.testing.assert_allclose(alone, predictions[index], rtol=1e-12)
        np.testing.assert_allclose(model.predict(padded)[index], alone, rtol=1e-12)


def test_padded_targets_equal_list_targets(rng):
    sequences = [rng.randn(n, 2) for n in (4, 6, 2)]
    targets = [rng.randn(len(seq), 2) for seq in sequences]
    padded_X = np.full((3, 6, 2), np.nan)
    padded_y = np.full((3, 6, 2), 1e9)  # ignored past each length
    for index, (seq, target) in enumerate(zip(sequences, targets)):
        padded_X[index, : len(seq)] = seq
        padded_y[index, : len(seq)] = target
    params = dict(hidden_layer_sizes=(3,), output="sequence", max_iter=2,
                  random_state=0)
    from_lists = LSTMRegressor(**params).fit(sequences, targets)
    from_arrays = LSTMRegressor(**params).fit(padded_X, padded_y)
    assert from_lists.loss_curve_ == from_arrays.loss_curve_
    assert from_lists.predict(sequences)[0].shape == (4, 2)


def test_classifier_labels_every_timestep(rng):
    """The label at t says whether the running sum so far is positive."""
    X = rng.randn(400, 12, 1)
    y = np.where(X[:, :, 0].cumsum(axis=1) > 0, "up", "down")
    model = LSTMClassifier(hidden_layer_sizes=(12,), output="sequence",
                           learning_rate_init=0.02, batch_size=32, max_iter=30,
                           random_state=0).fit(X[:300], y[:300])
    np.testing.assert_array_equal(model.classes_, ["down", "up"])
    assert model.predict(X[300:]).shape == (100, 12)
    proba = model.predict_proba(X[300:])
    assert proba.shape == (100, 12, 2)
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0)
    assert model.score(X[300:], y[300:]) > 0.9


def test_multiclass_per_timestep_with_lists(rng):
    sequences = [rng.randn(n, 1) for n in (5, 3, 8, 2)]
    labels = [np.array(["a", "b", "c"])[rng.randint(0, 3, len(s))] for s in sequences]
    model = LSTMClassifier(hidden_layer_sizes=(4,), output="sequence",
                           max_iter=2).fit(sequences, labels)
    proba = model.predict_proba(sequences)
    assert [p.shape for p in proba] == [(5, 3), (3, 3), (8, 3), (2, 3)]
    assert all(set(p) <= {"a", "b", "c"} for p in model.predict(sequences))
    assert 0.0 <= model.score(sequences, labels) <= 1.0


def test_early_stopping_and_partial_fit_with_sequences(rng):
    X, y = rng.randn(80, 6, 2), rng.randn(80, 6)
    model = LSTMRegressor(hidden_layer_sizes=(3,), output="sequence",
                          early_stopping=True, max_iter=4).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_
    streamed = LSTMRegressor(hidden_layer_sizes=(3,), output="sequence")
    streamed.partial_fit(X, y).partial_fit(X[:10], y[:10])
    assert streamed.n_iter_ == 2


@pytest.mark.parametrize("y_shape", [(20,), (20, 5), (19, 6), (20, 6, 2, 1)])
def test_targets_must_have_one_row_per_timestep(rng, y_shape):
    X = rng.randn(20, 6, 2)
    with pytest.raises(ValueError, match="one target per timestep"):
        LSTMRegressor(output="sequence", max_iter=1).fit(X, np.zeros(y_shape))


def test_list_targets_must_match_sequence_lengths(rng):
    sequences = [rng.randn(4, 1), rng.randn(3, 1)]
    with pytest.raises(ValueError, match=r"y\[1\] has shape \(4,\) but sequence 1"):
        LSTMRegressor(output="sequence", max_iter=1).fit(
            sequences, [np.zeros(4), np.zeros(4)])


def test_warm_start_cannot_switch_output(rng):
    X, y = rng.randn(20, 4, 1), rng.randn(20)
    model = LSTMRegressor(hidden_layer_sizes=(2,), max_iter=1).fit(X, y)
    model.set_params(warm_start=True, output="sequence")
    with pytest.raises(ValueError, match="architecture"):
        model.fit(X, np.zeros((20, 4)))
