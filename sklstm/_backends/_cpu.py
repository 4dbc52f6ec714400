"""The CPU backend: Cython timestep loops over BLAS (``sklstm._kernels``).

This module owns the memory: it makes the inputs C-contiguous in the working
dtype, allocates outputs and workspaces with NumPy, and hands them to the
nogil kernels of ``sklstm/_kernels/_lstm_fast.pyx``. See ``_base.py`` for the
notation and the contract.
"""

import functools
import threading
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from .._aligned import empty_aligned
from .._kernels import _head
from .._kernels._dispatch import (
    adam_update,
    lstm_backward,
    lstm_forward,
    max_threads,
    uses_own_weight_grads,
    weight_grad_workspace_size,
)
from ._base import LSTMBackend

# Below this many multiply-adds per timestep (rows x 4H x H), a kernel call
# is not cut into pieces: a second thread's start and its share of the
# caches cost more than it saves. From it, the call is cut into one piece per
# thread and _ThreadChooser measures whether running them on all threads
# pays. W1 training (B=32, H=32: 131k per step, 16 rows per piece) is cut:
# on 2 quiet Zen 3 cores, with BLAS held at one thread for the fit, its
# forward kernel went from 215 to 135 us and its backward from 304 to
# 176 us (an epoch 24.0 -> 17.8 ms).
_MIN_WORK_TO_SPLIT = 2**16


# From this size on (the L1 data cache of most x86 cores; L1_BYTES in the
# kernels), backward packs W_hh into panels for its per-step products
# dgates_step @ W_hh. (Forward packs its weights at any size: it copies
# them into [W_ih | W_hh].T anyway.) W2 (H=64, 64 KiB): backward on 2
# threads 2.19 -> 2.08 ms; W1 (H=32, 16 KiB) gained nothing and paid the
# copy.
_PACK_MIN_BYTES = 32 * 1024


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


class _BlasHold:
    """BLAS held at one thread, process-wide, while any fit or predict runs.

    The kernels call BLAS from their own threads, one BLAS thread each (see
    :func:`_thread_plan`). Setting BLAS to one thread around each kernel call
    and back cost ~6 us a call, and worse: between calls, NumPy's products
    woke OpenBLAS's pool, whose threads then spun on the second core while
    the kernel's second thread needed it (cut in 2 pieces, a W1 epoch was no
    faster than whole; with BLAS held, 24.0 -> 17.8 ms). So a fit or
    predict holds BLAS at one thread from start to end, and the kernels use
    the limit read when the hold began (a user's ``threadpool_limits``
    around the call is still obeyed).

    Only the main thread holds: OpenBLAS lowered by the main thread does not
    go back up when another thread sets it (seen with SciPy's and NumPy's
    OpenBLAS), so a hold ended in a worker thread would leave the process at
    one BLAS thread. A fit in another thread (joblib's threading backend)
    sets BLAS to one thread around each kernel call, as without a hold,
    unless the main thread holds it already. Holds nest.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._libraries = []  # [(controller, n_threads before the hold)]
        #: Smallest BLAS thread limit before the hold; None when not held.
        self.limit = None

    @contextmanager
    def __call__(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        with self._lock:
            if self._depth == 0:
                self._libraries = [(lib, lib.num_threads)
                                   for lib in _blas_controller().lib_controllers]
                self.limit = min([n for _, n in self._libraries],
                                 default=max_threads())
                for library, n_threads in self._libraries:
                    if n_threads > 1:
                        library.set_num_threads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for library, n_threads in self._libraries:
                        if n_threads > 1:
                            library.set_num_threads(n_threads)
                    self._libraries = []
                    self.limit = None


#: The one hold of this process (BLAS thread limits are process-wide).
_blas_hold = _BlasHold()


# From this many multiply-adds per timestep and piece, a call that is cut in
# pieces always runs them on all its threads. Such a call lasts tens of
# milliseconds with no synchronisation until its end, so a descheduled thread
# costs it a few per cent at worst, while a one-thread try would cost the
# chooser half the call. W3 (B=128, H=256: 33.5M per step) and W2 inference
# (B=1024, H=64: 16.8M) are above; W2 training (1M) is measured.
_MIN_WORK_ALWAYS_SPLIT = 2**23


def _step_work(n_rows, n_units, n_out=None):
    """Multiply-adds of one timestep's GEMMs (with a projection: two)."""
    if n_out is None:
        return n_rows * 4 * n_units * n_units
    return n_rows * 5 * n_units * n_out


def _thread_plan(n_rows, n_units, n_out=None, min_work=_MIN_WORK_TO_SPLIT):
    """``(n_parts, context)`` for one kernel call.

    ``n_parts`` is how many pieces the kernel cuts its work into: row blocks
    of the recurrence, row or gate-unit slices of the big GEMMs. It fixes
    the arithmetic, and depends only on the shapes and the thread limit, so
    results are bit for bit repeatable whatever number of threads then runs
    the pieces (:class:`_ThreadChooser` picks that number, 1 or
    ``n_parts``). ``n_out`` is the width of ``h`` with a projection
    (``proj_size``); the work per step is then the recurrent GEMM (4H x P)
    and the projection GEMM (P x H).

    The thread limit obeys threadpoolctl: it is at most the current BLAS
    limit and the OpenMP limit, so a user's ``threadpool_limits(1)`` makes
    sklstm single-threaded. Each piece calls BLAS single-threaded: there is
    no synchronisation per timestep, and no BLAS thread pool spinning on the
    small per-step GEMMs (which collapsed under contention from another
    process). ``context`` holds BLAS at one thread while the kernel runs,
    unless :class:`_BlasHold` already holds it for the whole fit or predict.
    """
    held = _blas_hold.limit
    if held is not None:  # inside a fit or predict: BLAS is at one thread
        limit = min(max_threads(), held)
        n_parts = limit if _step_work(n_rows, n_units, n_out) >= min_work else 1
        return n_parts, nullcontext()
    libraries = [(lib, lib.num_threads)
                 for lib in _blas_controller().lib_controllers]
    limit = min([max_threads()] + [n for _, n in libraries])
    n_parts = limit if _step_work(n_rows, n_units, n_out) >= min_work else 1
    # Even on one kernel thread, BLAS stays single-threaded: its thread pool
    # on the small per-step GEMMs is what collapsed under contention.
    if limit > 1:
        return n_parts, _single_threaded_blas(
            [(lib, n) for lib, n in libraries if n > 1]
        )
    return 1, nullcontext()


class _ThreadChooser:
    """Runs each kind of kernel call on the thread count measured fastest.

    Whether cutting a call over threads pays depends on the shapes and on
    what else the machine is doing. Quiet, 2 threads ran a W2 epoch 1.7x
    faster than one; with another process busy on one of 2 cores, the same
    split ran it 2.3x *slower*: each call ends at a barrier, and a thread
    descheduled for a time slice holds it. So the choice is measured, per
    kind of call (direction of the pass and the shapes but ``T``), as a
    moving average of seconds per timestep for each candidate (1 thread,
    ``n_parts`` threads):

    - the first call of a kind warms up (page faults of new workspaces,
      cold caches) and is not measured; the next ones measure ``n_parts``
      threads, then one thread;
    - then the faster is used; its average follows the load, so a choice
      that gets slower than the other's last average is dropped at once,
      and tried again after ``min_probe`` calls;
    - the other is tried again after ``min_probe`` calls, an interval that
      doubles (up to ``max_probe``) each time the try confirms the choice,
      so a quiet machine pays ~1 % for the tries and a change of load is
      noticed within an epoch or two;
    - a try of ``n_parts`` threads lasts two calls, and only the second is
      measured. After a few milliseconds on one thread the others have
      stopped spinning and gone to sleep, and the first call pays their
      wake-up: 454 against ~340 us for the calls after it at W1's training
      minibatch, a bias that kept the split out in some fits where it ran
      1.4x faster. A try of one thread has nothing to wake.

    The arithmetic does not depend on the choice (see :func:`_thread_plan`),
    so neither do the results.
    """

    def __init__(self, min_probe=16, max_probe=256, weight=0.3):
        self._stats = {}
        self._min_probe = min_probe
        self._max_probe = max_probe
        self._weight = weight

    def choose(self, key, n_parts):
        """Threads for the next call of this kind (1 or ``n_parts``)."""
        if n_parts == 1:
            return 1
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = {
                "calls": 0, "interval": self._min_probe,
                "next_probe": self._min_probe, "seconds": {n_parts: None, 1: None},
                "waking": False,
            }
        stats["calls"] += 1
        seconds = stats["seconds"]
        if stats["calls"] == 1 or seconds[n_parts] is None:
            return n_parts
        if seconds[1] is None:
            return 1
        best, other = _best_and_other(seconds)
        return other if stats["calls"] >= stats["next_probe"] else best

    def record(self, key, n_threads, seconds_per_step):
        """Fold one measured call into the average of its thread count."""
        stats = self._stats.get(key)
        if stats is None or stats["calls"] == 1:
            return  # not chosen here, or the warm-up call
        seconds = stats["seconds"]
        best = None
        if None not in seconds.values():
            best, other = _best_and_other(seconds)
            if n_threads == other and stats["calls"] >= stats["next_probe"]:
                if n_threads > 1 and not stats["waking"]:
                    # The try's first call woke the threads: not measured,
                    # and the next call is the try again.
                    stats["waking"] = True
                    return
                stats["waking"] = False
                # A try of the candidate not in use: take its time as it is
                # now, and back off if it is still the slower.
                seconds[other] = seconds_per_step
                slower = seconds_per_step > seconds[best]
                stats["interval"] = (min(2 * stats["interval"], self._max_probe)
                                     if slower else self._min_probe)
                stats["next_probe"] = stats["calls"] + stats["interval"]
                return
        old = seconds[n_threads]
        seconds[n_threads] = (seconds_per_step if old is None else
                              old + self._weight * (seconds_per_step - old))
        if n_threads == best and _best_and_other(seconds)[0] != best:
            # The choice in use got slower than the other's last try and is
            # dropped: a change of load, or one slow call. Try it again
            # soon, not only after the interval its tries had earned.
            stats["interval"] = self._min_probe
            stats["next_probe"] = stats["calls"] + self._min_probe


def _best_and_other(seconds):
    """The thread count of the smaller average, and the other one."""
    (n_a, a), (n_b, b) = seconds.items()
    return (n_a, n_b) if a <= b else (n_b, n_a)


#: One chooser per process: what it learns in one fit serves the next.
_thread_chooser = _ThreadChooser()


def _run_timed(kernel, key, n_parts, n_steps, step_work, *args, **kwargs):
    """``kernel(*args, n_threads=..., n_parts=n_parts, **kwargs)``, on the
    threads chosen for this kind of call, timed for the chooser.

    All ``n_parts`` threads when each piece has ``_MIN_WORK_ALWAYS_SPLIT``
    per step, else the chooser's pick. A plain function, not a context
    manager: a generator-based one cost ~4 us a call.
    """
    if n_parts == 1 or step_work >= n_parts * _MIN_WORK_ALWAYS_SPLIT:
        kernel(*args, n_threads=n_parts, n_parts=n_parts, **kwargs)
        return
    n_threads = _thread_chooser.choose(key, n_parts)
    start = time.perf_counter()
    kernel(*args, n_threads=n_threads, n_parts=n_parts, **kwargs)
    _thread_chooser.record(key, n_threads,
                           (time.perf_counter() - start) / max(n_steps, 1))


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def _working_dtype(X):
    """float32 stays float32; everything else computes in float64."""
    return _FLOAT32 if X.dtype == _FLOAT32 else _FLOAT64


class _WorkspacePool:
    """Free workspaces of one backend instance, by (shape, dtype).

    Forward and backward take their workspaces here and give them back when
    nothing references them any more: the per-step buffers at the end of
    each call, and the training arrays ``gates`` and ``cells`` (held by the
    cache) at the end of backward, which overwrites the gates with their
    gradients. Arrays handed to the caller
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
        """A free array of ``shape`` and ``dtype`` (a ``np.dtype``), or a new one."""
        key = (shape, dtype)
        with self._lock:
            arrays = self._free.get(key)
            if arrays:
                self._count -= 1
                return arrays.pop()
        return empty_aligned(shape, dtype)  # see sklstm/_aligned.py

    def give(self, *arrays):
        with self._lock:
            for array in arrays:
                if array is None:
                    continue
                free = self._free.setdefault((array.shape, array.dtype), [])
                for other in free:  # a loop, not any(): ~0.4 us less a call
                    if other is array:
                        break  # given twice: kept once
                else:
                    if self._count >= self._max:
                        self._free.clear()
                        self._count = 0
                        free = self._free.setdefault((array.shape, array.dtype), [])
                    free.append(array)
                    self._count += 1


def specialised(kernel, dtype):
    """The float or double specialisation of a fused Cython kernel: calling
    it skips the dispatch on the arguments' types (~1-2 us a call)."""
    if getattr(kernel, "__signatures__", None):
        return kernel["float" if dtype == np.float32 else "double"]
    return kernel


class CPUBackend(LSTMBackend):
    """Forward and BPTT of one LSTM layer-direction with Cython + BLAS.

    The dtype of ``X`` (float32 or float64) decides the precision; weights
    are cast to it (no copy when they already match). Lengths must be sorted
    in descending order. Arrays returned by :meth:`forward` are referenced by
    the cache: modify ``hidden`` in place only after :meth:`backward`. A
    cache can be backpropagated once: its workspaces are then reused.
    """

    xp = np

    #: Adam's step over the flat buffer in one pass (see ``_optimizers.Adam``).
    adam_update = staticmethod(adam_update)

    def __init__(self):
        self._pool = _WorkspacePool()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool = _WorkspacePool()

    def session(self):
        """BLAS held at one thread for a whole fit or predict (``_BlasHold``)."""
        return _blas_hold()

    def minibatch_steps(self, network, params, *, alpha, weight_mask):
        """A :class:`~._cpu_steps.CPUMinibatchSteps` for one fit: its
        minibatches on workspaces kept across them."""
        from ._cpu_steps import CPUMinibatchSteps

        return CPUMinibatchSteps(network, params, alpha=alpha,
                                 weight_mask=weight_mask)

    def head_loss_and_grad(self, head_input, W_out, b_out, Y, sample_weight, loss,
                           dW_out, db_out):
        """One compiled call (``sklstm/_kernels/_head.pyx``); see
        :meth:`LSTMBackend.head_loss_and_grad`."""
        dtype = _working_dtype(dW_out)  # the gradient buffer's
        head_input = np.ascontiguousarray(head_input, dtype=dtype)
        n_rows, n_outputs = head_input.shape[0], W_out.shape[0]
        draw = np.empty((n_rows, n_outputs), dtype)
        dhead_input = np.empty_like(head_input)
        value = specialised(_head.head_loss_and_grad, dtype)(
            head_input, np.ascontiguousarray(W_out, dtype=dtype),
            np.ascontiguousarray(b_out, dtype=dtype),
            np.ascontiguousarray(Y, dtype=dtype),
            np.ascontiguousarray(sample_weight, dtype=dtype),
            _head.LOSS_CODES[loss], draw, dW_out, db_out, dhead_input)
        return value, dhead_input

    def add_l2_penalty(self, params, weight_mask, alpha, n_samples, grad):
        """One compiled call (``sklstm/_kernels/_head.pyx``); see
        :meth:`LSTMBackend.add_l2_penalty`."""
        return specialised(_head.add_l2_penalty, params.dtype)(
            params, np.asarray(weight_mask, dtype=params.dtype), alpha,
            n_samples, grad)

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
        hidden_out=None,
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
        hidden_out : ndarray of shape (T, B, P), default=None
            Where ``hidden`` goes, returned then: C-contiguous, or a block of
            columns of a C-contiguous array (a direction's half of a
            bidirectional layer's output). Of the working dtype, the kernel
            writes it there; of another, it gets a copy.

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

        # Without a projection, one GEMM per step on [x_t | h_prev] (xh);
        # inference then keeps no (T, B, 4H) gates at all.
        fused = {}
        gates = None
        if W_hr is None:
            fused = dict(xh=pool.take((n_seq, X.shape[2] + n_units), dtype),
                         W_cat_t=pool.take((X.shape[2] + n_units, 4 * n_units),
                                           dtype))
        if training or W_hr is not None:
            gates = pool.take((n_steps, n_seq, 4 * n_units), dtype)
        cells = None
        hidden = None
        if training:
            cells = pool.take((n_steps, n_seq, n_units), dtype)
        if training or return_sequences:
            # Into hidden_out itself when the kernel can write there (its
            # dtype), else into an array of its own, copied there below.
            hidden = (hidden_out if hidden_out is not None and hidden_out.dtype == dtype
                      else empty_aligned((n_steps, n_seq, n_out), dtype))
        h_n = np.empty((n_seq, n_out), dtype=dtype)
        c_n = np.empty((n_seq, n_units), dtype=dtype)
        step_gates = pool.take((n_seq, 4 * n_units), dtype)
        # The projection's path transposes W_hh here (the fused one packs
        # [W_ih | W_hh].T into W_cat_t).
        W_hh_t = (None if W_hr is None
                  else pool.take((n_out, 4 * n_units), dtype))

        n_parts, context = _thread_plan(
            n_seq, n_units, None if W_hr is None else n_out
        )
        key = ("forward", bool(training), hidden is not None, X.shape[1:],
               W_hh.shape, dtype, n_parts)  # fmt: skip
        work = _step_work(n_seq, n_units, None if W_hr is None else n_out)
        with context:
            _run_timed(
                lstm_forward, key, n_parts, n_steps, work,
                X, lengths, W_ih, W_hh, bias, bool(reverse), bool(training),
                gates, cells, hidden, h_n, c_n, step_gates,
                W_hh_t=W_hh_t, **projection, **fused,
            )  # fmt: skip
        pool.give(step_gates, W_hh_t, projection.get("m_step"), *fused.values())

        returned = hidden
        if hidden_out is not None and hidden is not None and hidden is not hidden_out:
            hidden_out[...] = hidden  # backward reads the kernel's own array
            returned = hidden_out
        cache = None
        if not training:
            pool.give(gates)
        else:
            # The list is the cache's one backward: its gates and cells go
            # back to the pool then, so a second backward must not read them.
            cache = (X, lengths, W_ih, W_hh, W_hr, bool(reverse), gates, cells,
                     hidden, [True])  # fmt: skip
        return (returned if return_sequences else None), h_n, c_n, cache

    def backward(self, dhidden, cache, input_grad=True):
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

        dX = empty_aligned(X.shape, dtype) if input_grad else None
        dW_ih = np.empty(W_ih.shape, dtype=dtype)
        dW_hh = np.empty(W_hh.shape, dtype=dtype)
        dbias = np.empty(4 * n_units, dtype=dtype)
        pool = self._pool
        dgates_step = pool.take((n_seq, 4 * n_units), dtype)
        dh_rec = pool.take((n_seq, n_out), dtype)
        dc_state = pool.take((n_seq, n_units), dtype)
        # W_hh as packed panels for the per-step products (see
        # _small_gemm.h), once it outgrows L1: smaller, it is read in place
        # as fast, and packing it would only add a copy per call.
        W_hh_packed = (pool.take(W_hh.shape, dtype)
                       if W_hh.nbytes > _PACK_MIN_BYTES else None)
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

        n_parts, context = _thread_plan(
            n_seq, n_units, None if W_hr is None else n_out
        )
        # The weight gradients after the loop, in sklstm's kernel where
        # this build does so (see uses_own_weight_grads).
        weight_grad_work = None
        if uses_own_weight_grads(4 * n_units, n_features, n_out, dtype.itemsize):
            weight_grad_work = pool.take(
                (weight_grad_workspace_size(4 * n_units, n_features, n_out,
                                            n_parts, dtype.itemsize),), dtype)
        key = ("backward", X.shape[1:], W_hh.shape, dtype, n_parts)
        work = _step_work(n_seq, n_units, None if W_hr is None else n_out)
        with context:
            _run_timed(
                lstm_backward, key, n_parts, n_steps, work,
                X, lengths, W_ih, W_hh, reverse, gates, cells, hidden, dhidden,
                dX, dW_ih, dW_hh, dbias, gates, dgates_step, dh_rec, dc_state,
                W_hh_packed=W_hh_packed, weight_grad_work=weight_grad_work,
                **projection,
            )  # fmt: skip
        # The cache's gates and cells are dead now (one backward per cache):
        # the kernel overwrote the gates with their gradients (dgates).
        pool.give(gates, cells, dgates_step, dh_rec, dc_state, W_hh_packed,
                  weight_grad_work,
                  *(projection.get(name) for name in
                    ("dh_seq", "m_seq", "dh_step", "dm_step")))  # fmt: skip
        if W_hr is not None:
            return dX, dW_ih, dW_hh, dbias, projection["dW_hr"]
        return dX, dW_ih, dW_hh, dbias
