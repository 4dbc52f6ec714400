"""One gate for every accepted form of sequence input.

``check_sequences`` turns each accepted form of ``X`` into one internal form:
a float array of shape ``(n_samples, n_timesteps, n_features)`` whose padding
is zero, plus the valid length of every sequence.

Accepted forms (see the user guide):

- 3-D array ``(n_samples, n_timesteps, n_features)``. Shorter sequences may
  be padded with trailing all-NaN timesteps. ``n_features_in_`` is
  ``n_features``; ``n_timesteps`` may differ between ``fit`` and ``predict``.
- 2-D array ``(n_samples, n_timesteps)``: univariate sequences, read as
  ``(n_samples, n_timesteps, 1)``; trailing NaN is padding here too. As for
  every 2-D input in scikit-learn, ``n_features_in_`` is the number of
  columns, here ``n_timesteps``, so ``predict`` expects the same number.
- A list of arrays of shape ``(n_timesteps_i, n_features)`` (or 1-D arrays,
  univariate), of different lengths. ``n_features_in_`` is ``n_features``.
"""

import numbers

import numpy as np
from sklearn.utils.validation import check_array, validate_data

FLOAT_DTYPES = (np.float64, np.float32)


def _float_dtype(dtype):
    """Compute dtype for input of ``dtype``: float32 stays, the rest float64."""
    return np.float32 if dtype == np.float32 else np.float64


def _as_float_array(X, what):
    """``X`` as a float32/float64 array, with a clear error for non-numbers."""
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"{what} contains complex values; expected real numbers.")
    if X.dtype.kind in "biuf":
        return X.astype(_float_dtype(X.dtype), copy=False)
    try:
        return X.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must contain numbers only; could not convert "
            f"{X.dtype} data to float: {exc}"
        ) from None


def _lengths_from_nan_padding(X):
    """Valid length of each sequence of a 3-D array padded with trailing NaN.

    A timestep whose features are all NaN is padding when every later
    timestep is padding too. Any other NaN or an infinity is an error.
    """
    if X.size and np.isfinite(X).all():
        # No padding (the common case): one pass, not the checks below, which
        # copy X (X[valid]) and took 6.5 ms on (4096, 50, 8) float32.
        return np.full(X.shape[0], X.shape[1], dtype=np.intp)
    padding_rows = np.isnan(X).all(axis=2)  # (n_samples, n_timesteps)
    # The length is one past the last timestep that is not padding.
    not_padding = ~padding_rows
    n_timesteps = X.shape[1]
    last_valid = n_timesteps - 1 - np.argmax(not_padding[:, ::-1], axis=1)
    lengths = np.where(not_padding.any(axis=1), last_valid + 1, 0).astype(np.intp)

    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"Sequence {empty[0]} of X has no valid timestep (all values are "
            "NaN); every sequence needs at least one timestep."
        )
    valid = np.arange(n_timesteps)[np.newaxis, :] < lengths[:, np.newaxis]
    if not np.isfinite(X[valid]).all():
        bad = np.argwhere(~np.isfinite(X) & valid[:, :, np.newaxis])[0]
        raise ValueError(
            "Input X contains NaN or inf at sample {}, timestep {}, feature {}. "
            "NaN is only allowed as trailing padding (whole timesteps after the "
            "end of a shorter sequence); inf is never allowed.".format(*bad)
        )
    return lengths


def _pad_list(sequences, dtype):
    """Stack a list of (T_i, n_features) arrays into a zero-padded 3-D array."""
    lengths = np.array([len(seq) for seq in sequences], dtype=np.intp)
    X = np.zeros((len(sequences), lengths.max(), sequences[0].shape[1]), dtype=dtype)
    for index, seq in enumerate(sequences):
        X[index, : len(seq)] = seq
    return X, lengths


def _check_sequence_list(X):
    """Validate a list of sequences; return their float arrays, each 2-D."""
    if len(X) == 0:
        raise ValueError(
            "Found an empty list of sequences; expected at least one array of "
            "shape (n_timesteps, n_features)."
        )
    sequences = []
    for index, seq in enumerate(X):
        seq = _as_float_array(seq, f"Sequence {index} of X")
        if seq.ndim == 1:
            seq = seq[:, np.newaxis]
        if seq.ndim != 2:
            raise ValueError(
                f"Sequence {index} of X has {seq.ndim} dimensions; each "
                "sequence must be an array of shape (n_timesteps, n_features) "
                "or (n_timesteps,)."
            )
        if seq.shape[0] == 0:
            raise ValueError(
                f"Sequence {index} of X has zero timesteps; every sequence "
                "needs at least one."
            )
        if not np.isfinite(seq).all():
            raise ValueError(
                f"Sequence {index} of X contains NaN or inf; sequences in a "
                "list must be finite (give them their own lengths instead of "
                "padding)."
            )
        sequences.append(seq)
    n_features = {seq.shape[1] for seq in sequences}
    if len(n_features) > 1:
        raise ValueError(
            f"The sequences of X have different numbers of features "
            f"{sorted(n_features)}; all must have shape (n_timesteps_i, "
            "n_features) with the same n_features."
        )
    # float32 only when every sequence is float32, as for arrays.
    dtype = np.result_type(*[seq.dtype for seq in sequences])
    return [seq.astype(dtype, copy=False) for seq in sequences]


def _is_sequence_list(X):
    """True for a list/tuple of sequences that is not a regular 2-D/3-D array."""
    if not isinstance(X, (list, tuple)):
        return False
    if len(X) == 0:
        return True  # reported as an empty list of sequences
    if any(isinstance(seq, np.ndarray) for seq in X):
        return True
    try:
        array = np.asarray(X)
    except ValueError:  # ragged nesting
        return True
    return array.dtype == object and array.ndim == 1


def _check_n_features(estimator, n_features, reset):
    if reset:
        estimator.n_features_in_ = n_features
        estimator._n_sequence_features = n_features
        return
    expected = estimator._n_sequence_features
    if n_features != expected:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is "
            f"expecting {expected} features as input: X must have shape "
            f"(n_samples, n_timesteps, {expected})."
        )


def check_sequences(estimator, X, *, reset):
    """Turn any accepted form of ``X`` into a padded array and lengths.

    Parameters
    ----------
    estimator : estimator instance
        Where ``n_features_in_`` is set (``reset=True``) or checked.
    X : array-like of shape (n_samples, n_timesteps, n_features) or \
            (n_samples, n_timesteps), or list of array-like
        The sequences.
    reset : bool
        True in ``fit``: record the input form; False afterwards: check it.

    Returns
    -------
    X_padded : ndarray of shape (n_samples, n_timesteps, n_features)
        float32 when the input is float32, float64 otherwise; zero on padding.
        It never shares memory with a user's array that had NaN padding.
    lengths : ndarray of shape (n_samples,), dtype intp
        Valid timesteps of each sequence, all at least 1.
    """
    if _is_sequence_list(X):
        sequences = _check_sequence_list(X)
        _check_n_features(estimator, sequences[0].shape[1], reset)
        if reset:
            estimator._fitted_on_univariate_2d = False
        return _pad_list(sequences, sequences[0].dtype)

    if isinstance(X, numbers.Number) or X is None:
        raise ValueError(
            f"Expected sequences of shape (n_samples, n_timesteps, n_features), "
            f"got {X!r}."
        )
    # np.ndim() would convert objects that only look like arrays badly.
    ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim
    if ndim == 2:
        X = _check_univariate_2d(estimator, X, reset)
    elif ndim == 3:
        X = _as_float_array(X, "X")
        if X.shape[0] == 0:
            raise ValueError(
                "Found array with 0 sample(s) (shape=(0, ...)) while a minimum "
                "of 1 is required; X must have shape "
                "(n_samples, n_timesteps, n_features)."
            )
        if X.shape[1] == 0:
            raise ValueError(
                f"X has zero timesteps (shape={X.shape}); expected shape "
                "(n_samples, n_timesteps, n_features) with n_timesteps >= 1."
            )
        if X.shape[2] == 0:
            raise ValueError(
                f"X has zero features (shape={X.shape}); expected shape "
                "(n_samples, n_timesteps, n_features) with n_features >= 1."
            )
        _check_n_features(estimator, X.shape[2], reset)
        if reset:
            estimator._fitted_on_univariate_2d = False
    else:
        raise ValueError(
            f"Expected a 3-D array of shape (n_samples, n_timesteps, "
            f"n_features), a 2-D array of univariate sequences (n_samples, "
            f"n_timesteps) or a list of (n_timesteps, n_features) arrays; got "
            f"an array with {ndim} dimension(s). Reshape your data either "
            "using X.reshape(-1, 1) for one sample per row of length 1, or "
            "X.reshape(1, -1) for a single sequence."
        )

    lengths = _lengths_from_nan_padding(X)
    if (lengths < X.shape[1]).any():
        X = np.where(np.isnan(X), 0, X).astype(X.dtype, copy=False)
    return X, lengths


def _check_univariate_2d(estimator, X, reset):
    """2-D input: univariate sequences, returned as (n, T, 1)."""
    if reset or estimator._fitted_on_univariate_2d:
        # sklearn's own validation, so its messages, n_features_in_ and
        # feature names behave as its checks expect.
        X = validate_data(
            estimator, X, reset=reset, dtype=FLOAT_DTYPES, ensure_all_finite=False
        )
        if reset:
            estimator._n_sequence_features = 1
            estimator._fitted_on_univariate_2d = True
    else:
        X = check_array(X, dtype=FLOAT_DTYPES, ensure_all_finite=False)
        _check_n_features(estimator, 1, reset=False)
    return X[:, :, np.newaxis]


def flatten_sequence_targets(y, lengths, n_timesteps):
    """Per-timestep targets of ``output="sequence"``, at the valid timesteps.

    Parameters
    ----------
    y : array-like of shape (n_samples, n_timesteps) or \
            (n_samples, n_timesteps, n_outputs), or list of array-like
        One target per timestep; a list holds one array of shape
        ``(n_timesteps_i,)`` or ``(n_timesteps_i, n_outputs)`` per sequence.
        Array values past a sequence's length are ignored.
    lengths : ndarray of shape (n_samples,)
    n_timesteps : int
        Padded length of ``X``.

    Returns
    -------
    y_valid : ndarray of shape (n_valid,) or (n_valid, n_outputs)
        Targets of the valid timesteps, sequence by sequence.
    valid : ndarray of shape (n_samples, n_timesteps), dtype bool
        Where they belong.
    """
    n_samples = len(lengths)
    valid = np.arange(n_timesteps)[np.newaxis, :] < lengths[:, np.newaxis]
    expected = ("With output='sequence', y needs one target per timestep: an "
                f"array of shape ({n_samples}, {n_timesteps}) or ({n_samples}, "
                f"{n_timesteps}, n_outputs), or a list of {n_samples} arrays "
                "with one row per timestep of each sequence")
    if isinstance(y, (list, tuple)) and (
        any(isinstance(target, np.ndarray) for target in y)
        or not _is_regular(y, n_samples, n_timesteps)
    ):
        if len(y) != n_samples:
            raise ValueError(f"{expected}; got a list of {len(y)}.")
        parts = [np.asarray(target) for target in y]
        for index, (target, length) in enumerate(zip(parts, lengths)):
            if target.ndim not in (1, 2) or target.shape[0] != length:
                raise ValueError(
                    f"{expected}; y[{index}] has shape {target.shape} but "
                    f"sequence {index} of X has {length} timesteps."
                )
        if len({target.shape[1:] for target in parts}) > 1:
            raise ValueError(f"{expected}; the arrays of y differ in n_outputs.")
        return np.concatenate(parts), valid
    y = np.asarray(y)
    if y.ndim not in (2, 3) or y.shape[:2] != (n_samples, n_timesteps):
        raise ValueError(f"{expected}; got shape {y.shape}.")
    return y[valid], valid


def _is_regular(y, n_samples, n_timesteps):
    """True when nested lists ``y`` form a regular (n_samples, n_timesteps, ...)
    array, read like a padded array; a list of arrays is read per sequence."""
    try:
        array = np.asarray(y)
    except ValueError:
        return False
    return array.dtype != object and array.shape[:2] == (n_samples, n_timesteps)
