"""The dense head of ``output="last"``, the loss and its gradient, and the
L2 penalty: what a CPU training minibatch computes around the LSTM layers,
each in one compiled call.

Why: at the sizes scikit-learn users train (W1 of
``benchmarks/bench_cpu.py``: 32 sequences, 32 hidden units, one output),
the head's three products, its bias, the loss and its gradient are a few
hundred flops, but as NumPy calls they took ~19 us of a ~300 us minibatch,
and the L2 term another ~5 us: the Python around each call, not the
arithmetic. Here they are one call each.

The arithmetic is that of ``sklstm/_losses.py`` (which the GPU backend and
``output="sequence"`` use), with each sample's loss, the weighted mean and
the activations of the gradient (softmax, expit) in double: the loss is the
same to rounding, and no less accurate in float32. Every matrix product goes
to BLAS (``_blas.gemm``). Both the CPU backend's general path
(``CPUBackend.head_loss_and_grad``) and the fit's minibatch runner
(``_backends/_cpu_steps.py``) call these functions, so the two stay equal
bit for bit.
"""

from cython cimport floating
from libc.math cimport exp, fabs, log, log1p

from ._blas cimport gemm

#: The losses by name (``LSTMNetwork.loss``), as this module numbers them.
LOSS_CODES = {"squared_error": 0, "softmax_log_loss": 1, "logistic_log_loss": 2}

cdef enum:
    SQUARED_ERROR = 0
    SOFTMAX_LOG_LOSS = 1
    LOGISTIC_LOG_LOSS = 2


cdef inline double _log1p_exp(double x) noexcept nogil:
    """``log(1 + exp(x))``, finite for any finite ``x``: ``logaddexp(0, x)``."""
    return (x if x > 0 else 0.0) + log1p(exp(-fabs(x)))


cdef inline double _expit(double x) noexcept nogil:
    """``1 / (1 + exp(-x))`` without overflow in ``exp``."""
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef double _loss_and_draw(int loss, const floating* Y, const floating* weight,
                           floating* draw, Py_ssize_t n_rows,
                           Py_ssize_t n_outputs) noexcept nogil:
    """The weighted mean loss of the raw outputs in ``draw`` (n_rows,
    n_outputs), which are overwritten with the loss's gradient.

    Each row's loss ``l_i`` is weighted, ``sum_i w_i l_i / sum_i w_i``, so
    row ``i``'s gradient is scaled by ``w_i / sum_i w_i``; weights that are
    all zero give a zero loss and gradient (as ``_losses.py``). A non-finite
    raw output gives a non-finite loss (the fit then stops as diverged).
    """
    cdef Py_ssize_t i, o
    cdef double total_weight = 0.0, total = 0.0, row_loss, scale
    cdef double r, y, peak, norm, log_norm
    cdef floating* raw
    cdef const floating* target
    for i in range(n_rows):
        total_weight += weight[i]
    if total_weight == 0:  # every weight is zero: each term below is too
        total_weight = 1
    for i in range(n_rows):
        raw = draw + i * n_outputs
        target = Y + i * n_outputs
        scale = weight[i] / total_weight
        row_loss = 0.0
        if loss == SQUARED_ERROR:
            # 0.5 * sum (raw - y)^2; gradient raw - y.
            for o in range(n_outputs):
                r = <double> raw[o] - target[o]
                row_loss += r * r
                raw[o] = <floating> (r * scale)
            row_loss *= 0.5
        elif loss == SOFTMAX_LOG_LOSS:
            # -sum y * log_softmax(raw), from one exp per output (shifted by
            # the row's largest value); gradient softmax(raw) - y.
            peak = raw[0]
            for o in range(1, n_outputs):
                if raw[o] > peak:
                    peak = raw[o]
            norm = 0.0
            for o in range(n_outputs):
                norm += exp(<double> raw[o] - peak)
            log_norm = peak + log(norm)
            for o in range(n_outputs):
                r = <double> raw[o] - log_norm  # log of the probability
                row_loss -= target[o] * r
                raw[o] = <floating> ((exp(r) - target[o]) * scale)
        else:
            # -[y log p + (1 - y) log(1 - p)], p = expit(raw), written as
            # log(1 + exp(raw)) - y * raw; gradient p - y.
            for o in range(n_outputs):
                r = raw[o]
                y = target[o]
                row_loss += _log1p_exp(r) - y * r
                raw[o] = <floating> ((_expit(r) - y) * scale)
        total += weight[i] * row_loss
    return total / total_weight


def head_loss_and_grad(
    const floating[:, ::1] head_input,   # (B, D) the top layer's last states
    const floating[:, ::1] W_out,        # (O, D)
    const floating[::1] b_out,           # (O,)
    const floating[:, ::1] Y,            # (B, O) targets (one-hot for softmax)
    const floating[::1] sample_weight,   # (B,)
    int loss,                            # a value of LOSS_CODES
    floating[:, ::1] draw,               # (B, O) out: d loss / d raw
    floating[:, ::1] dW_out,             # (O, D) out
    floating[::1] db_out,                # (O,) out
    floating[:, ::1] dhead_input,        # (B, D) out: d loss / d head_input
):
    """The head's output, the loss and the gradients of the head.

    ``raw = head_input @ W_out.T + b_out``; the loss of ``raw`` against
    ``Y`` (see the module's docstring); then ``dW_out = draw.T @
    head_input``, ``db_out = draw.sum(axis=0)`` and ``dhead_input = draw @
    W_out``, with ``draw`` the loss's gradient with respect to ``raw``.

    Returns
    -------
    loss : float
        The weighted mean loss (no L2 term).
    """
    cdef Py_ssize_t n_rows = head_input.shape[0], width = head_input.shape[1]
    cdef Py_ssize_t n_outputs = W_out.shape[0]
    cdef Py_ssize_t i, o
    cdef double value
    if loss not in (SQUARED_ERROR, SOFTMAX_LOG_LOSS, LOGISTIC_LOG_LOSS):
        raise ValueError(f"loss must be one of {sorted(LOSS_CODES.values())}; "
                         f"got {loss}")
    if (W_out.shape[1] != width or b_out.shape[0] != n_outputs
            or Y.shape[0] != n_rows or Y.shape[1] != n_outputs
            or sample_weight.shape[0] != n_rows
            or draw.shape[0] != n_rows or draw.shape[1] != n_outputs
            or dW_out.shape[0] != n_outputs or dW_out.shape[1] != width
            or db_out.shape[0] != n_outputs
            or dhead_input.shape[0] != n_rows or dhead_input.shape[1] != width):
        raise ValueError(
            f"shapes do not match: head_input ({n_rows}, {width}), W_out "
            f"({W_out.shape[0]}, {W_out.shape[1]}), Y ({Y.shape[0]}, "
            f"{Y.shape[1]}), sample_weight ({sample_weight.shape[0]},); "
            f"draw, dW_out, db_out and dhead_input must have the shapes of "
            f"Y, W_out, b_out and head_input")
    if n_rows == 0 or n_outputs == 0 or width == 0:
        raise ValueError("head_loss_and_grad needs at least one row, output "
                         "and input")
    with nogil:
        # raw = head_input @ W_out.T + b_out, into draw.
        for i in range(n_rows):
            for o in range(n_outputs):
                draw[i, o] = b_out[o]
        gemm(False, True, n_rows, n_outputs, width, 1, &head_input[0, 0], width,
             &W_out[0, 0], width, 1, &draw[0, 0], n_outputs)
        value = _loss_and_draw(loss, &Y[0, 0], &sample_weight[0], &draw[0, 0],
                               n_rows, n_outputs)
        gemm(True, False, n_outputs, width, n_rows, 1, &draw[0, 0], n_outputs,
             &head_input[0, 0], width, 0, &dW_out[0, 0], width)
        for o in range(n_outputs):
            db_out[o] = 0
        for i in range(n_rows):
            for o in range(n_outputs):
                db_out[o] += draw[i, o]
        gemm(False, False, n_rows, width, n_outputs, 1, &draw[0, 0], n_outputs,
             &W_out[0, 0], width, 0, &dhead_input[0, 0], width)
    return value


def add_l2_penalty(
    const floating[::1] params,          # (n,)
    const floating[::1] weight_mask,     # (n,) 1 on weights, 0 on biases
    double alpha,
    Py_ssize_t n_samples,
    floating[::1] grad,                  # (n,) updated in place
):
    """Add the L2 term's gradient to ``grad`` and return the term.

    The term is ``0.5 * alpha * ||params * weight_mask||^2 / n_samples`` (as
    scikit-learn's MLP: biases are not penalised), its gradient ``params *
    weight_mask * (alpha / n_samples)``. The squared norm is summed in
    double, in four running sums so the additions do not wait on each other.
    """
    cdef Py_ssize_t k, n = params.shape[0]
    cdef floating factor = <floating> (alpha / n_samples)
    cdef floating w0, w1, w2, w3
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    if weight_mask.shape[0] != n or grad.shape[0] != n:
        raise ValueError("params, weight_mask and grad must have the same length")
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive; got {n_samples}")
    with nogil:
        for k in range(0, n - 3, 4):
            w0 = params[k] * weight_mask[k]
            w1 = params[k + 1] * weight_mask[k + 1]
            w2 = params[k + 2] * weight_mask[k + 2]
            w3 = params[k + 3] * weight_mask[k + 3]
            s0 += <double> w0 * w0
            s1 += <double> w1 * w1
            s2 += <double> w2 * w2
            s3 += <double> w3 * w3
            grad[k] += w0 * factor
            grad[k + 1] += w1 * factor
            grad[k + 2] += w2 * factor
            grad[k + 3] += w3 * factor
        for k in range(n - n % 4, n):
            w0 = params[k] * weight_mask[k]
            s0 += <double> w0 * w0
            grad[k] += w0 * factor
    return 0.5 * alpha * ((s0 + s1) + (s2 + s3)) / n_samples
