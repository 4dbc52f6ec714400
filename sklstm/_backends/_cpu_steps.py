"""The CPU fit's minibatch step, with its workspaces kept from one minibatch
to the next.

Why: at the sizes scikit-learn users train, a minibatch's kernels are short
(W1 of ``benchmarks/bench_cpu.py``: ~220 us for forward and backward), and
the general path around them costs almost as much again. Through
``LSTMNetwork.loss_and_grad`` and ``CPUBackend``, each layer-direction's
forward and backward take a dozen workspaces from the pool and give them
back, allocate their outputs, make the weights contiguous, build the keys
of the thread chooser, and the network then copies the gradients into the
flat buffer.

How: a fit makes one :class:`CPUMinibatchSteps`. For each minibatch size it
keeps one set of arrays per layer-direction (sized for the longest
minibatch seen so far; a shorter one uses their first ``T`` steps), the
views of the parameters and of the gradient buffer, each kernel call's
pieces, and the thread chooser's key, all made once. A minibatch is then
the kernel calls, with the weight gradients written straight into the
gradient buffer, and the head, loss and L2 term in one compiled call each
(``sklstm/_kernels/_head.pyx``, which the general path calls too); the
thread chooser times it whole, once.

Between two bidirectional layers there are no copies: each direction
below writes its hidden sequence into its half of the next layer's input
(T, B, 2H), and reads its gradient from its halves of the two directions'
``dX`` above, which the kernel adds as it reads them. Concatenating,
summing and copying these in NumPy took ~0.6 ms of each ~18 ms minibatch
of W4 (``benchmarks/bench_cpu.py``), and their arrays ~6.5 MB of the
minibatch's working set.

It computes what ``LSTMNetwork.loss_and_grad`` computes, with the same
kernels, pieces and operations in the same order, so the results are the
same bit for bit (``tests/test_cpu_steps.py``). Two differences give the
same sums: the top layer's backward takes the head's gradient as ``dh_n``,
where the general path scatters it into a ``dhidden`` that is zero
elsewhere (the kernel adds it to the same zero); and below a bidirectional
layer the two directions' ``dX`` are added in the kernel, rounded once as
the general path's summed array holds them. It covers what most fits
are: ``output="last"``, no projection, no dropout masks to draw (one layer,
or ``dropout=0``), any number of layers and directions, every loss. Other
fits, and fits outside the main thread (where BLAS is not held at one
thread for the whole fit, see ``_cpu._BlasHold``), run the general path.
"""

import time
from collections import namedtuple

import numpy as np

from .._aligned import empty_aligned
from .._kernels import _head
from . import _cpu

#: Set to False to run every minibatch through the general path.
ENABLED = True


#: A layer-direction's time-major arrays cut to a minibatch's T steps.
_Steps = namedtuple("_Steps", "gates cells hidden dX")


class _LayerDirection:
    """One layer-direction's arrays for minibatches of ``n_seq`` sequences
    of up to ``n_steps`` steps, and its kernel calls' thread plan.

    ``input_grad``: backward computes ``dX`` (not for the data). A layer
    below another reads its ``dhidden`` from the dX of the layer above, in
    place. The top layer has no ``dhidden``: the head reads its h_n only,
    whose gradient backward takes as ``dh_n``, from an array of its own
    with two directions (``own_dh_n``). ``hidden``: the (n_steps, n_seq,
    n_units) array forward writes h into (a direction's half of the next
    layer's input), or None: one of its own."""

    def __init__(self, n_steps, n_seq, n_inputs, n_units, dtype, input_grad,
                 own_dh_n, hidden=None):
        G = 4 * n_units
        empty = empty_aligned  # see sklstm/_aligned.py
        self.n_steps = n_steps
        # Forward: what backward reads, the outputs, and the workspaces.
        # Backward overwrites the gates with their gradients (dgates).
        self.gates = empty((n_steps, n_seq, G), dtype)
        self.cells = empty((n_steps, n_seq, n_units), dtype)
        self.hidden = (empty((n_steps, n_seq, n_units), dtype) if hidden is None
                       else hidden)
        self.h_n = empty((n_seq, n_units), dtype)
        self.c_n = empty((n_seq, n_units), dtype)
        self.step_gates = empty((n_seq, G), dtype)
        self.xh = empty((n_seq, n_inputs + n_units), dtype)
        self.W_cat_t = empty((n_inputs + n_units, G), dtype)
        # Backward: the top layer's dh_n (a copy of its columns of the
        # head's gradient with two directions), dX, and the workspaces.
        self.dh_n = empty((n_seq, n_units), dtype) if own_dh_n else None
        self.dX = empty((n_steps, n_seq, n_inputs), dtype) if input_grad else None
        self.dgates_step = empty((n_seq, G), dtype)
        self.dh_rec = empty((n_seq, n_units), dtype)
        self.dc_state = empty((n_seq, n_units), dtype)
        self.W_hh_packed = (empty((G, n_units), dtype)
                            if G * n_units * dtype.itemsize > _cpu._PACK_MIN_BYTES
                            else None)
        # As CPUBackend's calls: the pieces, and whether they always run on
        # all threads (else the minibatch's chosen thread count runs them).
        self.n_parts, _ = _cpu._thread_plan(n_seq, n_units)
        self.always_split = (self.n_parts == 1 or _cpu._step_work(n_seq, n_units)
                             >= self.n_parts * _cpu._MIN_WORK_ALWAYS_SPLIT)
        self.weight_grad_work = None
        if _cpu.uses_own_weight_grads(G, n_inputs, n_units, dtype.itemsize):
            self.weight_grad_work = empty(_cpu.weight_grad_workspace_size(
                G, n_inputs, n_units, self.n_parts, dtype.itemsize), dtype)
        self._steps = {}

    def steps(self, T):
        """The time-major arrays cut to ``T`` steps (views made once per
        ``T``; C-contiguous but ``hidden`` below a bidirectional layer)."""
        steps = self._steps.get(T)
        if steps is None:
            steps = self._steps[T] = _Steps(*(
                None if a is None else a[:T]
                for a in (self.gates, self.cells, self.hidden, self.dX)))
        return steps

    def threads(self, n_threads):
        """The threads of this layer-direction's calls when the minibatch
        runs on ``n_threads``."""
        return self.n_parts if self.always_split else min(n_threads, self.n_parts)


class _Plan:
    """Everything a minibatch of one size needs: the layer-directions'
    arrays and the network's (concatenations, the head's)."""

    def __init__(self, network, n_steps, n_seq, dtype):
        D = network.n_directions
        self.n_steps = n_steps
        self.layers = []
        # Per layer below the top, with two directions: their outputs side
        # by side (T, B, 2H), the next layer's input, which each direction
        # writes its half of.
        self.concat = []
        n_inputs = network.n_features
        n_layers = len(network.hidden_layer_sizes)
        for layer, n_units in enumerate(network.hidden_layer_sizes):
            top = layer == n_layers - 1
            concat = (empty_aligned((n_steps, n_seq, 2 * n_units), dtype)
                      if D == 2 and not top else None)
            self.concat.append(concat)
            halves = ([None] * D if concat is None
                      else [concat[:, :, :n_units], concat[:, :, n_units:]])
            self.layers.append([
                _LayerDirection(
                    n_steps, n_seq, n_inputs, n_units, dtype, input_grad=layer > 0,
                    own_dh_n=D == 2 and top, hidden=half)
                for half in halves
            ])
            n_inputs = D * n_units
        all_lds = [ld for lds in self.layers for ld in lds]
        self.n_parts = max(ld.n_parts for ld in all_lds)
        # The thread chooser measures whole minibatches (one choice and one
        # timing for all their kernel calls) when some call is its to choose.
        self.chosen = not all(ld.always_split for ld in all_lds)
        self.key = ("minibatch", network.n_features, network.hidden_layer_sizes,
                    D, n_seq, dtype, self.n_parts)
        width = D * network.hidden_layer_sizes[-1]
        self.head_input = empty_aligned((n_seq, width), dtype) if D == 2 else None
        self.draw = empty_aligned((n_seq, network.n_outputs), dtype)
        self.dhead_input = empty_aligned((n_seq, width), dtype)


class CPUMinibatchSteps:
    """The loss and gradient of a CPU fit's minibatches, on kept workspaces.

    Parameters
    ----------
    network : LSTMNetwork
    params : ndarray of shape (n_params,)
        The flat parameters, updated in place between minibatches: the views
        of them are made once.
    alpha : float
    weight_mask : ndarray of shape (n_params,)
        1 on weights, 0 on biases, in ``params``' dtype.
    max_plans : int, default=4
        Minibatch sizes kept (a fit has one, and a smaller last one). Other
        sizes run the general path.
    """

    def __init__(self, network, params, *, alpha, weight_mask, max_plans=4):
        self._network = network
        self._params = params
        self._dtype = params.dtype
        self._alpha = alpha
        self._weight_mask = weight_mask
        self._loss_code = _head.LOSS_CODES[network.loss]
        self._grad = empty_aligned(params.shape, params.dtype)
        self._layer_views, self._head = network._param_views(params)
        self._dlayer_views, self._dhead = network._param_views(self._grad)
        self._bias = [[empty_aligned(4 * n_units, params.dtype)
                       for _ in range(network.n_directions)]
                      for n_units in network.hidden_layer_sizes]
        self._forward_kernel = _cpu.specialised(_cpu.lstm_forward, params.dtype)
        self._backward_kernel = _cpu.specialised(_cpu.lstm_backward, params.dtype)
        self._head_loss_and_grad = _cpu.specialised(_head.head_loss_and_grad,
                                                    params.dtype)
        self._add_l2_penalty = _cpu.specialised(_head.add_l2_penalty, params.dtype)
        self._plans = {}  # n_seq -> _Plan
        self._max_plans = max_plans
        self.enabled = (ENABLED and network.output == "last"
                        and not network.proj_size
                        and params.dtype in (np.float32, np.float64)
                        and _cpu._blas_hold.limit is not None)
        #: How many minibatches ran here (tests read it).
        self.n_runs = 0

    def _plan(self, n_steps, n_seq):
        plan = self._plans.get(n_seq)
        if plan is None or plan.n_steps < n_steps:
            if plan is None and len(self._plans) >= self._max_plans:
                return None
            plan = self._plans[n_seq] = _Plan(self._network, n_steps, n_seq,
                                              self._dtype)
        return plan

    def run(self, X_batch, lengths, Y_batch, weight_batch):
        """``(loss, grad)`` of a minibatch, or None: compute it eagerly.

        ``X_batch`` (T, B, F) in ``params``' dtype, ``lengths`` (B,) sorted
        in descending order, ``Y_batch`` (B, n_outputs) and ``weight_batch``
        (B,), as the fit loop gathers them. ``grad`` is an array of this
        object's, overwritten by the next minibatch.
        """
        if (not self.enabled or Y_batch.ndim != 2 or X_batch.dtype != self._dtype
                or _cpu._blas_hold.limit is None):
            return None
        n_steps, n_seq, _ = X_batch.shape
        plan = self._plan(n_steps, n_seq)
        if plan is None:
            return None
        self.n_runs += 1
        network = self._network
        forward, backward = self._forward_kernel, self._backward_kernel
        chooser = _cpu._thread_chooser
        n_threads = (chooser.choose(plan.key, plan.n_parts) if plan.chosen
                     else plan.n_parts)
        start = time.perf_counter()
        D = network.n_directions
        n_layers = len(network.hidden_layer_sizes)

        # Forward, layer by layer (as LSTMNetwork.forward with training).
        layer_input = X_batch
        inputs = []  # each layer's input, for its backward
        for layer in range(n_layers):
            inputs.append(layer_input)
            for direction in range(D):
                views = self._layer_views[layer][direction]
                ld = plan.layers[layer][direction]
                bias = np.add(views["b_ih"], views["b_hh"],
                              out=self._bias[layer][direction])
                steps = ld.steps(n_steps)
                forward(layer_input, lengths, views["W_ih"], views["W_hh"], bias,
                        bool(direction), True, steps.gates, steps.cells,
                        steps.hidden, ld.h_n, ld.c_n, ld.step_gates, xh=ld.xh,
                        W_cat_t=ld.W_cat_t, n_parts=ld.n_parts,
                        n_threads=ld.threads(n_threads))
            if layer == n_layers - 1:
                break  # the head reads the top layer's h_n
            if D == 2:
                # both directions wrote their halves of it
                layer_input = plan.concat[layer][:n_steps]
            else:
                layer_input = plan.layers[layer][0].steps(n_steps).hidden

        # The head on the last hidden states, the loss, and back to them.
        head, dhead = self._head, self._dhead
        top = plan.layers[-1]
        if D == 2:
            head_input = np.concatenate([top[0].h_n, top[1].h_n], axis=1,
                                        out=plan.head_input)
        else:
            head_input = top[0].h_n
        loss = self._head_loss_and_grad(
            head_input, head["W_out"], head["b_out"], Y_batch, weight_batch,
            self._loss_code, plan.draw, dhead["W_out"], dhead["b_out"],
            plan.dhead_input)
        dhead_input = plan.dhead_input

        # Backward, layer by layer (as LSTMNetwork.backward).
        above = None  # the layer-directions of the layer above
        for layer in reversed(range(n_layers)):
            n_units = network.hidden_layer_sizes[layer]
            lds = plan.layers[layer]
            for direction in range(D):
                ld = lds[direction]
                views = self._layer_views[layer][direction]
                dviews = self._dlayer_views[layer][direction]
                steps = ld.steps(n_steps)
                dhidden = dhidden_add = dh_n = None
                columns = slice(direction * n_units, (direction + 1) * n_units)
                if above is None:
                    # The head read h_n only: its gradient enters as dh_n.
                    if D == 2:
                        dh_n = ld.dh_n
                        np.copyto(dh_n, dhead_input[:, columns])
                    else:
                        dh_n = dhead_input
                elif D == 2:
                    # This direction's columns of the gradient of the layer
                    # above's input: the sum of both directions' dX there.
                    dhidden = above[0].steps(n_steps).dX[:, :, columns]
                    dhidden_add = above[1].steps(n_steps).dX[:, :, columns]
                else:
                    dhidden = above[0].steps(n_steps).dX
                backward(inputs[layer], lengths, views["W_ih"], views["W_hh"],
                         bool(direction), steps.gates, steps.cells, steps.hidden,
                         dhidden, steps.dX, dviews["W_ih"], dviews["W_hh"],
                         dviews["b_ih"], steps.gates, ld.dgates_step, ld.dh_rec,
                         ld.dc_state, W_hh_packed=ld.W_hh_packed,
                         weight_grad_work=ld.weight_grad_work, n_parts=ld.n_parts,
                         n_threads=ld.threads(n_threads), dh_n=dh_n,
                         dhidden_add=dhidden_add)
                dviews["b_hh"][...] = dviews["b_ih"]
            above = lds

        if plan.chosen:
            chooser.record(plan.key, n_threads,
                           (time.perf_counter() - start) / n_steps)
        grad = self._grad
        if self._alpha > 0:
            loss += self._add_l2_penalty(self._params, self._weight_mask,
                                         self._alpha, n_seq, grad)
        return loss, grad
