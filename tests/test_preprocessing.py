"""SequenceScaler, make_windows and pad_sequences."""

import doctest
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklstm.preprocessing
from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler, make_windows, pad_sequences


def _padded(rng, lengths, n_features, dtype=np.float64):
    """A 3-D array of random sequences with trailing NaN padding."""
    X = rng.randn(len(lengths), max(lengths), n_features).astype(dtype) * 3 + 5
    for index, length in enumerate(lengths):
        X[index, length:] = np.nan
    return X


def _valid_rows(X):
    """The non-padding timesteps of a padded 3-D array, as (n_valid, F)."""
    return X[~np.isnan(X).all(axis=2)]


def _fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


# ------------------------------------------------------------------ doctests
def test_docstring_examples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = doctest.testmod(
            sklstm.preprocessing, optionflags=doctest.NORMALIZE_WHITESPACE
        )
    assert result.attempted > 0
    assert result.failed == 0


def test_public_names():
    assert sorted(sklstm.preprocessing.__all__) == [
        "SequenceScaler", "make_windows", "pad_sequences"
    ]


# ------------------------------------------------------------ SequenceScaler
@parametrize_with_checks([SequenceScaler()])
def test_sequence_scaler_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_scaler_tags():
    tags = SequenceScaler().__sklearn_tags__()
    assert tags.input_tags.three_d_array
    assert tags.input_tags.two_d_array
    assert not tags.input_tags.allow_nan
    assert set(tags.transformer_tags.preserves_dtype) == {"float32", "float64"}


def test_scaler_3d_standardises_over_valid_timesteps(rng):
    X = _padded(rng, [6, 3, 5, 1], n_features=3)
    X_before = X.copy()
    scaler = SequenceScaler().fit(X)
    reference = StandardScaler().fit(_valid_rows(X))
    assert_allclose(scaler.mean_, reference.mean_, rtol=1e-12)
    assert_allclose(scaler.scale_, reference.scale_, rtol=1e-12)
    assert_allclose(scaler.var_, reference.var_, rtol=1e-12)
    assert scaler.n_features_in_ == 3
    assert scaler.mean_.shape == scaler.scale_.shape == (3,)

    Xt = scaler.transform(X)
    assert Xt.shape == X.shape
    assert_array_equal(np.isnan(Xt), np.isnan(X))  # same padding, no new NaN
    valid = _valid_rows(Xt)
    assert_allclose(valid.mean(axis=0), 0, atol=1e-12)
    assert_allclose(valid.std(axis=0), 1, rtol=1e-12)
    assert_array_equal(X, X_before)  # the user's array is untouched


def test_scaler_2d_is_one_univariate_feature(rng):
    X = rng.randn(5, 7) * 2 + 3
    X[1, 4:] = np.nan  # trailing padding of a shorter sequence
    scaler = SequenceScaler().fit(X)
    values = X[~np.isnan(X)]
    assert scaler.mean_.shape == scaler.scale_.shape == (1,)
    assert_allclose(scaler.mean_, [values.mean()], rtol=1e-12)
    assert_allclose(scaler.scale_, [values.std()], rtol=1e-12)
    assert scaler.n_features_in_ == 7  # columns, as sklearn expects for 2-D

    Xt = scaler.transform(X)
    assert Xt.shape == (5, 7)
    assert_array_equal(np.isnan(Xt), np.isnan(X))
    assert_allclose(Xt[~np.isnan(Xt)].mean(), 0, atol=1e-12)
    assert_allclose(Xt[~np.isnan(Xt)].std(), 1, rtol=1e-12)
    # The same numbers as the (n, T, 1) form of the same data.
    assert_allclose(SequenceScaler().fit_transform(X[:, :, np.newaxis])[:, :, 0],
                    Xt, rtol=1e-12)


def test_scaler_univariate_forms_mix(rng):
    X3 = rng.randn(4, 6, 1)
    scaler = SequenceScaler().fit(X3)
    # Fitted on 3-D with one feature: 2-D univariate input of any length.
    assert_allclose(scaler.transform(X3[:, :3, 0]),
                    scaler.transform(X3)[:, :3, 0], rtol=1e-12)
    # Fitted on 2-D: 3-D input with one feature is accepted too.
    scaler_2d = SequenceScaler().fit(X3[:, :, 0])
    assert_allclose(scaler_2d.transform(X3[:, :2]),
                    scaler.transform(X3[:, :2]), rtol=1e-12)


def test_scaler_list_returns_list_of_the_same_shapes(rng):
    sequences = [rng.randn(5, 2), rng.randn(1, 2), rng.randn(3, 2)]
    scaler = SequenceScaler().fit(sequences)
    padded_scaler = SequenceScaler().fit(pad_sequences(sequences))
    assert_allclose(scaler.mean_, padded_scaler.mean_, rtol=1e-12)
    assert_allclose(scaler.scale_, padded_scaler.scale_, rtol=1e-12)
    assert scaler.n_features_in_ == 2

    out = scaler.transform(sequences)
    assert isinstance(out, list)
    assert [seq.shape for seq in out] == [(5, 2), (1, 2), (3, 2)]
    stacked = np.concatenate(out)
    assert_allclose(stacked.mean(axis=0), 0, atol=1e-12)
    assert_allclose(stacked.std(axis=0), 1, rtol=1e-12)
    padded_out = padded_scaler.transform(pad_sequences(sequences))
    for index, seq in enumerate(out):
        assert_allclose(seq, padded_out[index, : len(seq)], rtol=1e-12)
    # Each output is its own array.
    assert not np.shares_memory(out[0], out[2])


def test_scaler_list_of_1d_sequences_stays_1d(rng):
    sequences = [rng.randn(4), rng.randn(2)]
    out = SequenceScaler().fit(sequences).transform(sequences)
    assert [seq.shape for seq in out] == [(4,), (2,)]
    assert_allclose(np.concatenate(out).std(), 1, rtol=1e-12)


@pytest.mark.parametrize("form", ["3d", "2d", "list"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaler_keeps_form_and_dtype_and_round_trips(rng, form, dtype):
    X3 = _padded(rng, [5, 2, 4], n_features=1 if form == "2d" else 2, dtype=dtype)
    if form == "3d":
        X = X3
    elif form == "2d":
        X = X3[:, :, 0]
    else:
        X = [seq[~np.isnan(seq).all(axis=1)] for seq in X3]
    scaler = SequenceScaler().fit(X)
    Xt = scaler.transform(X)
    back = scaler.inverse_transform(Xt)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    if form == "list":
        assert isinstance(Xt, list) and isinstance(back, list)
        for original, scaled, restored in zip(X, Xt, back):
            assert scaled.dtype == restored.dtype == dtype
            assert scaled.shape == restored.shape == original.shape
            assert_allclose(restored, original, rtol=rtol)
    else:
        assert Xt.dtype == back.dtype == dtype
        assert Xt.shape == back.shape == X.shape
        assert_array_equal(np.isnan(back), np.isnan(X))
        assert_allclose(back, X, rtol=rtol)


def test_scaler_int_input_gives_float64():
    X = np.arange(24).reshape(2, 4, 3)
    Xt = SequenceScaler().fit_transform(X)
    assert Xt.dtype == np.float64


def test_inverse_transform_2d_any_number_of_columns(rng):
    scaler = SequenceScaler().fit(rng.randn(4, 6))
    Z = rng.randn(3, 2)
    assert_allclose(scaler.inverse_transform(Z), Z * scaler.scale_ + scaler.mean_,
                    rtol=1e-12)


def test_constant_feature_gets_scale_one(rng):
    X = rng.randn(3, 4, 2)
    X[:, :, 1] = 7.0
    scaler = SequenceScaler().fit(X)
    assert scaler.scale_[1] == 1.0
    assert scaler.var_[1] == 0.0
    assert_allclose(scaler.transform(X)[:, :, 1], 0, atol=1e-12)


def test_with_std_false(rng):
    X = rng.randn(3, 4, 2) + 4
    scaler = SequenceScaler(with_std=False).fit(X)
    assert scaler.scale_ is None and scaler.var_ is None
    assert_allclose(scaler.transform(X), X - X.reshape(-1, 2).mean(axis=0),
                    rtol=1e-12)
    assert_allclose(scaler.inverse_transform(scaler.transform(X)), X, rtol=1e-12)


def test_with_mean_false(rng):
    X = rng.randn(3, 4, 2) + 4
    scaler = SequenceScaler(with_mean=False).fit(X)
    assert_allclose(scaler.mean_, X.reshape(-1, 2).mean(axis=0), rtol=1e-12)
    assert_allclose(scaler.transform(X), X / X.reshape(-1, 2).std(axis=0),
                    rtol=1e-12)


def test_scaler_output_never_shares_memory_with_input(rng):
    X = rng.randn(3, 4, 2)
    scaler = SequenceScaler(with_mean=False, with_std=False).fit(X)
    Xt = scaler.transform(X)
    assert_array_equal(Xt, X)
    assert not np.shares_memory(Xt, X)
    assert not np.shares_memory(scaler.inverse_transform(X), X)
    sequences = [X[0], X[1]]
    assert not any(np.shares_memory(out, seq) for out, seq
                   in zip(scaler.transform(sequences), sequences))


def test_scaler_accepts_read_only_input(rng):
    X = _padded(rng, [4, 2], n_features=2)
    X.flags.writeable = False
    Xt = SequenceScaler().fit(X).transform(X)
    assert Xt.flags.writeable


def test_get_feature_names_out_3d(rng):
    scaler = SequenceScaler().fit(rng.randn(2, 3, 4))
    assert list(scaler.get_feature_names_out()) == ["x0", "x1", "x2", "x3"]


def test_scaler_feature_count_mismatch(rng):
    scaler = SequenceScaler().fit(rng.randn(3, 4, 2))
    msg = ("X has 3 features, but SequenceScaler is expecting 2 features as "
           "input: X must have shape (n_samples, n_timesteps, 2).")
    with pytest.raises(ValueError, match=re.escape(msg)):
        scaler.transform(rng.randn(3, 4, 3))
    with pytest.raises(ValueError, match=re.escape(msg)):
        scaler.transform([rng.randn(4, 3)])
    with pytest.raises(ValueError, match=re.escape(msg)):
        scaler.inverse_transform(rng.randn(3, 4, 3))
    with pytest.raises(ValueError, match="X has 1 features, but SequenceScaler is "
                       "expecting 2 features"):
        scaler.transform(rng.randn(3, 4))  # 2-D is univariate


def test_scaler_2d_column_count_is_checked(rng):
    scaler = SequenceScaler().fit(rng.randn(3, 5))
    with pytest.raises(ValueError, match="X has 4 features, but SequenceScaler "
                       "is expecting 5 features as input"):
        scaler.transform(rng.randn(3, 4))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_scaler_rejects_nan_or_inf_outside_padding(rng, bad):
    X = rng.randn(3, 4, 2)
    X[1, 1, 0] = bad
    msg = "Input X contains NaN or inf at sample 1, timestep 1, feature 0"
    with pytest.raises(ValueError, match=msg):
        SequenceScaler().fit(X)
    scaler = SequenceScaler().fit(rng.randn(3, 4, 2))
    with pytest.raises(ValueError, match=msg):
        scaler.transform(X)
    with pytest.raises(ValueError, match="Sequence 0 of X contains NaN or inf"):
        scaler.transform([X[1]])


def test_scaler_rejects_nan_in_the_middle_of_2d(rng):
    X = rng.randn(3, 5)
    X[2, 1:3] = np.nan  # not trailing: followed by valid values
    with pytest.raises(ValueError, match="sample 2, timestep 1"):
        SequenceScaler().fit(X)


@pytest.mark.parametrize("X, msg", [
    (np.ones(5), "got an array with 1 dimension"),
    (np.ones((2, 3, 4, 5)), "got an array with 4 dimension"),
    ([], "Found an empty list of sequences"),
    (np.full((2, 3, 1), np.nan), "Sequence 0 of X has no valid timestep"),
])
def test_scaler_rejects_bad_input(X, msg):
    with pytest.raises(ValueError, match=msg):
        SequenceScaler().fit(X)


def test_scaler_not_fitted(rng):
    with pytest.raises(NotFittedError):
        SequenceScaler().transform(rng.randn(2, 3, 1))
    with pytest.raises(NotFittedError):
        SequenceScaler().inverse_transform(rng.randn(2, 3, 1))


def test_scaler_parameter_validation(rng):
    with pytest.raises(ValueError, match="'with_mean' parameter"):
        SequenceScaler(with_mean="yes").fit(rng.randn(2, 3, 1))


def test_pipeline_with_lstm_regressor_3d_and_list(rng):
    X = _padded(rng, [6, 4, 6, 2, 5, 3, 6, 1], n_features=2)
    y = rng.randn(len(X))
    model = make_pipeline(
        SequenceScaler(),
        LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
    )
    _fit_quietly(model, X, y)
    sequences = [seq[~np.isnan(seq).all(axis=1)] for seq in X]
    prediction = model.predict(X)
    assert prediction.shape == (8,)
    assert_allclose(model.predict(sequences), prediction, rtol=1e-10)

    _fit_quietly(model, sequences, y)
    assert model.predict(sequences).shape == (8,)
    assert_allclose(model.predict(X), model.predict(sequences), rtol=1e-10)


# -------------------------------------------------------------- make_windows
def _windows_by_loop(series, window, horizon, step):
    X, y = [], []
    start = 0
    while start + window - 1 + horizon < len(series):
        X.append(series[start : start + window])
        y.append(series[start + window - 1 + horizon])
        start += step
    return np.array(X), np.array(y)


@pytest.mark.parametrize("window, horizon, step", [
    (1, 1, 1), (3, 1, 1), (3, 2, 2), (4, 3, 5), (10, 1, 1), (2, 9, 1),
])
@pytest.mark.parametrize("n_features", [None, 3])
def test_make_windows_values(rng, window, horizon, step, n_features):
    shape = (11,) if n_features is None else (11, n_features)
    series = rng.randn(*shape)
    X, y = make_windows(series, window, horizon=horizon, step=step)
    X_loop, y_loop = _windows_by_loop(series, window, horizon, step)
    n_windows = (11 - window - horizon) // step + 1
    assert X.shape == (n_windows, window, n_features or 1)
    assert y.shape == ((n_windows,) if n_features is None else (n_windows, 3))
    assert_array_equal(X, X_loop.reshape(X.shape))
    assert_array_equal(y, y_loop)


def test_make_windows_shortest_series_gives_one_window():
    X, y = make_windows(np.arange(5.0), 3, horizon=2)
    assert_array_equal(X[:, :, 0], [[0, 1, 2]])
    assert_array_equal(y, [4])


@pytest.mark.parametrize("window", [1, 3])
def test_make_windows_returns_copies(rng, window):
    series = rng.randn(8, 2)
    series_before = series.copy()
    X, y = make_windows(series, window)
    assert not np.shares_memory(X, series)
    assert not np.shares_memory(y, series)
    assert X.flags.writeable and X.flags.c_contiguous
    assert y.flags.writeable
    X[:] = 0
    y[:] = 0
    assert_array_equal(series, series_before)


def test_make_windows_dtypes():
    assert make_windows(np.arange(6, dtype=np.float32), 2)[0].dtype == np.float32
    X, y = make_windows(np.arange(6), 2)
    assert X.dtype == y.dtype == np.float64
    X, y = make_windows([1, 2, 3, 4], 2)  # array-like
    assert_array_equal(X[:, :, 0], [[1, 2], [2, 3]])
    assert_array_equal(y, [3, 4])


@pytest.mark.parametrize("name", ["window", "horizon", "step"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_make_windows_bad_integer_parameters(name, value):
    kwargs = {"window": 2, name: value}
    msg = f"{name} must be an integer >= 1, got {value!r}."
    with pytest.raises(ValueError, match=re.escape(msg)):
        make_windows(np.arange(10.0), **kwargs)


def test_make_windows_too_short():
    msg = ("series has 5 timesteps, too short for one window: window=4 and "
           "horizon=2 need at least window + horizon = 6 timesteps.")
    with pytest.raises(ValueError, match=re.escape(msg)):
        make_windows(np.arange(5.0), 4, horizon=2)
    with pytest.raises(ValueError, match="series has 0 timesteps"):
        make_windows(np.empty((0, 2)), 1)


@pytest.mark.parametrize("series, ndim", [
    (np.float64(3.0), 0), (np.ones((4, 3, 2)), 3),
])
def test_make_windows_wrong_ndim(series, ndim):
    msg = (r"series must have shape \(n_timesteps,\) or \(n_timesteps, "
           rf"n_features\); got an array with {ndim} dimension")
    with pytest.raises(ValueError, match=msg):
        make_windows(series, 1)


def test_make_windows_zero_features():
    with pytest.raises(ValueError, match="series has zero features"):
        make_windows(np.empty((5, 0)), 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_make_windows_rejects_missing_values(bad):
    series = np.arange(10.0).reshape(5, 2)
    series[3, 1] = bad
    with pytest.raises(ValueError, match="series contains NaN or inf at timestep 3"):
        make_windows(series, 2)


def test_make_windows_non_numeric():
    with pytest.raises(ValueError, match="series must contain numbers only"):
        make_windows(np.array(["a", "b", "c"]), 1)


def test_make_windows_then_lstm_regressor():
    series = np.sin(np.linspace(0, 6 * np.pi, 60))
    X, y = make_windows(series, 8, step=2)
    model = make_pipeline(
        SequenceScaler(),
        LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0),
    )
    _fit_quietly(model, X, y)
    prediction = model.predict(X)
    assert prediction.shape == y.shape == (len(X),)
    assert np.isfinite(prediction).all()


# ------------------------------------------------------------- pad_sequences
def test_pad_sequences_shapes_and_values(rng):
    sequences = [rng.randn(3, 2), rng.randn(1, 2), rng.randn(4, 2)]
    X = pad_sequences(sequences)
    assert X.shape == (3, 4, 2)
    assert X.dtype == np.float64
    for index, seq in enumerate(sequences):
        assert_array_equal(X[index, : len(seq)], seq)
        assert np.isnan(X[index, len(seq) :]).all()
    assert not any(np.shares_memory(X, seq) for seq in sequences)


def test_pad_sequences_univariate_and_options():
    X = pad_sequences([[1, 2], np.array([3.0])], max_length=3, padding_value=-1)
    assert_array_equal(X, [[[1], [2], [-1]], [[3], [-1], [-1]]])
    X = pad_sequences([np.ones(2, dtype=np.float32)] * 2)
    assert X.dtype == np.float32
    X = pad_sequences([np.ones(2, dtype=np.float32), np.ones(3)])
    assert X.dtype == np.float64
    X = pad_sequences([np.arange(3), np.arange(1)], padding_value=0,
                      dtype=np.int32)
    assert X.dtype == np.int32
    assert_array_equal(X[:, :, 0], [[0, 1, 2], [0, 0, 0]])


def test_pad_sequences_array_of_rows():
    # A 2-D array is a list of univariate sequences of equal length.
    X = pad_sequences(np.arange(6.0).reshape(2, 3))
    assert_array_equal(X[:, :, 0], [[0, 1, 2], [3, 4, 5]])


def test_pad_sequences_too_long_raises():
    sequences = [np.arange(2.0), np.arange(5.0)]
    msg = ("Sequence 1 has 5 timesteps, more than max_length=3. Raise "
           "max_length, or pass truncate='pre'")
    with pytest.raises(ValueError, match=re.escape(msg)):
        pad_sequences(sequences, max_length=3)


def test_pad_sequences_truncate():
    sequences = [np.arange(2.0), np.arange(5.0)]
    pre = pad_sequences(sequences, max_length=3, truncate="pre")
    post = pad_sequences(sequences, max_length=3, truncate="post")
    assert_array_equal(pre[:, :, 0], [[0, 1, np.nan], [2, 3, 4]])
    assert_array_equal(post[:, :, 0], [[0, 1, np.nan], [0, 1, 2]])


@pytest.mark.parametrize("kwargs, msg", [
    (dict(max_length=0), "max_length must be an integer >= 1, got 0."),
    (dict(max_length=2.0), "max_length must be an integer >= 1, got 2.0."),
    (dict(truncate="left"), "truncate must be 'error', 'pre' or 'post', got 'left'."),
    (dict(padding_value="x"), "padding_value must be a real number, got 'x'."),
    (dict(dtype=np.complex128), "dtype must be a real numeric dtype"),
    (dict(dtype=object), "dtype must be a real numeric dtype"),
    (dict(dtype=np.int64), "padding_value=nan cannot be stored in an integer "
                           "dtype (int64)"),
])
def test_pad_sequences_bad_parameters(kwargs, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        pad_sequences([np.ones(2)], **kwargs)


@pytest.mark.parametrize("sequences, msg", [
    ([], "Found an empty list of sequences"),
    ([np.ones((2, 2)), np.ones((2, 3))], "different numbers of features [2, 3]"),
    ([np.ones(2), np.array([1.0, np.nan])], "Sequence 1 of X contains NaN or inf"),
    ([np.ones((2, 2, 2))], "Sequence 0 of X has 3 dimensions"),
    ([np.ones((0, 2))], "Sequence 0 of X has zero timesteps"),
])
def test_pad_sequences_bad_sequences(sequences, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        pad_sequences(sequences)


def test_pad_sequences_predicts_like_the_list(rng):
    sequences = [rng.randn(length, 3) for length in (5, 2, 7, 1, 4)]
    model = _fit_quietly(
        LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
        sequences, rng.randn(5),
    )
    padded = pad_sequences(sequences)
    assert_allclose(model.predict(padded), model.predict(sequences), rtol=1e-12)
    longer = pad_sequences(sequences, max_length=10)
    assert_allclose(model.predict(longer), model.predict(sequences), rtol=1e-12)
