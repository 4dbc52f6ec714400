"""The network: stacked (bidirectional) LSTM layers and a dense head.

Notation
--------
``T`` timesteps, ``B`` sequences of a minibatch, ``I`` input features of a
layer, ``H`` its hidden units, ``D`` the width of the layer's output (``H``,
or ``2H`` when bidirectional). Arrays are time-major, ``(T, B, ...)``.

Each layer-direction follows PyTorch's ``nn.LSTM``, gate order ``i, f, g, o``::

    gates_t = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh      (B, 4H)
    i = sigmoid(gates_t[:, 0H:1H])      input gate
    f = sigmoid(gates_t[:, 1H:2H])      forget gate
    g = tanh   (gates_t[:, 2H:3H])      cell candidate
    o = sigmoid(gates_t[:, 3H:4H])      output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

The input of layer ``l > 0`` is the output of layer ``l - 1`` (both
directions concatenated, forward first), after dropout when training. With
``output="last"`` the head reads the last valid hidden state of each
sequence: ``h`` at ``t = length - 1`` of the forward direction, concatenated
with ``h`` at ``t = 0`` of the reverse direction (PyTorch's ``h_n``)::

    raw = h_last @ W_out.T + b_out                               (B, n_outputs)

With ``output="sequence"`` it reads the top layer's output at every valid
timestep: ``raw[t] = output[t] @ W_out.T + b_out``, shape (T, B, n_outputs).

Parameters
----------
All parameters live in one flat buffer, in this order: for each layer, for
each direction (forward, then reverse), ``W_ih (4H, I)``, ``W_hh (4H, H)``,
``b_ih (4H,)``, ``b_hh (4H,)`` (with ``proj_size=P``: ``W_hh (4H, P)`` and
then ``W_hr (P, H)``, the projection ``h_t = (o * tanh(c_t)) @ W_hr.T``); then
the head ``W_out (n_outputs, D)`` and ``b_out (n_outputs,)``. Gradients use
the same layout, so the optimizer, gradient clipping, L2 and finite
differences each touch one array.

Devices
-------
Every array operation goes through ``backend.xp`` (NumPy, or CuPy for the
GPU backend), so with the GPU backend the flat buffer, the head, the loss and
its gradient stay on the device. ``lengths`` stays a host array (the backends
drive their loops from it); dropout masks are drawn on the host from the
same random state as on the CPU, then copied to the device.
"""

import math
from dataclasses import dataclass

import numpy as np

from ._losses import LOSSES


@dataclass(frozen=True)
class _Slot:
    """Where one named parameter array lives in the flat buffer."""

    name: str  # PyTorch state-dict key
    start: int
    stop: int  # stored, not derived: views are cut from it every minibatch
    shape: tuple
    is_weight: bool  # weights get L2 regularisation, biases do not


class LSTMNetwork:
    """Layout, initialisation, forward and backward of the whole model.

    Parameters
    ----------
    n_features : int
        Input features per timestep.
    hidden_layer_sizes : tuple of int
        Hidden units of each stacked LSTM layer.
    n_outputs : int
        Width of the head.
    bidirectional : bool
        Run each layer in both directions and concatenate.
    loss : {"squared_error", "softmax_log_loss", "logistic_log_loss"}
    output : {"last", "sequence"}
        Apply the head to the last valid hidden state of each sequence, or to
        the top layer's output at every timestep.
    proj_size : int
        If positive, every layer projects its hidden state to this many values,
        ``h_t = (o * tanh(c_t)) @ W_hr.T``, as PyTorch's ``proj_size``.
    """

    def __init__(self, n_features, hidden_layer_sizes, n_outputs,
                 bidirectional=False, loss="squared_error", output="last",
                 proj_size=0):
        self.n_features = n_features
        self.hidden_layer_sizes = tuple(hidden_layer_sizes)
        self.n_outputs = n_outputs
        self.n_directions = 2 if bidirectional else 1
        self.loss = loss
        self.output = output
        self.proj_size = proj_size
        self._layer_slots = []  # [layer][direction] -> dict name -> _Slot
        offset = 0

        def add(name, shape, is_weight):
            nonlocal offset
            size = math.prod(shape)  # np.prod: ~3 us a call, 6+ per predict
            slot = _Slot(name, offset, offset + size, tuple(shape), is_weight)
            offset = slot.stop
            return slot

        n_inputs = n_features
        for layer, n_units in enumerate(self.hidden_layer_sizes):
            n_out = proj_size or n_units  # width of h_t
            directions = []
            for direction in range(self.n_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                slots = {
                    "W_ih": add("weight_ih" + suffix, (4 * n_units, n_inputs), True),
                    "W_hh": add("weight_hh" + suffix, (4 * n_units, n_out), True),
                    "b_ih": add("bias_ih" + suffix, (4 * n_units,), False),
                    "b_hh": add("bias_hh" + suffix, (4 * n_units,), False),
                }
                if proj_size:
                    slots["W_hr"] = add("weight_hr" + suffix, (n_out, n_units), True)
                directions.append(slots)
            self._layer_slots.append(directions)
            n_inputs = self.n_directions * n_out
        self._head_slots = {
            "W_out": add("head.weight", (n_outputs, n_inputs), True),
            "b_out": add("head.bias", (n_outputs,), False),
        }
        self.n_params = offset
        # [(flat, layer views, head views)] of the last buffers read, the
        # most recent first (a fit reads its parameters and its gradient).
        self._param_views_of = []

    # ------------------------------------------------------------------ layout
    def _all_slots(self):
        for directions in self._layer_slots:
            for slots in directions:
                yield from slots.values()
        yield from self._head_slots.values()

    @staticmethod
    def _view(flat, slot):
        return flat[slot.start:slot.stop].reshape(slot.shape)

    def layer_views(self, flat, layer, direction):
        """``{"W_ih", "W_hh", "b_ih", "b_hh"[, "W_hr"]}`` views into ``flat``."""
        slots = self._layer_slots[layer][direction]
        return {key: self._view(flat, slot) for key, slot in slots.items()}

    def head_views(self, flat):
        """``{"W_out", "b_out"}`` views into ``flat``."""
        return {key: self._view(flat, slot) for key, slot in self._head_slots.items()}

    def _param_views(self, flat):
        """Views of the buffer ``flat`` (parameters or their gradient):
        ``[layer][direction]`` dicts as :meth:`layer_views` gives, and
        :meth:`head_views`.

        Made once per buffer: a fit reads the views of its parameter and
        gradient buffers every minibatch, and cutting them anew was ~6 % of
        the Python time of a W1 minibatch. The last two buffers are
        remembered, recognised by identity (and kept alive here, so their
        ids cannot be reused).
        """
        cached = self._param_views_of
        for entry in cached:
            if entry[0] is flat:
                break
        else:
            layers = [[self.layer_views(flat, layer, direction)
                       for direction in range(self.n_directions)]
                      for layer in range(len(self.hidden_layer_sizes))]
            entry = (flat, layers, self.head_views(flat))
            self._param_views_of = cached = [entry] + cached[:1]
        return entry[1], entry[2]

    def weight_mask(self):
        """Boolean mask of the flat buffer: True on weights, False on biases."""
        mask = np.zeros(self.n_params, dtype=bool)
        for slot in self._all_slots():
            mask[slot.start:slot.stop] = slot.is_weight
        return mask

    def to_state_dict(self, flat):
        """Copies of the parameters keyed like PyTorch's ``state_dict``."""
        return {slot.name: self._view(flat, slot).copy() for slot in self._all_slots()}

    def from_state_dict(self, state_dict, dtype):
        """Flat buffer from arrays keyed like PyTorch's ``state_dict``."""
        flat = np.empty(self.n_params, dtype=dtype)
        for slot in self._all_slots():
            value = np.asarray(state_dict[slot.name], dtype=dtype)
            if value.shape != slot.shape:
                raise ValueError(
                    f"{slot.name} has shape {value.shape}; expected {slot.shape}."
                )
            self._view(flat, slot)[...] = value
        return flat

    # ---------------------------------------------------------- initialisation
    def init_params(self, random_state, dtype, out_activation="identity"):
        """Draw initial parameters.

        LSTM weights and biases follow PyTorch: uniform in ``±1/sqrt(H)``.
        The forget-gate block of ``b_ih`` is then raised by 1, as Keras'
        ``unit_forget_bias`` does, so that at initialisation the cell keeps
        most of its state and gradients reach far back in time (Gers et al.,
        2000; Jozefowicz et al., 2015). The head uses Glorot's uniform
        initialisation, as scikit-learn's MLP does for its layers.

        Values are drawn in float64 and then cast, so float32 and float64
        models with the same ``random_state`` start from the same point.
        """
        flat = np.empty(self.n_params, dtype=np.float64)
        for layer, n_units in enumerate(self.hidden_layer_sizes):
            bound = 1.0 / np.sqrt(n_units)
            for direction in range(self.n_directions):
                for slot in self._layer_slots[layer][direction].values():
                    flat[slot.start:slot.stop] = random_state.uniform(
                        -bound, bound, slot.stop - slot.start
                    )
                b_ih = self.layer_views(flat, layer, direction)["b_ih"]
                b_ih[n_units:2 * n_units] += 1.0
        fan_out, fan_in = self._head_slots["W_out"].shape
        factor = 2.0 if out_activation == "logistic" else 6.0
        bound = np.sqrt(factor / (fan_in + fan_out))
        for slot in self._head_slots.values():
            flat[slot.start:slot.stop] = random_state.uniform(
                -bound, bound, slot.stop - slot.start
            )
        return flat.astype(dtype)

    # ------------------------------------------------------------- forward
    def forward(self, backend, flat, X, lengths, *, training=False, dropout=0.0,
                random_state=None):
        """Raw head output for a time-major minibatch.

        Parameters
        ----------
        backend : LSTMBackend
        flat : ndarray of shape (n_params,)
        X : ndarray of shape (T, B, n_features)
            Time-major, lengths sorted in descending order.
        lengths : ndarray of shape (B,), dtype intp
        training : bool
            Keep what :meth:`backward` needs and apply dropout.
        dropout : float
            Probability of zeroing each output of a layer but the last.
        random_state : RandomState
            Draws the dropout masks.

        Returns
        -------
        raw : ndarray of shape (B, n_outputs), or (T, B, n_outputs) with
            ``output="sequence"`` (values on padding are meaningless)
        cache : list or None
            For :meth:`backward` when training.
        """
        head_input, cache = self._forward_layers(
            backend, flat, X, lengths, training=training, dropout=dropout,
            random_state=random_state)
        head = self._param_views(flat)[1]
        raw = backend.matmul(head_input, head["W_out"].T) + head["b_out"]
        return raw, cache

    def _forward_layers(self, backend, flat, X, lengths, *, training, dropout,
                        random_state):
        """The LSTM layers of :meth:`forward`: the head's input, ``(B, D)``
        or ``(T, B, D)``, and the cache (None unless training)."""
        xp = backend.xp
        layer_views = self._param_views(flat)[0]
        layer_input = X
        layer_caches = []
        n_layers = len(self.hidden_layer_sizes)
        for layer in range(n_layers):
            outputs, last_states, direction_caches = [], [], []
            output_read = layer < n_layers - 1 or self.output == "sequence"
            # Two directions write their halves of the layer's output, so
            # no concatenation follows (W4's predict: 4-7 % faster at the
            # median, 9-15 % at the fastest call, without the copy, its
            # fresh pages, and the other thread idle meanwhile).
            joined = None
            halves = [None] * self.n_directions
            if self.n_directions == 2 and output_read:
                width = self.proj_size or self.hidden_layer_sizes[layer]
                joined = xp.empty(layer_input.shape[:2] + (2 * width,),
                                  dtype=layer_input.dtype)
                halves = [joined[:, :, :width], joined[:, :, width:]]
            for direction in range(self.n_directions):
                views = layer_views[layer][direction]
                hidden, h_n, _, cache = backend.forward(
                    layer_input, lengths, views["W_ih"], views["W_hh"],
                    views["b_ih"] + views["b_hh"], reverse=bool(direction),
                    training=training, **_projection(views),
                    # With output="last" the head reads only the top h_n.
                    return_sequences=training or output_read,
                    hidden_out=halves[direction],
                )
                outputs.append(hidden)
                last_states.append(h_n)
                direction_caches.append(cache)
            mask = None
            layer_output = None
            if output_read:
                layer_output = joined if joined is not None else outputs[0]
            if layer < n_layers - 1:
                if training and dropout > 0:
                    keep = random_state.random_sample(layer_output.shape) >= dropout
                    mask = xp.asarray(keep.astype(layer_output.dtype)
                                      / (1.0 - dropout))
                    layer_output = layer_output * mask
                layer_input = layer_output
            layer_caches.append((direction_caches, mask))

        if self.output == "sequence":
            head_input = layer_output  # (T, B, D)
        else:
            head_input = xp.concatenate(last_states, axis=1) \
                if self.n_directions == 2 else last_states[0]  # (B, D)
        cache = (layer_caches, head_input, lengths, X.shape[0]) if training else None
        return head_input, cache

    # ------------------------------------------------------------ backward
    def backward(self, backend, flat, draw, cache, *, return_input_grad=False,
                 out=None):
        """Gradient of the loss with respect to every parameter.

        Parameters
        ----------
        draw : ndarray of shape (B, n_outputs) or (T, B, n_outputs)
            Gradient of the loss with respect to the raw head output (zero
            on padding with ``output="sequence"``).
        cache : what :meth:`forward` returned with ``training=True``.
        return_input_grad : bool
            Also return the gradient with respect to ``X`` (tests use it).
        out : ndarray of shape (n_params,), optional
            Where to write the gradient (a training loop passes the same
            buffer every minibatch); a new array when None.

        Returns
        -------
        grad : ndarray of shape (n_params,)
        dX : ndarray of shape (T, B, n_features), only if ``return_input_grad``
        """
        xp = backend.xp
        head_input = cache[1]
        # Every slot of the buffer is written below, so it starts empty.
        grad = xp.empty(self.n_params, dtype=flat.dtype) if out is None else out
        head = self._param_views(flat)[1]
        dhead = self._param_views(grad)[1]
        dhead_input = backend.head_backward(  # (B, D) or (T, B, D)
            draw, head_input, head["W_out"], dhead["W_out"], dhead["b_out"])
        dX = self._backward_layers(backend, grad, dhead_input, cache,
                                   return_input_grad=return_input_grad)
        if return_input_grad:
            return grad, dX
        return grad

    def _backward_layers(self, backend, grad, dhead_input, cache, *,
                         return_input_grad):
        """The LSTM layers of :meth:`backward`, from the gradient of the
        head's input: their gradients written into ``grad``; the gradient of
        ``X`` when ``return_input_grad``, else None."""
        xp = backend.xp
        layer_caches, _, lengths, n_steps = cache
        dlayers = self._param_views(grad)[0]
        n_layers = len(self.hidden_layer_sizes)
        dlayer_output = None  # gradient w.r.t. the output of the layer above
        for layer in reversed(range(n_layers)):
            direction_caches, _ = layer_caches[layer]
            n_units = self.proj_size or self.hidden_layer_sizes[layer]  # h width
            dinput = None
            for direction in range(self.n_directions):
                columns = slice(direction * n_units, (direction + 1) * n_units)
                if layer == n_layers - 1 and self.output == "last":
                    dhidden = xp.zeros((n_steps, len(lengths), n_units),
                                       dtype=grad.dtype)
                    dhidden[head_read_index(direction, lengths, n_steps, xp)] = \
                        dhead_input[:, columns]
                elif layer == n_layers - 1:
                    dhidden = xp.ascontiguousarray(dhead_input[:, :, columns])
                else:
                    dhidden = xp.ascontiguousarray(dlayer_output[:, :, columns])
                dX, dW_ih, dW_hh, dbias, *dW_hr = backend.backward(
                    dhidden, direction_caches[direction],
                    # The data's gradient is wanted by tests only.
                    input_grad=layer > 0 or return_input_grad,
                )
                dviews = dlayers[layer][direction]
                if dW_hr:
                    dviews["W_hr"][...] = dW_hr[0]
                dviews["W_ih"][...] = dW_ih
                dviews["W_hh"][...] = dW_hh
                dviews["b_ih"][...] = dbias
                dviews["b_hh"][...] = dbias
                if dX is not None:
                    dinput = dX if dinput is None else dinput + dX
            if layer > 0:
                mask = layer_caches[layer - 1][1]
                dlayer_output = dinput if mask is None else dinput * mask
        return dinput if return_input_grad else None

    # ---------------------------------------------------------------- loss
    def loss_and_grad(self, backend, flat, X, lengths, Y, sample_weight, *,
                      alpha=0.0, dropout=0.0, random_state=None,
                      weight_mask=None, grad_out=None):
        """Loss of a time-major minibatch and its gradient.

        Parameters
        ----------
        Y : ndarray of shape (B, n_outputs), or (T, B, n_outputs) with
            ``output="sequence"`` (values on padding are ignored)
        sample_weight : ndarray of shape (B,), or (T, B) with
            ``output="sequence"``: the weight of each sequence or timestep.
        weight_mask : ndarray of shape (n_params,), optional
            1 (True) on weights, 0 (False) on biases, as :meth:`weight_mask`
            returns; 0/1 in ``flat``'s dtype is the fastest. Made when None.
        grad_out : ndarray of shape (n_params,), optional
            Where to write the gradient (see :meth:`backward`).

        With ``output="sequence"`` the loss is the weighted mean over the
        valid timesteps of all sequences. The L2 penalty is
        ``0.5 * alpha * ||weights||^2 / B``, as in scikit-learn's MLP (biases
        are not penalised).

        Returns
        -------
        loss : float, or a 0-d device array with a GPU backend (reading it
            would wait for the device)
        grad : ndarray of shape (n_params,)
        """
        xp = backend.xp
        if self.output == "last":
            # The head, the loss and their gradients in one backend call
            # (one compiled call on the CPU), then back through the layers.
            head_input, cache = self._forward_layers(
                backend, flat, X, lengths, training=True, dropout=dropout,
                random_state=random_state)
            grad = (xp.empty(self.n_params, dtype=flat.dtype) if grad_out is None
                    else grad_out)
            head = self._param_views(flat)[1]
            dhead = self._param_views(grad)[1]
            loss, dhead_input = backend.head_loss_and_grad(
                head_input, head["W_out"], head["b_out"], Y, sample_weight,
                self.loss, dhead["W_out"], dhead["b_out"])
            self._backward_layers(backend, grad, dhead_input, cache,
                                  return_input_grad=False)
        else:
            raw, cache = self.forward(
                backend, flat, X, lengths, training=True, dropout=dropout,
                random_state=random_state,
            )
            valid = xp.asarray(np.arange(X.shape[0])[:, np.newaxis] < lengths)
            loss, draw_valid = LOSSES[self.loss](Y[valid], raw[valid],
                                                 sample_weight[valid])
            draw = xp.zeros_like(raw)
            draw[valid] = draw_valid
            grad = self.backward(backend, flat, draw.astype(flat.dtype, copy=False),
                                 cache, out=grad_out)
        if alpha > 0:
            if weight_mask is None:
                weight_mask = xp.asarray(self.weight_mask())
            loss += backend.add_l2_penalty(flat, weight_mask, alpha, X.shape[1],
                                           grad)
        return loss, grad


def head_read_index(direction, lengths, n_steps, xp=np):
    """Where in a top layer's ``hidden`` (T, B, H) the head of
    ``output="last"`` reads each sequence's h: t = length - 1 forward,
    t = 0 reverse (``direction`` 1).

    Equal lengths need no index arrays (nor a copy of them to a device,
    which a CUDA graph forbids): the index is then one time.
    """
    if direction or all_full_length(lengths, n_steps):
        return 0 if direction else n_steps - 1
    return xp.asarray(lengths - 1), xp.arange(len(lengths))


def all_full_length(lengths, n_steps):
    """Whether every sequence of a minibatch (host ``lengths``, sorted in
    descending order as the kernels take them) has ``n_steps``."""
    return isinstance(lengths, np.ndarray) and int(lengths[-1]) == n_steps


def _projection(views):
    """Keyword for ``backend.forward``: the projection, if the layer has one."""
    return {"W_hr": views["W_hr"]} if "W_hr" in views else {}
