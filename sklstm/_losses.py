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
    divided by their sum (the factor of each row of the gradient)."""
    xp, _ = _namespace(per_sample)
    total = sample_weight.sum()  # once: a minibatch's loss is small work
    if xp is np:
        loss = float(np.dot(sample_weight, per_sample) / total)
    else:
        # A reduction rather than cuBLAS's dot, which CuPy refuses while a
        # CUDA graph is being captured (see _backends/_graphs.py).
        loss = (sample_weight * per_sample).sum() / total
    return loss, (sample_weight / total)[:, np.newaxis]


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
    loss, scale = _weighted_mean_and_scale(0.5 * (residual**2).sum(axis=1),
                                           sample_weight)
    residual *= scale
    return loss, residual  # now the gradient


def softmax_log_loss(y_true, raw, sample_weight):
    """Cross-entropy of a softmax output; ``y_true`` is one-hot."""
    xp, special = _namespace(raw)
    log_proba = special.log_softmax(raw, axis=1)
    loss, scale = _weighted_mean_and_scale(-(y_true * log_proba).sum(axis=1),
                                           sample_weight)
    draw = xp.exp(log_proba)
    draw -= y_true
    draw *= scale
    return loss, draw


def logistic_log_loss(y_true, raw, sample_weight):
    """Binary cross-entropy of independent logistic outputs (binary, multilabel).

    ``-[y log p + (1-y) log(1-p)]`` with ``p = expit(raw)`` equals
    ``logaddexp(0, raw) - y * raw``, which is finite for any ``raw``.
    """
    xp, special = _namespace(raw)
    per_sample = (xp.logaddexp(0, raw) - y_true * raw).sum(axis=1)
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
