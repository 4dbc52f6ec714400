"""Losses and the gradients of their output layers.

Each loss takes the raw head output ``raw`` (before the output activation),
the targets and per-sample weights, and returns the weighted mean loss and
its gradient with respect to ``raw``. Working on ``raw`` (logits for the
log-losses) keeps them finite for any input without clipping probabilities.

The mean is ``sum_i w_i * loss_i / sum_i w_i``; with unit weights this is the
plain mean, bit for bit, because the same operations run either way.

The losses work on NumPy and on CuPy arrays (the GPU backend's): on CuPy the
loss is returned as a 0-d device array, so that reading it does not wait for
the device after every minibatch.
"""

import numpy as np
import scipy.special
from scipy.special import expit, softmax


def _namespace(array):
    """The array module and its ``scipy.special`` for ``array``."""
    if isinstance(array, np.ndarray):
        return np, scipy.special
    import cupy  # only reached with CuPy arrays, so CuPy is installed
    import cupyx.scipy.special

    return cupy, cupyx.scipy.special


def identity(raw):
    """Output activation of regression."""
    return raw


def logistic(raw):
    """Output activation of binary and multilabel classification."""
    return expit(raw)


def _softmax(raw):
    return softmax(raw, axis=1)


OUTPUT_ACTIVATIONS = {"identity": identity, "logistic": logistic, "softmax": _softmax}


def _weighted_mean_and_scale(per_sample, sample_weight):
    """The weighted mean of ``per_sample``, and the weights as a column
    divided by their sum (the factor of each row of the gradient).

    A minibatch whose weights are all zero (possible when zero-weight
    samples are many, or together and not shuffled) has a zero loss and a
    zero gradient, not 0 / 0: the sum is raised to the smallest normal
    number, which leaves every positive sum as it is."""
    kind = sample_weight.dtype if sample_weight.dtype.kind == "f" else np.float64
    tiny = np.finfo(kind).tiny
    if isinstance(per_sample, np.ndarray):
        # ufunc methods rather than ndarray.sum and friends, whose Python
        # wrappers cost more than a minibatch's arithmetic (same sums).
        total = np.maximum(np.add.reduce(sample_weight), tiny)
        loss = float(np.dot(sample_weight, per_sample) / total)
        return loss, np.divide(sample_weight, total)[:, np.newaxis]
    # A reduction rather than cuBLAS's dot, which CuPy refuses while a CUDA
    # graph is being captured (see _backends/_graphs.py).
    xp = _namespace(per_sample)[0]
    # Once: a minibatch's loss is small work. On the device, no waiting.
    total = xp.maximum(sample_weight.sum(), tiny)
    loss = (sample_weight * per_sample).sum() / total
    return loss, (sample_weight / total)[:, np.newaxis]


def _row_sums(array):
    """``array.sum(axis=1)``: the same sums, without ``ndarray.sum``'s
    Python wrapper on NumPy arrays."""
    if isinstance(array, np.ndarray):
        return np.add.reduce(array, axis=1)
    return array.sum(axis=1)


def squared_error(y_true, raw, sample_weight):
    """Half the squared error summed over outputs, averaged over samples.

    Parameters
    ----------
    y_true, raw : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    loss : float
    draw : ndarray of shape (n_samples, n_outputs)
        Gradient of ``loss`` with respect to ``raw``.
    """
    residual = raw - y_true
    loss, scale = _weighted_mean_and_scale(0.5 * _row_sums(residual * residual),
                                           sample_weight)
    residual *= scale
    return loss, residual  # now the gradient


def _log_softmax_and_softmax(raw):
    """``log_softmax(raw, axis=1)`` and ``softmax(raw, axis=1)`` of a NumPy
    array, from one exp: SciPy's functions took ~60 us on a minibatch of
    32 x 3, most of it their Python. A non-finite row gives NaN (the fit
    then stops as diverged)."""
    shifted = raw - np.maximum.reduce(raw, axis=1, keepdims=True)
    proba = np.exp(shifted)
    total = np.add.reduce(proba, axis=1, keepdims=True)
    shifted -= np.log(total)
    proba /= total
    return shifted, proba


def softmax_log_loss(y_true, raw, sample_weight):
    """Cross-entropy of a softmax output; ``y_true`` is one-hot."""
    xp, special = _namespace(raw)
    if xp is np:
        log_proba, draw = _log_softmax_and_softmax(raw)
    else:
        log_proba = special.log_softmax(raw, axis=1)
        draw = xp.exp(log_proba)
    loss, scale = _weighted_mean_and_scale(-_row_sums(y_true * log_proba),
                                           sample_weight)
    draw -= y_true
    draw *= scale
    return loss, draw


def logistic_log_loss(y_true, raw, sample_weight):
    """Binary cross-entropy of independent logistic outputs (binary, multilabel).

    ``-[y log p + (1-y) log(1-p)]`` with ``p = expit(raw)`` equals
    ``logaddexp(0, raw) - y * raw``, which is finite for any ``raw``.
    """
    xp, special = _namespace(raw)
    per_sample = _row_sums(xp.logaddexp(0, raw) - y_true * raw)
    loss, scale = _weighted_mean_and_scale(per_sample, sample_weight)
    draw = special.expit(raw)
    draw -= y_true
    draw *= scale
    return loss, draw


LOSSES = {
    "squared_error": squared_error,
    "softmax_log_loss": softmax_log_loss,
    "logistic_log_loss": logistic_log_loss,
}
