"""BaseLSTM: what LSTMRegressor and LSTMClassifier share.

Parameters, their validation, the minibatch training loop and batched
prediction live here; the subclasses only turn targets into the network's
outputs and back.
"""

import time
import warnings
from abc import ABC, abstractmethod
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils.validation import check_is_fitted

from ._backends import get_backend
from ._compat import Interval, StrOptions, _check_sample_weight
from ._network import LSTMNetwork
from ._optimizers import SGD, Adam, clip_by_global_norm
from ._validation import check_sequences
from ._version import __version__

# Inference keeps the input projection of a whole batch, (T, B, 4H) values
# per layer-direction: batches are sized to keep it near this many bytes.
_PREDICT_BUFFER_BYTES = 32 * 2**20
_PREDICT_MAX_BATCH = 1024


def time_major_batch(X, lengths, indices):
    """Gather sequences ``indices`` into a time-major minibatch.

    The sequences are ordered by decreasing length (stable, so ties keep their
    order), as the kernels require, and the batch is cut to its longest one.

    Returns
    -------
    X_batch : ndarray of shape (T, B, n_features), C-contiguous
    batch_lengths : ndarray of shape (B,)
    order : ndarray of shape (B,)
        The sample index of each column of ``X_batch``.
    """
    order = indices[np.argsort(-lengths[indices], kind="stable")]
    batch_lengths = lengths[order]
    n_steps = int(batch_lengths[0])
    X_batch = np.ascontiguousarray(X[order, :n_steps].transpose(1, 0, 2))
    return X_batch, batch_lengths, order


class BaseLSTM(BaseEstimator, ABC):
    """Shared parameters, training loop and prediction of the LSTM estimators.

    Warning: This class should not be used directly. Use the subclasses.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like", Interval(Integral, 1, None, closed="left")
        ],
        "bidirectional": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "solver": [StrOptions({"adam", "sgd"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")
        ],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "clip_norm": [Interval(Real, 0, None, closed="neither"), None],
    }

    @abstractmethod
    def __init__(
        self,
        hidden_layer_sizes=(32,),
        *,
        bidirectional=False,
        dropout=0.0,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        clip_norm=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.clip_norm = clip_norm

    # ----------------------------------------------------------- subclass API
    @abstractmethod
    def _encode_targets(self, y, dtype, reset):
        """Validate ``y``; return ``(Y, loss, out_activation)``.

        ``Y`` has shape (n_samples, n_outputs) and the compute dtype. With
        ``reset`` the subclass records what it needs to decode predictions.
        """

    # -------------------------------------------------------------- helpers
    def _layer_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if np.ndim(sizes) == 0 else tuple(sizes)
        if len(sizes) == 0 or any(
            not isinstance(size, Integral) or size < 1 for size in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive int or a non-empty "
                f"sequence of positive ints, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(size) for size in sizes)

    def _network(self):
        return LSTMNetwork(**self._network_spec)

    def _make_optimizer(self, n_params, dtype):
        if self.solver == "sgd":
            return SGD(n_params, dtype, self.learning_rate_init, self.momentum,
                       self.nesterovs_momentum)
        return Adam(n_params, dtype, self.learning_rate_init, self.beta_1,
                    self.beta_2, self.epsilon)

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is "
                "going to be clipped"
            )
        return min(self.batch_size, n_samples)

    # ------------------------------------------------------------------ fit
    def _fit(self, X, y, sample_weight=None):
        """Train from scratch; the estimator changes only if training succeeds."""
        layer_sizes = self._layer_sizes()
        X, lengths = check_sequences(self, X, reset=True)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target "
                "y is None."
            )
        dtype = X.dtype
        Y, loss_name, out_activation = self._encode_targets(y, dtype, reset=True)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"X has {X.shape[0]} sequences but y has {Y.shape[0]} rows."
            )
        sample_weight = _check_sample_weight(
            sample_weight, X[:, 0, 0], dtype=dtype, ensure_non_negative=True
        )
        if sample_weight.sum() <= 0:
            raise ValueError("sample_weight must have a positive sum.")

        network_spec = dict(
            n_features=X.shape[2], hidden_layer_sizes=layer_sizes,
            n_outputs=Y.shape[1], bidirectional=bool(self.bidirectional),
            loss=loss_name,
        )
        network = LSTMNetwork(**network_spec)
        rng = check_random_state(self.random_state)
        params = network.init_params(rng, dtype, out_activation)
        optimizer = self._make_optimizer(network.n_params, dtype)
        backend = get_backend("cpu")
        weight_mask = network.weight_mask()

        n_samples = X.shape[0]
        batch_size = self._batch_size(n_samples)
        loss_curve, best_loss, no_improvement = [], np.inf, 0
        converged = False
        # Divergence is detected and reported below; numpy need not warn first.
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(self.max_iter):
                start = time.perf_counter()
                order = (rng.permutation(n_samples) if self.shuffle
                         else np.arange(n_samples))
                epoch_loss = 0.0
                for batch in gen_batches(n_samples, batch_size):
                    X_batch, batch_lengths, rows = time_major_batch(
                        X, lengths, order[batch]
                    )
                    loss, grad = network.loss_and_grad(
                        backend, params, X_batch, batch_lengths, Y[rows],
                        sample_weight[rows], alpha=self.alpha, dropout=self.dropout,
                        random_state=rng, weight_mask=weight_mask,
                    )
                    if not np.isfinite(loss):
                        self._raise_diverged(epoch)
                    clip_by_global_norm(grad, self.clip_norm)
                    optimizer.update(params, grad)
                    epoch_loss += loss * len(rows)
                if not np.isfinite(params).all():
                    self._raise_diverged(epoch)
                epoch_loss /= n_samples
                loss_curve.append(epoch_loss)
                if self.verbose:
                    print(
                        f"Iteration {epoch + 1}, loss = {epoch_loss:.8f}, "
                        f"time = {time.perf_counter() - start:.2f}s"
                    )
                # scikit-learn MLP's plateau rule on the training loss.
                if epoch_loss > best_loss - self.tol:
                    no_improvement += 1
                else:
                    no_improvement = 0
                best_loss = min(best_loss, epoch_loss)
                if no_improvement > self.n_iter_no_change:
                    converged = True
                    if self.verbose:
                        print(
                            f"Training loss did not improve more than tol={self.tol} "
                            f"for {self.n_iter_no_change} consecutive epochs. Stopping."
                        )
                    break

        # Success: only now does the estimator change.
        self._network_spec = network_spec
        self._params = params
        self._optimizer_state = optimizer.state()
        self._sklstm_version = __version__
        self.out_activation_ = out_activation
        self.n_outputs_ = Y.shape[1]
        self.loss_curve_ = loss_curve
        self.loss_ = loss_curve[-1]
        self.best_loss_ = best_loss
        self.n_iter_ = len(loss_curve)
        self.t_ = n_samples * self.n_iter_
        if not converged:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )
        return self

    def _raise_diverged(self, epoch):
        raise ValueError(
            f"Training diverged: the loss became non-finite in epoch {epoch + 1}. "
            f"Lower learning_rate_init (now {self.learning_rate_init}), set "
            f"clip_norm (now {self.clip_norm}, e.g. clip_norm=1.0), or scale X "
            "and y. The estimator was left as it was before this fit."
        )

    # -------------------------------------------------------------- predict
    def _raw_output(self, X):
        """Raw head output for every sequence of ``X``, in input order."""
        check_is_fitted(self, "_params")
        X, lengths = check_sequences(self, X, reset=False)
        if X.dtype != self._params.dtype:
            X = X.astype(self._params.dtype)
        network = self._network()
        backend = get_backend("cpu")
        n_samples, n_steps = X.shape[:2]
        widest = max(network.hidden_layer_sizes + (network.n_features,))
        per_sequence = n_steps * 4 * widest * X.itemsize
        batch_size = int(np.clip(_PREDICT_BUFFER_BYTES // per_sequence, 1,
                                 _PREDICT_MAX_BATCH))
        raw = np.empty((n_samples, network.n_outputs), dtype=X.dtype)
        # Sequences of similar length share a batch, so little is padding.
        by_length = np.argsort(-lengths, kind="stable")
        for batch in gen_batches(n_samples, batch_size):
            X_batch, batch_lengths, rows = time_major_batch(
                X, lengths, by_length[batch]
            )
            raw[rows], _ = network.forward(
                backend, self._params, X_batch, batch_lengths
            )
        return raw

    # --------------------------------------------------------- weights out
    def to_torch_state_dict(self):
        """The fitted weights, keyed like PyTorch's ``state_dict``.

        Returns
        -------
        state_dict : dict of str to ndarray
            ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}`` and
            ``bias_hh_l{k}`` for layer ``k`` (and the same with ``_reverse``
            when bidirectional), shaped and keyed as in ``torch.nn.LSTM``,
            plus ``head.weight`` and ``head.bias`` of an ``nn.Linear`` head
            reading the last valid hidden state. When every layer has the same
            size, the LSTM keys load into one ``nn.LSTM(n_features, H,
            num_layers, batch_first=True, bidirectional=...)``. The arrays are
            copies.

        Examples
        --------
        >>> import numpy as np
        >>> from sklstm import LSTMRegressor
        >>> X = np.random.RandomState(0).randn(20, 5, 2)
        >>> model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2,
        ...                       random_state=0).fit(X, X[:, -1, 0])
        >>> state_dict = model.to_torch_state_dict()
        >>> sorted(state_dict)[:4]
        ['bias_hh_l0', 'bias_ih_l0', 'head.bias', 'head.weight']
        >>> state_dict["weight_ih_l0"].shape  # (4 * H, n_features)
        (16, 2)
        """
        check_is_fitted(self, "_params")
        return self._network().to_state_dict(self._params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = False
        return tags
