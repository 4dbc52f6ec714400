"""The CuPy backend: cuBLAS GEMMs and fused CUDA kernels on an NVIDIA GPU.

The math is that of the CPU kernels (DESIGN.md §3-4; notation in
``_base.py``):

- forward: one GEMM projects the inputs of all ``T * B`` rows,
  ``xproj = X @ W_ih.T``; then per step ``s`` one GEMM
  ``hproj = h_{s-1} @ W_hh.T`` over the ``b_s`` active rows and one fused
  kernel (bias, activations, ``c_s``, ``m_s = o * tanh(c_s)``), plus the
  projection GEMM ``h_s = m_s @ W_hr.T`` with ``proj_size``;
- backward: per step one fused gate-gradient kernel and one GEMM
  ``dh_{s-1} += dgates_s @ W_hh`` (accumulated with beta = 1 into the
  gradient of the previous step's output); after the loop one GEMM each for
  ``dW_ih``, ``dW_hh``, ``dX`` (and ``dW_hr``), and a column sum for ``dbias``.

Step order. Sequences are sorted by decreasing length, so at step ``s`` the
active rows are the first ``b_s = #{b : lengths[b] > s}``: every per-step
operand is a leading block of rows, one contiguous GEMM operand. The reverse
direction first reverses each sequence within its own length (one gather),
runs the same loop, and reverses its outputs back; so both directions share
one loop, and the cache holds everything in *step order*: ``hidden[s]`` is
the output of step ``s`` and ``hidden[s - 1]`` the previous state of every
row active at ``s``. Padding rows of ``hidden`` are zero.

What runs where. The step loop is written against an array module ``xp`` and
an *ops* object that issues the GEMMs and launches the kernels of
``_lstm_cuda.cu``. On a GPU those are CuPy and :class:`CupyOps`. The tests
run the very same loop with NumPy and the same ``.cu`` source compiled for
the CPU by g++ (``tests/test_cuda_kernels_on_cpu.py``), so the loop and the
kernel math are checked on machines without a GPU.

This module imports CuPy only when a :class:`CupyOps` is created.
"""

import functools
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ._base import LSTMBackend

KERNEL_SOURCE = Path(__file__).with_name("_lstm_cuda.cu")

# Threads per block of the elementwise kernels, and a cap on the blocks: the
# kernels are grid-stride loops, so a capped grid still covers every element.
_THREADS_PER_BLOCK = 256
_MAX_BLOCKS = 65535


class LSTMOps:
    """GEMMs and the fused kernels of ``_lstm_cuda.cu``, for one device.

    Subclasses say how a GEMM runs (:meth:`gemm`) and how a kernel is
    launched (:meth:`_launch`); this class packs each kernel's arguments in
    the order and C types of its signature in ``_lstm_cuda.cu``, so that
    code is shared by the GPU and by the CPU emulation of the tests.

    Attributes
    ----------
    xp : module
        The array module the arrays live in.
    """

    xp = None

    def gemm(self, a, b, out, beta=0.0):
        """``out = a @ b + beta * out`` for 2-D ``a``, ``b``, ``out``.

        ``a`` and ``b`` may be transposed views (C- or F-contiguous); ``out``
        is C-contiguous.
        """
        raise NotImplementedError

    def _launch(self, name, n_items, dtype, args):
        """Run kernel ``name`` of the ``dtype`` build over ``n_items`` items."""
        raise NotImplementedError

    def tf32_context(self):
        """Context in which the GEMMs may use TF32 (when enabled)."""
        return nullcontext()

    def graph_runtime(self):
        """What captures minibatches into graphs here (``_graphs.py``), or None."""
        return None

    def gates_forward(self, xproj, hproj, bias, c_prev, gates, c, m, *,
                      has_prev, store_gates):
        """One forward step over the active rows; see ``lstm_gates_forward``.

        Shapes: ``xproj``, ``hproj``, ``gates`` (n, 4H); ``bias`` (4H,);
        ``c_prev``, ``c``, ``m`` (n, H). Without ``has_prev`` (the first
        step), ``hproj`` and ``c_prev`` are not read; without
        ``store_gates``, ``gates`` is not written (any array of the right
        dtype may be passed for them).
        """
        n, n_units = c.shape
        self._launch("lstm_gates_forward", n * n_units, c.dtype, (
            xproj, hproj, bias, c_prev, gates, c, m,
            np.int32(has_prev), np.int32(store_gates), np.int64(n),
            np.int32(n_units),
        ))

    def gates_backward(self, gates, c, c_prev, dm, dc, dgates, *, has_prev):
        """One backward step over the active rows; see ``lstm_gates_backward``.

        ``dc`` is updated in place from ``dL/dc_t`` to ``dL/dc_{t-1}``.
        """
        n, n_units = c.shape
        self._launch("lstm_gates_backward", n * n_units, c.dtype, (
            gates, c, c_prev, dm, dc, dgates,
            np.int32(has_prev), np.int64(n), np.int32(n_units),
        ))

    def adam_update(self, params, grad, m, v, *, beta_1, beta_2, step_size,
                    epsilon):
        """One Adam step over flat buffers, in place; see ``adam_update``."""
        n = params.shape[0]
        self._launch("adam_update", n, params.dtype, (
            params, grad, m, v, np.float64(beta_1), np.float64(beta_2),
            np.float64(step_size), np.float64(epsilon), np.int64(n),
        ))


def kernel_options(dtype):
    """Compiler options that build ``_lstm_cuda.cu`` for ``dtype``."""
    real = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
    return (f"-DSKLSTM_REAL={real[np.dtype(dtype)]}",)


class CupyOps(LSTMOps):
    """cuBLAS GEMMs and the CUDA kernels, issued on CuPy's current stream.

    Parameters
    ----------
    allow_tf32 : bool, default=False
        Let cuBLAS run float32 GEMMs on TF32 tensor cores (10-bit mantissa
        inputs, float32 accumulation) while the backend runs. Off by default:
        results then match the CPU to float32 rounding.
    """

    def __init__(self, allow_tf32=False):
        import cupy
        import cupy.cublas

        self.xp = cupy
        self._cupy = cupy
        self._cublas_gemm = cupy.cublas.gemm
        self.allow_tf32 = allow_tf32
        source = KERNEL_SOURCE.read_text()
        # Compiled lazily (on the first get_function) and cached by CuPy on
        # disk, per dtype.
        self._modules = {
            np.dtype(dtype): cupy.RawModule(code=source,
                                            options=kernel_options(dtype))
            for dtype in (np.float32, np.float64)
        }
        self._functions = {}
        # The cuBLAS handle of a CUDA graph being captured or warmed up, per
        # thread (see using_handle); None outside.
        self._capture = threading.local()

    def gemm(self, a, b, out, beta=0.0):
        handle = getattr(self._capture, "handle", None)
        if handle is not None:
            handle.gemm(a, b, out, beta=beta)
            return
        # cupy.cublas.gemm computes out = op(a) @ op(b) + beta * out with
        # one cuBLAS call, reading transposed views through the transpose
        # flags (no copies) and writing a C-contiguous ``out`` as out.T.
        self._cublas_gemm("N", "N", a, b, out=out, beta=beta)

    def graph_runtime(self):
        from ._graphs import CupyGraphRuntime

        return CupyGraphRuntime(self)

    @contextmanager
    def using_handle(self, handle):
        """Issue this thread's GEMMs on ``handle`` (a ``CublasHandle``).

        CuPy refuses its cuBLAS wrappers during stream capture; inside this
        context the GEMMs go to sklstm's own handle, bound to the capturing
        stream, so a whole minibatch can be captured into a CUDA graph.
        """
        previous = getattr(self._capture, "handle", None)
        self._capture.handle = handle
        try:
            yield
        finally:
            self._capture.handle = previous

    def _function(self, name, dtype):
        key = (name, np.dtype(dtype))
        function = self._functions.get(key)
        if function is None:
            function = self._modules[key[1]].get_function(name)
            self._functions[key] = function
        return function

    def _launch(self, name, n_items, dtype, args):
        blocks = min(_MAX_BLOCKS, -(-n_items // _THREADS_PER_BLOCK))
        self._function(name, dtype)((max(blocks, 1),), (_THREADS_PER_BLOCK,),
                                    args)

    @contextmanager
    def tf32_context(self):
        if not self.allow_tf32 or getattr(self._capture, "handle", None):
            # Off, or GEMMs go to a capture handle, whose math mode was set
            # when it was made (CuPy's handle must not be touched then).
            yield
            return
        # The math mode of CuPy's own cuBLAS handle (the one
        # cupy.cublas.gemm uses), set for the duration of one backend call
        # and restored, so code outside sklstm sees no change.
        from cupy.cuda import device
        from cupy_backends.cuda.libs import cublas

        handle = device.get_cublas_handle()
        previous = cublas.getMathMode(handle)
        cublas.setMathMode(handle, cublas.CUBLAS_TF32_TENSOR_OP_MATH)
        try:
            yield
        finally:
            cublas.setMathMode(handle, previous)


@functools.cache
def default_ops(allow_tf32=False):
    """One :class:`CupyOps` per setting, so kernels compile once per process."""
    return CupyOps(allow_tf32=allow_tf32)


def _host_lengths(lengths):
    """Lengths as a NumPy intp array: the step loop is driven from the host."""
    if hasattr(lengths, "get") and not isinstance(lengths, np.ndarray):
        lengths = lengths.get()  # a CuPy array
    return np.ascontiguousarray(lengths, dtype=np.intp)


def _working_dtype(X):
    """float32 stays float32; everything else computes in float64."""
    return np.float32 if X.dtype == np.float32 else np.float64


class _Layout:
    """Row bookkeeping of one minibatch, computed on the host.

    Attributes
    ----------
    active : list of int
        ``active[s]`` rows run at step ``s`` (lengths sorted descending).
    reverse_index : array of shape (T, B) or None
        For the reverse direction, ``reverse_index[s, b]`` is the time of
        sequence ``b`` at step ``s``: ``lengths[b] - 1 - s`` on valid steps,
        ``s`` on padding. It is its own inverse, so the same gather takes
        time order to step order and back.
    columns : array of shape (1, B)
        ``0 .. B-1``, the second index of those gathers.
    last : array of shape (B,)
        ``lengths - 1``: the step of each sequence's final state.
    valid : array of shape (T, B, 1) or None
        True on valid steps; None when no sequence is padded.
    """

    def __init__(self, xp, lengths, n_steps, reverse):
        steps = np.arange(n_steps)
        valid = steps[:, np.newaxis] < lengths  # (T, B), host
        self.active = valid.sum(axis=1).tolist()
        n_seq = lengths.shape[0]
        self.columns = xp.asarray(np.arange(n_seq)[np.newaxis, :])
        self.last = xp.asarray(lengths - 1)
        self.arange = xp.asarray(np.arange(n_seq))
        self.padded = not valid.all()
        self.valid = xp.asarray(valid[:, :, np.newaxis]) if self.padded else None
        self.reverse_index = None
        if reverse:
            times = np.where(valid, lengths - 1 - steps[:, np.newaxis],
                             steps[:, np.newaxis])
            self.reverse_index = xp.asarray(times)

    def to_steps(self, array):
        """Time order to step order (a gather for the reverse direction)."""
        if self.reverse_index is None:
            return array
        return array[self.reverse_index, self.columns]

    to_times = to_steps  # the reversal is an involution


class CupyBackend(LSTMBackend):
    """Forward and BPTT of one LSTM layer-direction with cuBLAS and CUDA.

    Parameters
    ----------
    ops : LSTMOps, default=None
        Where the GEMMs and kernels run; a shared :class:`CupyOps` when None.
        The tests pass a CPU emulation here.
    allow_tf32 : bool, default=False
        With ``ops=None``: let float32 GEMMs use TF32 tensor cores.

    Notes
    -----
    Inputs are moved to ``ops.xp`` if needed (``xp.asarray``); outputs live
    there. ``lengths`` may be a host or device array: the loop reads it on
    the host. The dtype of ``X`` (float32, or float64 for anything else)
    decides the precision; weights are cast to it.
    """

    # Arrays live on a device: the fit loop keeps per-minibatch values (the
    # loss) there instead of reading each one back (a synchronisation).
    on_device = True

    # Layouts kept for reuse (see _layout); beyond this many, start afresh.
    _MAX_LAYOUTS = 16

    def __init__(self, ops=None, allow_tf32=False):
        self.ops = default_ops(bool(allow_tf32)) if ops is None else ops
        self.xp = self.ops.xp
        self._layouts = {}

    def adam_update(self, *args, **kwargs):
        """Adam's step as one kernel (see ``LSTMOps.adam_update``)."""
        self.ops.adam_update(*args, **kwargs)

    def minibatch_steps(self, network, params, *, alpha, weight_mask):
        """A :class:`~._graphs.MinibatchGraphs` for one fit, or None when
        the ops cannot capture graphs."""
        from ._graphs import MinibatchGraphs

        runtime = self.ops.graph_runtime()
        if runtime is None:
            return None
        return MinibatchGraphs(runtime, network, self, params, alpha=alpha,
                               weight_mask=weight_mask)

    def matmul(self, a, b, out=None):
        """``a @ b`` (``a`` of shape (..., k)) through :meth:`LSTMOps.gemm`."""
        xp = self.xp
        rows = a.reshape(-1, a.shape[-1])
        if out is None:
            out = xp.empty(a.shape[:-1] + (b.shape[1],), dtype=a.dtype)
        with self.ops.tf32_context():
            self.ops.gemm(rows, b, out.reshape(-1, b.shape[1]))
        return out

    def _layout(self, lengths, n_steps, reverse):
        """The :class:`_Layout` of a minibatch, reused across calls.

        Building one copies a few small index arrays to the device; the
        minibatches of an epoch mostly share their lengths (all of them when
        the sequences have equal lengths), so each layout is built once.
        """
        key = (lengths.tobytes(), n_steps, reverse)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= self._MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[key] = _Layout(self.xp, lengths, n_steps,
                                                  reverse)
        return layout

    def forward(self, X, lengths, W_ih, W_hh, bias, reverse=False, training=True,
                return_sequences=True, W_hr=None, hidden_out=None):
        """Run one layer-direction over a minibatch; see ``LSTMBackend``.

        Returns
        -------
        hidden : array of shape (T, B, P), or None
        h_n : array of shape (B, P)
        c_n : array of shape (B, H)
        cache : tuple or None
        """
        xp, ops = self.xp, self.ops
        dtype = _working_dtype(X)
        X = xp.ascontiguousarray(xp.asarray(X), dtype=dtype)
        W_ih = xp.ascontiguousarray(xp.asarray(W_ih), dtype=dtype)
        W_hh = xp.ascontiguousarray(xp.asarray(W_hh), dtype=dtype)
        bias = xp.ascontiguousarray(xp.asarray(bias), dtype=dtype).reshape(-1)
        if W_hr is not None:
            W_hr = xp.ascontiguousarray(xp.asarray(W_hr), dtype=dtype)
        lengths = _host_lengths(lengths)
        n_steps, n_seq, n_features = X.shape
        n_units = W_hh.shape[0] // 4
        n_out = W_hh.shape[1]  # P: proj_size with a projection, else H
        layout = self._layout(lengths, n_steps, bool(reverse))
        X_steps = xp.ascontiguousarray(layout.to_steps(X))

        with ops.tf32_context():
            # xproj = X @ W_ih.T for every row of every step: one GEMM. In
            # training the gate kernel overwrites each step's block with the
            # activated gates, which backward reads.
            xproj = xp.empty((n_steps, n_seq, 4 * n_units), dtype=dtype)
            ops.gemm(X_steps.reshape(-1, n_features), W_ih.T,
                     xproj.reshape(-1, 4 * n_units))

            keep_hidden = training or return_sequences
            # Zero on padding: the gathers and the dW_hh GEMM rely on it.
            hidden = (xp.zeros((n_steps, n_seq, n_out), dtype=dtype)
                      if keep_hidden else None)
            cells = (xp.empty((n_steps, n_seq, n_units), dtype=dtype)
                     if training else None)
            # Inference keeps only the current step's states: rows that
            # finish stop being updated, so these end as h_n and c_n.
            h_state = (None if keep_hidden
                       else xp.zeros((n_seq, n_out), dtype=dtype))
            c_state = None if training else xp.zeros((n_seq, n_units), dtype=dtype)
            hproj = xp.empty((n_seq, 4 * n_units), dtype=dtype)
            m_seq = m_step = None
            if W_hr is not None:
                # Training keeps m_s = o * tanh(c_s) for dW_hr = dh.T @ m.
                if training:
                    m_seq = xp.zeros((n_steps, n_seq, n_units), dtype=dtype)
                else:
                    m_step = xp.empty((n_seq, n_units), dtype=dtype)

            for step, rows in enumerate(layout.active):
                has_prev = step > 0
                h_out = hidden[step, :rows] if keep_hidden else h_state[:rows]
                if has_prev:
                    h_prev = hidden[step - 1, :rows] if keep_hidden \
                        else h_state[:rows]
                    # hproj = h_{s-1} @ W_hh.T
                    ops.gemm(h_prev, W_hh.T, hproj[:rows])
                if training:
                    c_out = cells[step, :rows]
                    c_prev = cells[step - 1, :rows] if has_prev else c_out
                else:
                    c_out = c_prev = c_state[:rows]
                if W_hr is None:
                    m_out = h_out
                elif training:
                    m_out = m_seq[step, :rows]
                else:
                    m_out = m_step[:rows]
                gates_step = xproj[step, :rows]
                ops.gates_forward(gates_step, hproj[:rows], bias, c_prev,
                                  gates_step, c_out, m_out, has_prev=has_prev,
                                  store_gates=training)
                if W_hr is not None:
                    # h_s = m_s @ W_hr.T
                    ops.gemm(m_out, W_hr.T, h_out)

        if keep_hidden:
            h_n = hidden[layout.last, layout.arange]
        else:
            h_n = h_state
        c_n = cells[layout.last, layout.arange] if training else c_state

        cache = None
        if training:
            cache = (X_steps, layout, W_ih, W_hh, W_hr, xproj, cells, hidden,
                     m_seq)
        hidden_times = None
        if return_sequences:
            hidden_times = layout.to_times(hidden)
            if hidden_out is not None:
                # The steps' order is this backend's own; the caller's array
                # gets the time order (one copy, as a concatenation made).
                hidden_out[...] = hidden_times
                hidden_times = hidden_out
        return hidden_times, h_n, c_n, cache

    def backward(self, dhidden, cache, input_grad=True):
        """Backpropagation through time; see ``LSTMBackend.backward``."""
        xp, ops = self.xp, self.ops
        X_steps, layout, W_ih, W_hh, W_hr, gates, cells, hidden, m_seq = cache
        dtype = X_steps.dtype
        n_steps, n_seq, n_features = X_steps.shape
        n_units = W_hh.shape[0] // 4
        n_out = W_hh.shape[1]

        # dhid[s]: the whole gradient reaching h_s, in step order. It starts
        # as the caller's dhidden (a copy: the loop adds into it) with zeros
        # on padding, whatever the caller had there.
        dhid = layout.to_steps(xp.asarray(dhidden, dtype=dtype))
        if layout.padded:
            dhid = xp.where(layout.valid, dhid, dtype.type(0))
        elif layout.reverse_index is None:
            dhid = dhid.copy()  # the gather of the reverse direction copies
        dhid = xp.ascontiguousarray(dhid)

        # Zero on padding rows, which the loop never writes: the GEMMs after
        # it run over all T * B rows.
        dgates = xp.zeros((n_steps, n_seq, 4 * n_units), dtype=dtype)
        dc = xp.zeros((n_seq, n_units), dtype=dtype)
        dm_step = None if W_hr is None else xp.empty((n_seq, n_units), dtype=dtype)

        with ops.tf32_context():
            for step in reversed(range(n_steps)):
                rows = layout.active[step]
                has_prev = step > 0
                if W_hr is None:
                    dm = dhid[step, :rows]
                else:
                    # Back through the projection: dm_s = dh_s @ W_hr.
                    dm = dm_step[:rows]
                    ops.gemm(dhid[step, :rows], W_hr, dm)
                c_prev = cells[step - 1, :rows] if has_prev else cells[step, :rows]
                ops.gates_backward(gates[step, :rows], cells[step, :rows], c_prev,
                                   dm, dc[:rows], dgates[step, :rows],
                                   has_prev=has_prev)
                if has_prev:
                    # dh_{s-1} += dgates_s @ W_hh (beta = 1)
                    ops.gemm(dgates[step, :rows], W_hh, dhid[step - 1, :rows],
                             beta=1.0)

            dgates_rows = dgates.reshape(-1, 4 * n_units)
            # dW_ih = dgates.T @ X over all rows of all steps.
            dW_ih = xp.empty(W_ih.shape, dtype=dtype)
            ops.gemm(dgates_rows.T, X_steps.reshape(-1, n_features), dW_ih)
            # dW_hh = sum_s dgates_s.T @ h_{s-1}: in step order, h_{s-1} of
            # every row active at s is hidden[s - 1].
            dW_hh = xp.zeros(W_hh.shape, dtype=dtype)
            if n_steps > 1:
                ops.gemm(dgates[1:].reshape(-1, 4 * n_units).T,
                         hidden[:-1].reshape(-1, n_out), dW_hh)
            # dX = dgates @ W_ih (zero on padding, where dgates is zero).
            dX_steps = None
            if input_grad:
                dX_steps = xp.empty(X_steps.shape, dtype=dtype)
                ops.gemm(dgates_rows, W_ih, dX_steps.reshape(-1, n_features))
            dbias = dgates_rows.sum(axis=0)
            dW_hr = None
            if W_hr is not None:
                # dW_hr = dh.T @ m over all rows of all steps.
                dW_hr = xp.empty(W_hr.shape, dtype=dtype)
                ops.gemm(dhid.reshape(-1, n_out).T, m_seq.reshape(-1, n_units),
                         dW_hr)

        dX = None if dX_steps is None else layout.to_times(dX_steps)
        if W_hr is not None:
            return dX, dW_ih, dW_hh, dbias, dW_hr
        return dX, dW_ih, dW_hh, dbias
