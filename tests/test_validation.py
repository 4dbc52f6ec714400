"""Every accepted input form, and a clear error for every bad one."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklstm import LSTMClassifier, LSTMRegressor


@pytest.fixture
def fitted(rng):
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(rng.randn(12, 5, 2), rng.randn(12))


def test_list_of_sequences_equals_nan_padded_array(fitted, rng):
    sequences = [rng.randn(n, 2) for n in (5, 2, 4)]
    padded = np.full((3, 5, 2), np.nan)
    for index, seq in enumerate(sequences):
        padded[index, : len(seq)] = seq
    padded_copy = padded.copy()
    np.testing.assert_allclose(fitted.predict(sequences), fitted.predict(padded),
                               rtol=1e-12)
    np.testing.assert_array_equal(padded, padded_copy)  # user data untouched


def test_list_of_lists_is_an_array(fitted, rng):
    X = rng.randn(3, 4, 2)
    np.testing.assert_array_equal(fitted.predict(X.tolist()), fitted.predict(X))


def test_read_only_input_is_accepted(fitted, rng):
    X = rng.randn(4, 5, 2)
    X.flags.writeable = False
    assert fitted.predict(X).shape == (4,)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((3, 5, 3)), r"X has 3 features, but LSTMRegressor is expecting 2"),
        (np.zeros((3, 4, 2, 1)), r"got an array with 4 dimension"),
        (np.zeros(5), r"got an array with 1 dimension"),
        (np.zeros((0, 4, 2)), r"0 sample"),
        (np.zeros((3, 0, 2)), r"zero timesteps"),
        (np.full((2, 3, 2), np.nan), r"Sequence 0 of X has no valid timestep"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], r"Sequence 1 of X has zero timesteps"),
        ([np.zeros((3, 2)), np.zeros((3, 3))], r"different numbers of features"),
        ([np.zeros((3, 2)), np.zeros((3, 2, 1))], r"Sequence 1 of X has 3 dim"),
        ([], r"empty list"),
        (np.array([[["a", "b"]]]), r"numbers only"),
        (np.zeros((2, 3, 2)) + 1j, r"complex"),
    ],
)
def test_bad_X_gets_a_clear_error(fitted, X, match):
    with pytest.raises(ValueError, match=match):
        fitted.predict(X)


@pytest.mark.parametrize("where", ["middle", "partial_row", "inf"])
def test_non_finite_values_outside_trailing_padding(fitted, rng, where):
    X = rng.randn(3, 5, 2)
    X[1, 3:] = np.nan  # valid trailing padding
    if where == "middle":
        X[0, 2] = np.nan
    elif where == "partial_row":
        X[2, 4, 0] = np.nan
    else:
        X[2, 0, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf at sample"):
        fitted.predict(X)


def test_nan_in_a_list_sequence_is_an_error(fitted, rng):
    seq = rng.randn(4, 2)
    seq[3] = np.nan
    with pytest.raises(ValueError, match="Sequence 0 of X contains NaN"):
        fitted.predict([seq])


def test_failed_fit_keeps_the_fitted_model(fitted, rng):
    X = rng.randn(4, 5, 2)
    before = fitted.predict(X)
    with pytest.raises(ValueError):
        fitted.fit(np.full((3, 5, 2), np.nan), np.zeros(3))
    with pytest.raises(ValueError):
        fitted.fit(rng.randn(3, 5, 2), np.array([1.0, np.nan, 2.0]))
    np.testing.assert_array_equal(fitted.predict(X), before)


def test_sample_weight_checks(rng):
    X, y = rng.randn(10, 3, 1), rng.randint(0, 2, 10)
    with pytest.raises(ValueError, match="sample_weight"):
        LSTMClassifier(max_iter=1).fit(X, y, sample_weight=np.ones(9))
    with pytest.raises(ValueError, match="[Nn]egative"):
        LSTMClassifier(max_iter=1).fit(X, y, sample_weight=-np.ones(10))


def test_invalid_parameters_are_rejected_at_fit(rng):
    X, y = rng.randn(10, 3, 1), rng.randn(10)
    for params in ({"hidden_layer_sizes": (4, 0)}, {"dropout": 1.0},
                   {"solver": "lbfgs"}, {"clip_norm": 0.0}):
        model = LSTMRegressor(**params)  # __init__ stores, never validates
        with pytest.raises(ValueError):
            model.fit(X, y)


def test_proj_size_must_be_smaller_than_the_layers(rng):
    X, y = rng.randn(10, 3, 1), rng.randn(10)
    with pytest.raises(ValueError, match="proj_size=4 must be smaller"):
        LSTMRegressor(hidden_layer_sizes=(8, 4), proj_size=4).fit(X, y)


def test_dropout_with_one_layer_warns(rng):
    X, y = rng.randn(10, 3, 1), rng.randn(10)
    with pytest.warns(UserWarning, match="no effect with one LSTM layer"):
        LSTMRegressor(hidden_layer_sizes=(3,), dropout=0.2, max_iter=1).fit(X, y)
