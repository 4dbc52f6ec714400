"""The interface every backend implements: forward and BPTT of one LSTM
layer-direction.

Notation (shared by all backends and documented once more in ``_network.py``)::

    T  timesteps in the minibatch (the longest sequence in it)
    B  sequences in the minibatch
    I  input features of the layer
    H  hidden units of the layer

    gates_t = x_t @ W_ih.T + h_{t-1} @ W_hh.T + bias      (B, 4H), blocks i|f|g|o
    i, f, o = sigmoid(...), g = tanh(...)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Arrays are time-major: ``X[t, b]`` is the input of sequence ``b`` at time
``t``. Sequence ``b`` is valid for ``t < lengths[b]``; rows past its length
are padding. The forward direction processes ``t = 0 .. lengths[b]-1``; the
reverse direction (``reverse=True``) processes ``t = lengths[b]-1 .. 0``, each
sequence reversed within its own length, as PyTorch's packed sequences do.
The initial states are zero.
"""

from abc import ABC, abstractmethod
from contextlib import nullcontext

import numpy as np

from .._losses import LOSSES


class LSTMBackend(ABC):
    """Forward and backward of one LSTM layer-direction on some device.

    Attributes
    ----------
    xp : module
        The array module of the backend (``numpy`` or ``cupy``).
    """

    xp = None

    @abstractmethod
    def forward(self, X, lengths, W_ih, W_hh, bias, reverse=False, training=True,
                return_sequences=True, W_hr=None, hidden_out=None):
        """Run one layer-direction over a minibatch.

        Parameters
        ----------
        X : array of shape (T, B, I)
            Time-major, C-contiguous input. Rows past a sequence's length are
            ignored.
        lengths : array of shape (B,), dtype intp
            Valid length of each sequence, ``1 <= lengths[b] <= T``, sorted in
            descending order (fast backends rely on it), ``lengths[0] == T``.
        W_ih : array of shape (4H, I)
        W_hh : array of shape (4H, H), or (4H, P) with a projection
        bias : array of shape (4H,)
            ``b_ih + b_hh``.
        reverse : bool
            Process each sequence from its last valid timestep to its first.
        training : bool
            Keep what :meth:`backward` needs. When False, only the states of
            the current step are kept beyond the input projection.
        return_sequences : bool
            When False, ``hidden`` is not returned (None): the last layer at
            inference needs only ``h_n``.
        W_hr : array of shape (P, H) or None
            Projection of PyTorch's ``proj_size``: ``h_t = (o * tanh(c_t)) @
            W_hr.T`` has P values, and ``hidden``, ``h_n`` have width P.
        hidden_out : array of shape (T, B, P) or None
            Where to write ``hidden``, which is then this array: e.g. one
            direction's half of a bidirectional layer's ``(T, B, 2P)``
            output (a block of its columns), which then needs no
            concatenation. Only with ``return_sequences`` or ``training``.

        Returns
        -------
        hidden : array of shape (T, B, H) or None
            ``h_t`` of every valid timestep, zero on padding.
        h_n : array of shape (B, H)
            Hidden state after each sequence's last processed step
            (``t = lengths[b] - 1`` forward, ``t = 0`` reverse).
        c_n : array of shape (B, H)
            Cell state at the same step.
        cache : object
            Opaque state for :meth:`backward`; None when not training.
        """

    @abstractmethod
    def backward(self, dhidden, cache, input_grad=True):
        """Backpropagation through time for one layer-direction.

        Parameters
        ----------
        dhidden : array of shape (T, B, H)
            Gradient of the loss with respect to ``hidden``; values on
            padding rows are ignored.
        cache : object
            What :meth:`forward` returned with ``training=True``.
        input_grad : bool, default=True
            Compute ``dX``. The first layer's input is the data, whose
            gradient training does not need: one GEMM of the size of
            ``dW_ih``'s is saved.

        Returns
        -------
        dX : array of shape (T, B, I), or None without ``input_grad``
            Gradient with respect to the input, zero on padding.
        dW_ih : array of shape (4H, I)
        dW_hh : array of shape (4H, H)
        dbias : array of shape (4H,)
            Gradient with respect to ``bias`` (and so to each of ``b_ih`` and
            ``b_hh``).
        dW_hr : array of shape (P, H)
            Only when the forward pass had a projection ``W_hr``.
        """

    def session(self):
        """Context held around a whole fit or predict (the epoch loop, or
        all batches of a prediction). Nothing by default; the CPU backend
        holds BLAS at one thread (see ``_cpu._BlasHold``)."""
        return nullcontext()

    def matmul(self, a, b, out=None):
        """``a @ b`` for the network's head: ``a`` (..., k), ``b`` (k, n).

        A method of the backend so the GPU one can issue it as its other
        GEMMs are issued (CuPy's own ``matmul`` cannot run inside a CUDA
        graph capture). ``out``, when given, is C-contiguous and receives
        the product.
        """
        if out is None:
            return a @ b
        return self.xp.matmul(a, b, out=out)

    def head_loss_and_grad(self, head_input, W_out, b_out, Y, sample_weight, loss,
                           dW_out, db_out):
        """The head of ``output="last"``, the loss, and their gradients.

        ``raw = head_input @ W_out.T + b_out`` is scored against ``Y`` by the
        loss named ``loss`` (``sklstm._losses.LOSSES``); ``dW_out`` (O, D)
        and ``db_out`` (O,) receive the head's gradients, in place.

        Parameters
        ----------
        head_input : array of shape (B, D)
            The top layer's last hidden states.
        W_out : array of shape (O, D)
        b_out : array of shape (O,)
        Y : array of shape (B, O)
        sample_weight : array of shape (B,)
        loss : str
        dW_out : array of shape (O, D)
        db_out : array of shape (O,)

        Returns
        -------
        loss : float, or a 0-d device array (see ``LSTMNetwork.loss_and_grad``)
        dhead_input : array of shape (B, D)
            The loss's gradient with respect to ``head_input``.

        These are the array module's operations; the CPU backend makes them
        one compiled call.
        """
        raw = self.matmul(head_input, W_out.T) + b_out
        value, draw = LOSSES[loss](Y, raw, sample_weight)
        draw = draw.astype(head_input.dtype, copy=False)
        return value, self.head_backward(draw, head_input, W_out, dW_out, db_out)

    def head_backward(self, draw, head_input, W_out, dW_out, db_out):
        """The head's gradients from ``draw`` (..., O), the loss's gradient
        with respect to the head's output: ``dW_out`` (O, D) and ``db_out``
        (O,) are written in place (no temporaries); returns the gradient
        with respect to ``head_input`` (..., D)."""
        n_outputs, width = W_out.shape
        draw_rows = draw.reshape(-1, n_outputs)
        self.matmul(draw_rows.T, head_input.reshape(-1, width), out=dW_out)
        self.xp.sum(draw_rows, axis=0, out=db_out)
        return self.matmul(draw, W_out)

    def add_l2_penalty(self, params, weight_mask, alpha, n_samples, grad):
        """Add the L2 term's gradient to ``grad``, in place; return the term.

        The term is ``0.5 * alpha * ||params * weight_mask||^2 / n_samples``
        (``weight_mask``: 1 on weights, 0 on biases, as scikit-learn's MLP
        penalises weights only).

        These are the array module's operations; the CPU backend makes them
        one compiled call.
        """
        xp = self.xp
        # Multiplying by the mask zeroes the biases (a negative one to -0.0,
        # which adds nothing either): 3x cheaper than np.where with a bool
        # mask, 5x with a 0/1 mask in the parameters' dtype.
        weights = params * weight_mask
        # On a device the sum stays there (in float64, as a Python float
        # would be): no synchronisation per minibatch. It is a reduction
        # there, not a cuBLAS dot, which a CUDA graph capture refuses.
        squared_norm = (float(np.dot(weights, weights)) if xp is np
                        else (weights * weights).sum().astype(np.float64))
        weights *= alpha / n_samples
        grad += weights
        return 0.5 * alpha * squared_norm / n_samples
