"""A pure-NumPy LSTM layer-direction, written to be read.

This is the oracle the fast backends are tested against, never the default.
It loops over timesteps in Python and selects the active sequences of each
step with an index array, so it needs neither sorted lengths nor any of the
workspace tricks of the kernels. See ``_base.py`` for the notation.
"""

import numpy as np

from ._base import LSTMBackend


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _step_rows_and_times(lengths, step, reverse):
    """Sequences still running at ``step`` and the timestep each one is at."""
    rows = np.flatnonzero(lengths > step)
    times = lengths[rows] - 1 - step if reverse else np.full(rows.size, step)
    return rows, times


class ReferenceBackend(LSTMBackend):
    """Readable NumPy forward and BPTT; the test oracle."""

    xp = np

    def forward(self, X, lengths, W_ih, W_hh, bias, reverse=False, training=True,
                return_sequences=True, W_hr=None, hidden_out=None):
        n_steps, n_seq, _ = X.shape
        n_units = W_hh.shape[0] // 4
        n_out = W_hh.shape[1]  # proj_size with a projection, else n_units
        dtype = X.dtype
        hidden = np.zeros((n_steps, n_seq, n_out), dtype=dtype)
        gates = np.zeros((n_steps, n_seq, 4 * n_units), dtype=dtype)
        cells = np.zeros((n_steps, n_seq, n_units), dtype=dtype)
        h = np.zeros((n_seq, n_out), dtype=dtype)
        c = np.zeros((n_seq, n_units), dtype=dtype)

        for step in range(n_steps):
            rows, times = _step_rows_and_times(lengths, step, reverse)
            pre = X[times, rows] @ W_ih.T + h[rows] @ W_hh.T + bias
            i, f, g, o = np.split(pre, 4, axis=1)
            i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
            c[rows] = f * c[rows] + i * g
            h_cell = o * np.tanh(c[rows])
            # With a projection (proj_size), h_t = (o * tanh(c_t)) @ W_hr.T.
            h[rows] = h_cell if W_hr is None else h_cell @ W_hr.T
            hidden[times, rows] = h[rows]
            gates[times, rows] = np.concatenate([i, f, g, o], axis=1)
            cells[times, rows] = c[rows]

        cache = None
        if training:
            cache = (X, lengths, W_ih, W_hh, W_hr, reverse, gates, cells, hidden)
        if hidden_out is not None:
            hidden_out[...] = hidden
            hidden = hidden_out
        return (hidden if return_sequences else None), h, c, cache

    def backward(self, dhidden, cache, input_grad=True):
        X, lengths, W_ih, W_hh, W_hr, reverse, gates, cells, hidden = cache
        n_steps, n_seq, _ = X.shape
        n_units, n_out = W_hh.shape[0] // 4, W_hh.shape[1]
        dX = np.zeros_like(X)
        dW_ih = np.zeros_like(W_ih)
        dW_hh = np.zeros_like(W_hh)
        dbias = np.zeros(4 * n_units, dtype=X.dtype)
        dW_hr = None if W_hr is None else np.zeros_like(W_hr)
        # Gradients flowing back from step s+1 into the states of step s.
        dh_next = np.zeros((n_seq, n_out), dtype=X.dtype)
        dc_next = np.zeros((n_seq, n_units), dtype=X.dtype)

        for step in reversed(range(n_steps)):
            rows, times = _step_rows_and_times(lengths, step, reverse)
            if step == 0:
                h_prev = np.zeros((rows.size, n_out), dtype=X.dtype)
                c_prev = np.zeros((rows.size, n_units), dtype=X.dtype)
            else:
                prev_times = times + 1 if reverse else times - 1
                h_prev = hidden[prev_times, rows]
                c_prev = cells[prev_times, rows]
            i, f, g, o = np.split(gates[times, rows], 4, axis=1)
            tanh_c = np.tanh(cells[times, rows])

            dh = dhidden[times, rows] + dh_next[rows]
            if W_hr is not None:  # back through the projection
                dW_hr += dh.T @ (o * tanh_c)
                dh = dh @ W_hr
            dc = dc_next[rows] + dh * o * (1.0 - tanh_c**2)
            d_o = dh * tanh_c * o * (1.0 - o)
            d_i = dc * g * i * (1.0 - i)
            d_f = dc * c_prev * f * (1.0 - f)
            d_g = dc * i * (1.0 - g**2)
            dgates = np.concatenate([d_i, d_f, d_g, d_o], axis=1)

            dc_next[rows] = dc * f
            dh_next[rows] = dgates @ W_hh
            dX[times, rows] = dgates @ W_ih
            dW_ih += dgates.T @ X[times, rows]
            dW_hh += dgates.T @ h_prev
            dbias += dgates.sum(axis=0)

        if not input_grad:
            dX = None
        if W_hr is not None:
            return dX, dW_ih, dW_hh, dbias, dW_hr
        return dX, dW_ih, dW_hh, dbias
