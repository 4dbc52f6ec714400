"""Preprocessing for sequence data.

scikit-learn's own transformers reject 3-D arrays; these helpers fill the gap:

- :class:`SequenceScaler` standardises every feature over all samples and all
  valid timesteps, for every input form the sklstm estimators accept.
- :func:`make_windows` cuts a time series into ``(X, y)`` windows for
  forecasting.
- :func:`pad_sequences` stacks sequences of different lengths into one 3-D
  array, padded with trailing NaN timesteps as the estimators expect.

Examples
--------
>>> import numpy as np
>>> from sklearn.pipeline import make_pipeline
>>> from sklstm import LSTMRegressor
>>> from sklstm.preprocessing import SequenceScaler, make_windows
>>> series = np.sin(np.linspace(0, 20, 200))
>>> X, y = make_windows(series, window=12)
>>> X.shape, y.shape
((188, 12, 1), (188,))
>>> model = make_pipeline(SequenceScaler(), LSTMRegressor(
...     hidden_layer_sizes=(8,), max_iter=3, random_state=0))
>>> model.fit(X, y).predict(X[:2]).shape
(2,)
"""

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ._compat import _fit_context
from ._validation import (
    FLOAT_DTYPES,
    _as_float_array,
    _check_sequence_list,
    _is_sequence_list,
    check_sequences,
)

__all__ = ["SequenceScaler", "make_windows", "pad_sequences"]


class SequenceScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise each feature of sequences to zero mean and unit variance.

    The sequence counterpart of :class:`~sklearn.preprocessing.StandardScaler`:
    the mean and standard deviation of every feature are taken over all
    samples and all valid timesteps together, so ``z = (x - mean_) / scale_``
    uses the same statistics at every timestep. Padding (trailing all-NaN
    timesteps) takes no part in the statistics and stays NaN in the output.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract the mean of each feature.
    with_std : bool, default=True
        Divide by the standard deviation of each feature.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of each feature over all valid timesteps of the training data
        (computed even when ``with_mean=False``). float64.
    var_ : ndarray of shape (n_features,) or None
        Variance of each feature; None when ``with_std=False``.
    scale_ : ndarray of shape (n_features,) or None
        Standard deviation of each feature, 1 for a constant feature (as in
        ``StandardScaler``); None when ``with_std=False``.
    n_features_in_ : int
        Features per timestep for 3-D or list input; for 2-D (univariate)
        input, the number of columns, i.e. timesteps, as in the sklstm
        estimators.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` is a DataFrame of univariate sequences.

    See Also
    --------
    sklearn.preprocessing.StandardScaler : The same for 2-D tabular data.
    pad_sequences : Stack sequences of different lengths into one array.

    Notes
    -----
    Input forms, and the output form each gives back:

    - 3-D array ``(n_samples, n_timesteps, n_features)``, possibly padded with
      trailing all-NaN timesteps: a 3-D array of the same shape with the same
      NaN padding.
    - 2-D array ``(n_samples, n_timesteps)``: univariate sequences, that is
      **one** feature, so a single mean and a single standard deviation are
      taken over all values (not one per column, as ``StandardScaler`` would).
      Trailing NaN is padding here too. A 2-D array comes back. As for every
      2-D input in scikit-learn, ``n_features_in_`` is the number of columns,
      and ``transform`` expects the same number of columns as ``fit``.
    - A list of arrays of shape ``(n_timesteps_i, n_features)`` or
      ``(n_timesteps_i,)``: a list of new arrays of the same shapes.

    float32 input gives float32 output; other numbers give float64. The
    statistics are always accumulated in float64. NaN anywhere but in
    trailing padding, and infinity anywhere, raise a ``ValueError``. The
    input is never modified.

    ``set_output(transform="pandas")`` only makes sense for 2-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from sklstm.preprocessing import SequenceScaler
    >>> X = np.array([[[0.0, 10.0], [2.0, 30.0]],
    ...               [[4.0, 50.0], [np.nan, np.nan]]])  # second one is shorter
    >>> scaler = SequenceScaler().fit(X)
    >>> scaler.mean_, scaler.scale_.round(3)
    (array([ 2., 30.]), array([ 1.633, 16.33 ]))
    >>> scaler.transform(X).round(3)
    array([[[-1.225, -1.225],
            [ 0.   ,  0.   ]],
    <BLANKLINE>
           [[ 1.225,  1.225],
            [   nan,    nan]]])
    >>> [seq.shape for seq in scaler.transform([X[0], X[1, :1]])]
    [(2, 2), (1, 2)]
    """

    _parameter_constraints: dict = {
        "with_mean": ["boolean"],
        "with_std": ["boolean"],
    }

    def __init__(self, *, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute the mean and standard deviation of each feature.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like of shape (n_timesteps_i, \
n_features)
            Sequences. 2-D input is univariate sequences. Trailing all-NaN
            timesteps of an array are padding.
        y : None
            Ignored.

        Returns
        -------
        self : SequenceScaler
            The fitted scaler.
        """
        X_padded, lengths, _ = self._check_input(X, reset=True)
        valid = np.arange(X_padded.shape[1]) < lengths[:, np.newaxis]
        values = X_padded[valid]  # (n_valid_timesteps, n_features)
        self.mean_ = values.mean(axis=0, dtype=np.float64)
        if self.with_std:
            self.var_ = values.var(axis=0, dtype=np.float64)
            # StandardScaler's test for a constant feature: the variance is
            # within the rounding error of a two-pass computation.
            eps = np.finfo(np.float64).eps
            n_values = values.shape[0]
            constant = self.var_ <= (
                n_values * eps * self.var_ + (n_values * self.mean_ * eps) ** 2
            )
            self.scale_ = np.where(constant, 1.0, np.sqrt(self.var_))
        else:
            self.var_ = None
            self.scale_ = None
        return self

    def transform(self, X):
        """Standardise sequences with the statistics learnt in ``fit``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like of shape (n_timesteps_i, \
n_features)
            Sequences, in any form ``fit`` accepts.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of ndarray
            Standardised sequences, in the form of ``X``, with the same NaN
            padding. Always a new array.
        """
        check_is_fitted(self)
        X_padded, lengths, form = self._check_input(X, reset=False)
        X_new = X_padded.copy()  # X_padded may be the user's array
        if self.with_mean:
            X_new -= self.mean_.astype(X_new.dtype)
        if self.with_std:
            X_new /= self.scale_.astype(X_new.dtype)
        return _restore_form(X_new, lengths, form)

    def inverse_transform(self, X):
        """Undo the scaling: ``X * scale_ + mean_``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like of shape (n_timesteps_i, \
n_features)
            Standardised sequences. A 2-D array may have any number of
            columns here, since a univariate scaler has one mean and one
            scale for every timestep.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_timesteps, n_features) \
or (n_samples, n_timesteps), or list of ndarray
            Sequences in the original units, in the form of ``X``.
        """
        check_is_fitted(self)
        X_padded, lengths, form = self._check_input(X, reset=False, inverse=True)
        X_original = X_padded.copy()
        if self.with_std:
            X_original *= self.scale_.astype(X_original.dtype)
        if self.with_mean:
            X_original += self.mean_.astype(X_original.dtype)
        return _restore_form(X_original, lengths, form)

    def _check_input(self, X, *, reset, inverse=False):
        """Validate ``X``; return it padded, its lengths, and its form.

        ``form`` is ``("3d",)``, ``("2d",)`` or ``("list", ndims)`` with the
        number of dimensions of each sequence of the list.
        """
        if _is_sequence_list(X):
            form = ("list", [np.ndim(seq) for seq in X])
        else:
            ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim
            form = ("2d",) if ndim == 2 else ("3d",)
            if ndim == 2 and inverse:
                # Any number of columns, and no feature-name check: the
                # output of transform is a plain array.
                X = check_array(X, dtype=FLOAT_DTYPES, ensure_all_finite=False)
                X = X[:, :, np.newaxis]
        X_padded, lengths = check_sequences(self, X, reset=reset)
        return X_padded, lengths, form

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        # Only trailing NaN padding is accepted, not NaN as a missing value
        # anywhere (which is what allow_nan promises), as for the estimators.
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _restore_form(X, lengths, form):
    """Give the padded result ``X`` the form of the input it came from."""
    if form[0] == "list":
        return [
            X[index, :length].copy() if ndim == 2 else X[index, :length, 0].copy()
            for index, (length, ndim) in enumerate(zip(lengths, form[1]))
        ]
    padding = np.arange(X.shape[1]) >= lengths[:, np.newaxis]
    X[padding] = np.nan
    return X[:, :, 0] if form[0] == "2d" else X


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def make_windows(series, window, *, horizon=1, step=1):
    """Cut a time series into input windows and the values that follow them.

    Window ``i`` covers timesteps ``i * step`` to ``i * step + window - 1``;
    its target is the value ``horizon`` steps after the window's last
    timestep, ``series[i * step + window - 1 + horizon]``.

    Parameters
    ----------
    series : array-like of shape (n_timesteps,) or (n_timesteps, n_features)
        A univariate or multivariate series, without missing values.
    window : int
        Timesteps in each input window, at least 1.
    horizon : int, default=1
        How many steps after a window's last timestep its target lies, at
        least 1 (1: the next value).
    step : int, default=1
        Stride between the starts of consecutive windows, at least 1.

    Returns
    -------
    X : ndarray of shape (n_windows, window, n_features)
        The windows, always 3-D (``n_features=1`` for a 1-D series), with
        ``n_windows = (n_timesteps - window - horizon) // step + 1``.
    y : ndarray of shape (n_windows,) or (n_windows, n_features)
        The target of each window: 1-D for a 1-D series, one column per
        feature for a 2-D series (select a column for a single target).

    Notes
    -----
    ``X`` and ``y`` are new arrays, never views of ``series``. float32 input
    stays float32; other numbers become float64. The last timesteps of the
    series are left unused when ``step`` does not divide the remainder.

    Examples
    --------
    >>> import numpy as np
    >>> from sklstm.preprocessing import make_windows
    >>> X, y = make_windows(np.arange(7), window=3, horizon=2, step=2)
    >>> X[:, :, 0]
    array([[0., 1., 2.],
           [2., 3., 4.]])
    >>> y
    array([4., 6.])
    >>> X, y = make_windows(np.ones((100, 4)), window=10)
    >>> X.shape, y.shape
    ((90, 10, 4), (90, 4))
    """
    window = _check_positive_int(window, "window")
    horizon = _check_positive_int(horizon, "horizon")
    step = _check_positive_int(step, "step")
    series = _as_float_array(series, "series")
    if series.ndim not in (1, 2):
        raise ValueError(
            f"series must have shape (n_timesteps,) or (n_timesteps, "
            f"n_features); got an array with {series.ndim} dimension(s) of "
            f"shape {series.shape}."
        )
    if series.ndim == 2 and series.shape[1] == 0:
        raise ValueError(
            f"series has zero features (shape={series.shape}); expected shape "
            "(n_timesteps, n_features) with n_features >= 1."
        )
    n_timesteps = series.shape[0]
    if n_timesteps < window + horizon:
        raise ValueError(
            f"series has {n_timesteps} timesteps, too short for one window: "
            f"window={window} and horizon={horizon} need at least "
            f"window + horizon = {window + horizon} timesteps."
        )
    finite = np.isfinite(series)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"series contains NaN or inf at timestep {bad[0]}; make_windows "
            "needs a complete series (fill or drop missing values first)."
        )

    series_2d = series.reshape(n_timesteps, -1)
    # (n_starts, n_features, window) views, one per possible window start.
    views = sliding_window_view(series_2d[: n_timesteps - horizon], window, axis=0)
    X = views[::step].transpose(0, 2, 1).copy()
    y = series[window - 1 + horizon :: step][: X.shape[0]].copy()
    return X, y


def pad_sequences(
    sequences, *, max_length=None, padding_value=np.nan, dtype=None,
    truncate="error",
):
    """Stack sequences of different lengths into one padded 3-D array.

    Each sequence is padded after its end (trailing padding) with
    ``padding_value``. With the default NaN padding the result is the padded
    3-D form the sklstm estimators read: an estimator gives the same output
    for it as for the list itself.

    Parameters
    ----------
    sequences : list of array-like of shape (n_timesteps_i, n_features) or \
(n_timesteps_i,)
        The sequences, all with the same number of features; 1-D sequences
        are univariate. Their values must be finite.
    max_length : int, default=None
        Timesteps of the result; None: the longest sequence's length.
    padding_value : float, default=np.nan
        Value of the padding timesteps. The estimators only recognise NaN as
        padding; any other value is read as data.
    dtype : data-type, default=None
        dtype of the result; None: float32 when every sequence is float32,
        float64 otherwise.
    truncate : {'error', 'pre', 'post'}, default='error'
        What to do with a sequence longer than ``max_length``: 'error' raises
        a ``ValueError`` (nothing is cut silently), 'pre' drops its first
        timesteps (keeping the most recent ``max_length``), 'post' drops its
        last timesteps.

    Returns
    -------
    X : ndarray of shape (n_sequences, max_length, n_features)
        The padded sequences.

    Examples
    --------
    >>> import numpy as np
    >>> from sklstm.preprocessing import pad_sequences
    >>> pad_sequences([np.array([1.0, 2.0, 3.0]), np.array([4.0])])[:, :, 0]
    array([[ 1.,  2.,  3.],
           [ 4., nan, nan]])
    >>> pad_sequences([np.ones((2, 3)), np.ones((5, 3))], max_length=4,
    ...               padding_value=0.0, truncate="pre").shape
    (2, 4, 3)
    """
    if max_length is not None:
        max_length = _check_positive_int(max_length, "max_length")
    if truncate not in ("error", "pre", "post"):
        raise ValueError(
            f"truncate must be 'error', 'pre' or 'post', got {truncate!r}."
        )
    if not isinstance(padding_value, numbers.Real):
        raise ValueError(
            f"padding_value must be a real number, got {padding_value!r}."
        )
    sequences = _check_sequence_list(sequences)
    if dtype is None:
        dtype = sequences[0].dtype
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise ValueError(
            f"dtype must be a real numeric dtype (float or integer), got {dtype}."
        )
    if dtype.kind in "iu" and not np.isfinite(padding_value):
        raise ValueError(
            f"padding_value={padding_value!r} cannot be stored in an integer "
            f"dtype ({dtype}); pass a finite padding_value or a float dtype."
        )

    lengths = [len(seq) for seq in sequences]
    if max_length is None:
        max_length = max(lengths)
    elif truncate == "error" and max(lengths) > max_length:
        index = int(np.argmax(lengths))
        raise ValueError(
            f"Sequence {index} has {lengths[index]} timesteps, more than "
            f"max_length={max_length}. Raise max_length, or pass "
            "truncate='pre' (keep the last max_length timesteps) or "
            "truncate='post' (keep the first)."
        )
    X = np.full(
        (len(sequences), max_length, sequences[0].shape[1]), padding_value,
        dtype=dtype,
    )
    for index, seq in enumerate(sequences):
        seq = seq[-max_length:] if truncate == "pre" else seq[:max_length]
        X[index, : len(seq)] = seq
    return X
