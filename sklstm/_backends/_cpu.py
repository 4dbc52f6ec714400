"""The CPU backend: Cython timestep loops over BLAS (``sklstm._kernels``).

This module owns the memory: it makes the inputs C-contiguous in the working
dtype, allocates outputs and workspaces with NumPy, and hands them to the
nogil kernels of ``sklstm/_kernels/_lstm_fast.pyx``. See ``_base.py`` for the
notation and the contract.
"""

import functools
import threading
from contextlib import contextmanager, nullcontext

import numpy as np

from .._kernels._dispatch import lstm_backward, lstm_forward, max_threads
from ._base import LSTMBackend

# Below this many multiply-adds per timestep and thread (rows x 4H x H), the
# kernels run on one thread. Each kernel call opens OpenMP regions whose end
# is a barrier; with another process busy on a core, a descheduled thread
# holds the barrier for a time slice. Measured with benchmarks/bench_cpu.py
# (2 cores, one busy process): W1 (B=32, H=32) took 0.25 s per epoch on 2
# threads against 0.027 s on one, W2 (B=64, H=64) 0.41 s against 0.25 s;
# quiet, 2 threads bought W2 only 1.3x. W3 (B=128, H=256, 33.5M per step)
# is large enough for the split to pay.
_MIN_WORK_PER_THREAD = 4 * 2**20
# Inference is one kernel call per predict batch of up to 1024 sequences
# (two parallel regions), not dozens of calls per epoch, so the barrier risk
# above is paid once per call: split from 2**18. W1 predict (B=1000, H=32,
# 4.2M per step) on 2 threads, best of 30: 4.9 ms -> 2.7 ms quiet; with one
# busy process 5.5 -> 5.1 ms (median 5.8 -> 8.1 ms).
_MIN_INFERENCE_WORK_PER_THREAD = 2**18


@functools.cache
def _blas_controller():
    """threadpoolctl's handle on the loaded BLAS libraries (looked up once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


@contextmanager
def _single_threaded_blas(libraries):
    """BLAS at one thread while the kernel runs, then each library's limit back.

    ``libraries`` is ``[(controller, n_threads), ...]`` as read by
    :func:`_thread_plan`. The controllers' setters are called directly:
    ``ThreadpoolController.limit`` (info dicts, a get and a set per library)
    took ~20 us a kernel call, 8 % of a W1 epoch on 2 threads.
    """
    for library, _ in libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, n_threads in libraries:
            library.set_num_threads(n_threads)


def _thread_plan(n_rows, n_units, n_out=None,
                 min_work=_MIN_WORK_PER_THREAD):
    """``(n_threads, context)`` for one kernel call.

    ``n_out`` is the width of ``h`` with a projection (``proj_size``); the
    work per step is then the recurrent GEMM (4H x P) and the projection
    GEMM (P x H).

    The kernels split rows over ``n_threads`` OpenMP threads, each calling
    BLAS single-threaded: no synchronisation per timestep, and no BLAS
    thread pool spinning on the small per-step GEMMs (which collapsed under
    contention from another process). ``n_threads`` obeys threadpoolctl: it
    is at most the current BLAS limit and the OpenMP limit, so a user's
    ``threadpool_limits(1)`` makes sklstm single-threaded. ``context`` holds
    BLAS at one thread while the kernel runs.
    """
    libraries = [(lib, lib.num_threads)
                 for lib in _blas_controller().lib_controllers]
    limit = min([max_threads()] + [n for _, n in libraries])
    if n_out is None:
        work = n_rows * 4 * n_units * n_units
    else:
        work = n_rows * 5 * n_units * n_out
    n_threads = int(max(1, min(limit, work // min_work)))
    # Even on one kernel thread, BLAS stays single-threaded: its thread pool
    # on the small per-step GEMMs is what collapsed under contention.
    if limit > 1:
        return n_threads, _single_threaded_blas(
            [(lib, n) for lib, n in libraries if n > 1]
        )
    return 1, nullcontext()


def _working_dtype(X):
    """float32 stays float32; everything else computes in float64."""
    return np.float32 if X.dtype == np.float32 else np.float64


class _WorkspacePool:
    """Free workspaces of one backend instance, by (shape, dtype).

    Forward and backward take their workspaces here and give them back when
    nothing references them any more: the per-step buffers at the end of
    each call, the training arrays ``gates`` and ``cells`` (held by the
    cache) and ``dgates`` at the end of backward. Arrays handed to the caller
    (``hidden``, ``h_n``, ``c_n``, the gradients) never come from the pool.
    Reusing them saves the page faults of fresh allocations every minibatch
    (~12 % of an epoch at W2). A lock makes take/give safe when one backend
    is shared by threads (backward allows one call per cache, atomically).
    At most ``max_arrays`` are kept; beyond, the pool forgets them all
    (shapes that vary from call to call gain nothing).
    """

    def __init__(self, max_arrays=32):
        self._free = {}
        self._count = 0
        self._max = max_arrays
        self._lock = threading.Lock()

    def take(self, shape, dtype):
        key = (shape, np.dtype(dtype))
        with self._lock:
            arrays = self._free.get(key)
            if arrays:
                self._count -= 1
                return arrays.pop()
        return np.empty(shape, dtype=dtype)

    def give(self, *arrays):
        with self._lock:
            for array in arrays:
                if array is None:
                    continue
                free = self._free.setdefault((array.shape, array.dtype), [])
                if any(array is other for other in free):
                    continue
                if self._count >= self._max:
                    self._free.clear()
                    self._count = 0
                    free = self._free.setdefault((array.shape, array.dtype), [])
                free.append(array)
                self._count += 1


class CPUBackend(LSTMBackend):
    """Forward and BPTT of one LSTM layer-direction with Cython + BLAS.

    The dtype of ``X`` (float32 or float64) decides the precision; weights
    are cast to it (no copy when they already match). Lengths must be sorted
    in descending order. Arrays returned by :meth:`forward` are referenced by
    the cache: modify ``hidden`` in place only after :meth:`backward`. A
    cache can be backpropagated once: its workspaces are then reused.
    """

    xp = np

    def __init__(self):
        self._pool = _WorkspacePool()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool = _WorkspacePool()

    def forward(
        self,
        X,
        lengths,
        W_ih,
        W_hh,
        bias,
        reverse=False,
        training=True,
        return_sequences=True,
        W_hr=None,
    ):
        """Run one layer-direction over a minibatch; see ``LSTMBackend``.

        Parameters
        ----------
        X, lengths, W_ih, W_hh, bias, reverse, training
            As in :meth:`LSTMBackend.forward`.
        return_sequences : bool, default=True
            When False, ``hidden`` is returned as None (only ``h_n`` and
            ``c_n`` are wanted, e.g. the last layer at inference); with
            ``training=False`` the kernel then does not write it at all.
        W_hr : ndarray of shape (P, H), default=None
            The projection of PyTorch's ``proj_size``; ``W_hh`` is then
            (4H, P). Training stores the same arrays as without it (gates,
            cells, and ``hidden`` of width P): backward recomputes the cell
            output ``o * tanh(c_t)`` from them.

        Returns
        -------
        hidden : ndarray of shape (T, B, P), or None
        h_n : ndarray of shape (B, P)
        c_n : ndarray of shape (B, H)
        cache : tuple or None
        """
        dtype = _working_dtype(X)
        X = np.ascontiguousarray(X, dtype=dtype)
        lengths = np.ascontiguousarray(lengths, dtype=np.intp)
        W_ih = np.ascontiguousarray(W_ih, dtype=dtype)
        W_hh = np.ascontiguousarray(W_hh, dtype=dtype)
        bias = np.ascontiguousarray(bias, dtype=dtype).reshape(-1)
        n_steps, n_seq, _ = X.shape
        pool = self._pool
        n_out = W_hh.shape[1]  # P: proj_size with a projection, else H
        projection = {}
        if W_hr is None:
            n_units = n_out
        else:
            W_hr = np.ascontiguousarray(W_hr, dtype=dtype)
            n_units = W_hr.shape[1]
            projection = dict(
                W_hr=W_hr, m_step=pool.take((n_seq, n_units), dtype)
            )

        gates = pool.take((n_steps, n_seq, 4 * n_units), dtype)
        cells = None
        hidden = None
        if training:
            cells = pool.take((n_steps, n_seq, n_units), dtype)
        if training or return_sequences:
            hidden = np.empty((n_steps, n_seq, n_out), dtype=dtype)
        h_n = np.empty((n_seq, n_out), dtype=dtype)
        c_n = np.empty((n_seq, n_units), dtype=dtype)
        step_gates = pool.take((n_seq, 4 * n_units), dtype)

        n_threads, context = _thread_plan(
            n_seq, n_units, None if W_hr is None else n_out,
            _MIN_WORK_PER_THREAD if training else _MIN_INFERENCE_WORK_PER_THREAD,
        )
        with context:
            lstm_forward(
                X, lengths, W_ih, W_hh, bias, bool(reverse), bool(training),
                gates, cells, hidden, h_n, c_n, step_gates, n_threads,
                **projection,
            )  # fmt: skip
        pool.give(step_gates, projection.get("m_step"))

        cache = None
        if not training:
            pool.give(gates)
        else:
            # The list is the cache's one backward: its gates and cells go
            # back to the pool then, so a second backward must not read them.
            cache = (X, lengths, W_ih, W_hh, W_hr, bool(reverse), gates, cells,
                     hidden, [True])  # fmt: skip
        return (hidden if return_sequences else None), h_n, c_n, cache

    def backward(self, dhidden, cache):
        """Backpropagation through time; see ``LSTMBackend.backward``.

        With a projection it also returns ``dW_hr``, and holds two more
        workspaces while it runs: the total ``dL/dh_t`` (T, B, P) and the
        recomputed cell outputs ``o * tanh(c_t)`` (T, B, H), the operands of
        the one GEMM ``dW_hr = dh.T @ m`` after the loop.
        """
        X, lengths, W_ih, W_hh, W_hr, reverse, gates, cells, hidden, live = cache
        try:
            live.pop()
        except IndexError:
            raise ValueError(
                "this forward cache was already backpropagated (its workspaces "
                "are reused); run forward again"
            ) from None
        dtype = X.dtype
        dhidden = np.ascontiguousarray(dhidden, dtype=dtype)
        n_steps, n_seq, n_features = X.shape
        n_out = W_hh.shape[1]
        n_units = n_out if W_hr is None else W_hr.shape[1]

        dX = np.empty(X.shape, dtype=dtype)
        dW_ih = np.empty(W_ih.shape, dtype=dtype)
        dW_hh = np.empty(W_hh.shape, dtype=dtype)
        dbias = np.empty(4 * n_units, dtype=dtype)
        pool = self._pool
        dgates = pool.take((n_steps, n_seq, 4 * n_units), dtype)
        dgates_step = pool.take((n_seq, 4 * n_units), dtype)
        dh_rec = pool.take((n_seq, n_out), dtype)
        dc_state = pool.take((n_seq, n_units), dtype)
        projection = {}
        if W_hr is not None:
            projection = dict(
                W_hr=W_hr,
                dW_hr=np.empty(W_hr.shape, dtype=dtype),
                dh_seq=pool.take((n_steps, n_seq, n_out), dtype),
                m_seq=pool.take((n_steps, n_seq, n_units), dtype),
                dh_step=pool.take((n_seq, n_out), dtype),
                dm_step=pool.take((n_seq, n_units), dtype),
            )

        n_threads, context = _thread_plan(
            n_seq, n_units, None if W_hr is None else n_out
        )
        with context:
            lstm_backward(
                X, lengths, W_ih, W_hh, reverse, gates, cells, hidden, dhidden,
                dX, dW_ih, dW_hh, dbias, dgates, dgates_step, dh_rec, dc_state,
                n_threads, **projection,
            )  # fmt: skip
        # The cache's gates and cells are dead now (one backward per cache).
        pool.give(gates, cells, dgates, dgates_step, dh_rec, dc_state,
                  *(projection.get(name) for name in
                    ("dh_seq", "m_seq", "dh_step", "dm_step")))  # fmt: skip
        if W_hr is not None:
            return dX, dW_ih, dW_hh, dbias, projection["dW_hr"]
        return dX, dW_ih, dW_hh, dbias
