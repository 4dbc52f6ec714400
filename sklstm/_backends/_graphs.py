"""CUDA graphs of a minibatch's loss and gradient, replayed by the GPU fit.

Why: at the sizes scikit-learn users train (H <= 256), a minibatch issues
thousands of small GEMMs and kernels, one or two per timestep and layer, and
launching them from Python costs more than running them. Captured once into
a CUDA graph, the whole forward, loss and backward of a minibatch is then
one launch (DESIGN.md §4).

How:

- A graph replays fixed device addresses and fixed kernel arguments. So it
  is made per minibatch shape, for minibatches whose sequences all have the
  full length (the step loop and its row counts are then the same every
  time), with ``output="last"`` and no dropout masks to draw; anything else
  runs eagerly, as before. The inputs are copied into *static* device
  arrays before each replay, and the loss and gradient come back in the
  arrays the capture produced.
- Everything the capture allocates comes from a memory pool of the graph's
  own, so no other array can ever be given memory the graph writes to. The
  graph also keeps every cached device array it reads (the backend's row
  layouts), so they outlive any cache eviction.
- GEMMs go to a cuBLAS handle of sklstm's own (``_cublas.py``), bound to
  the capture stream: CuPy refuses its own cuBLAS wrappers during capture.
- Trust, but verify: the first minibatch of each shape is also computed
  eagerly, on the ordinary path, and the graph's replay must agree with it
  to rounding. If capture fails or the results differ, training carries on
  eagerly with a warning, so a driver or library quirk costs speed, never
  correctness.

The optimizer step and gradient clipping stay outside the graph (a few
launches per minibatch): Adam's step size changes every step and would be
frozen into a graph as a kernel argument.
"""

import warnings

import numpy as np

from .._network import all_full_length

# cuBLAS's workspace per graph: what its GEMM heuristics ask for on recent
# GPUs (NVIDIA recommends 32 MiB on Hopper).
_WORKSPACE_BYTES = 32 * 2**20

#: Set to False to never capture (every minibatch then runs eagerly).
ENABLED = True


class CapturedStep:
    """A captured step: its graph, outputs, and what must outlive it.

    Attributes
    ----------
    graph : object with ``launch()``
    outputs : tuple
        The arrays the graph writes each replay: ``(loss, grad)``.
    keep : tuple
        Memory the graph reads or writes (pool, workspace, handle, inputs,
        cached layouts): held as long as the graph.
    """

    def __init__(self, graph, outputs, keep):
        self.graph = graph
        self.outputs = outputs
        self.keep = keep


class CupyGraphRuntime:
    """Captures steps into CUDA graphs through CuPy, on a stream of its own.

    Parameters
    ----------
    ops : CupyOps
        Whose GEMMs are routed to the capture handle while capturing.
    """

    def __init__(self, ops):
        import cupy

        self._cupy = cupy
        self._ops = ops
        # Capture needs a stream other than the legacy default one.
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def copy_in(self, static, host):
        """Copy host array ``host`` into device array ``static``, in stream order."""
        static.set(np.ascontiguousarray(host, dtype=static.dtype))

    def capture(self, step, keep=()):
        """Run ``step`` once to warm up, then capture it; a :class:`CapturedStep`.

        The warm-up compiles kernels, lets cuBLAS choose its algorithms, and
        leaves the private pool holding blocks of the sizes the capture asks
        for, so the capture itself allocates (almost) no device memory.
        """
        from ._cublas import CublasHandle

        cupy, stream = self._cupy, self._stream
        pool = cupy.cuda.MemoryPool()
        workspace = cupy.empty(_WORKSPACE_BYTES, dtype=cupy.uint8)
        handle = CublasHandle(stream.ptr, workspace.data.ptr, workspace.nbytes,
                              allow_tf32=self._ops.allow_tf32)
        # The step reads what the current stream has written (parameters).
        cupy.cuda.get_current_stream().synchronize()
        with stream, cupy.cuda.using_allocator(pool.malloc), \
                self._ops.using_handle(handle):
            step()
            stream.synchronize()
            stream.begin_capture()
            try:
                outputs = step()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # the capture is invalid anyway
                    pass
                raise
            graph = stream.end_capture()
        stream.synchronize()
        return CapturedStep(graph, outputs, keep=(pool, workspace, handle, *keep))


class MinibatchGraphs:
    """The loss and gradient of a fit's minibatches, replayed as CUDA graphs.

    Parameters
    ----------
    runtime : CupyGraphRuntime or a stand-in with ``capture`` and ``copy_in``
    network : LSTMNetwork
    backend : CupyBackend
    params : device array of shape (n_params,)
        The flat parameters, updated in place between minibatches: graphs
        read them at a fixed address.
    alpha : float
    weight_mask : device array of shape (n_params,)
    max_graphs : int, default=2
        Shapes captured per fit: the full minibatch and the last, smaller
        one. Other shapes run eagerly.
    """

    def __init__(self, runtime, network, backend, params, *, alpha, weight_mask,
                 max_graphs=2):
        self._runtime = runtime
        self._network = network
        self._backend = backend
        self._params = params
        self._alpha = alpha
        self._weight_mask = weight_mask
        self._max_graphs = max_graphs
        self._steps = {}  # shape key -> (CapturedStep, static inputs)
        self._checked_on_new_inputs = set()  # shape keys
        self.enabled = ENABLED
        #: How many minibatches ran as graph replays (tests read it).
        self.n_replays = 0

    def run(self, X_batch, lengths, Y_batch, weight_batch):
        """``(loss, grad)`` of a minibatch, or None: compute it eagerly.

        ``X_batch`` (T, B, F), ``lengths`` (B,), ``Y_batch`` (B, n_outputs)
        and ``weight_batch`` (B,) are host arrays, as the fit loop gathers
        them. The returned arrays are the graph's: they are overwritten by
        the next replay of the same shape.
        """
        if not self.enabled or not all_full_length(lengths, X_batch.shape[0]):
            return None
        key = (X_batch.shape, Y_batch.shape)
        entry = self._steps.get(key)
        if entry is None:
            if len(self._steps) >= self._max_graphs:
                return None
            return self._capture(key, X_batch, lengths, Y_batch, weight_batch)
        captured, static = entry
        for target, host in zip(static, (X_batch, Y_batch, weight_batch)):
            self._runtime.copy_in(target, host)
        captured.graph.launch()
        self.n_replays += 1
        if key not in self._checked_on_new_inputs:
            # The capture was checked on the minibatch it was made with; the
            # first replay on other data checks the static inputs too.
            self._checked_on_new_inputs.add(key)
            xp = self._backend.xp
            reference = self._loss_and_grad(xp.asarray(X_batch), lengths,
                                            xp.asarray(Y_batch),
                                            xp.asarray(weight_batch))
            problem = self._disagreement(captured.outputs, reference)
            if problem is not None:
                self._give_up(problem)
                return reference
        return captured.outputs

    def _loss_and_grad(self, X, lengths, Y, weight):
        loss, grad = self._network.loss_and_grad(
            self._backend, self._params, X, lengths, Y, weight,
            alpha=self._alpha, weight_mask=self._weight_mask,
        )
        return self._backend.xp.asarray(loss), grad

    def _capture(self, key, X_batch, lengths, Y_batch, weight_batch):
        """Capture a new shape; return the eagerly computed result."""
        xp = self._backend.xp
        static = tuple(xp.array(host) for host in (X_batch, Y_batch, weight_batch))
        X_static, Y_static, weight_static = static
        lengths = np.array(lengths)
        # The reference: this minibatch on the ordinary, eager path. It is
        # also what this call returns, whatever happens to the capture.
        reference = self._loss_and_grad(X_static, lengths, Y_static, weight_static)
        try:
            captured = self._runtime.capture(
                lambda: self._loss_and_grad(X_static, lengths, Y_static,
                                            weight_static),
                keep=(static, tuple(getattr(self._backend, "_layouts",
                                            {}).values())),
            )
            captured.graph.launch()
            problem = self._disagreement(captured.outputs, reference)
        except Exception as exc:  # any failure: train on, eagerly
            problem = f"capture failed ({type(exc).__name__}: {exc})"
        if problem is not None:
            self._give_up(problem)
            return reference
        self._steps[key] = (captured, static)
        return reference

    def _give_up(self, problem):
        """Stop replaying for the rest of the fit, and say why."""
        self.enabled = False
        self._steps.clear()
        warnings.warn(
            f"CUDA graph replay is off for this fit: {problem}. Training "
            "continues without graphs (correct, but slower on small models).",
            RuntimeWarning, stacklevel=4,
        )

    def _disagreement(self, outputs, reference):
        """None when the replay matches the eager result to rounding."""
        xp = self._backend.xp
        if reference[1].dtype == np.float64:
            rtol, atol = 1e-9, 1e-12
        else:  # float32, and TF32 GEMMs whose algorithm may differ
            rtol, atol = 1e-2, 1e-4
        for name, got, want in zip(("loss", "gradient"), outputs, reference):
            scale = float(xp.abs(want).max()) if want.size else 0.0
            if not bool(xp.allclose(got, want, rtol=rtol, atol=atol * scale)):
                return f"the graph's {name} differs from the eager one"
        return None

