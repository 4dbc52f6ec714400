"""BaseLSTM: what LSTMRegressor and LSTMClassifier share.

Parameters, their validation, the minibatch training loop and batched
prediction live here; the subclasses only turn targets into the network's
outputs and back.
"""

import math
import sys
import time
import warnings
from abc import ABC, abstractmethod
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._aligned import empty_aligned
from ._backends import cuda_status, get_backend, to_numpy
from ._compat import Interval, StrOptions, _check_sample_weight
from ._kernels._gather import gather_time_major
from ._network import LSTMNetwork
from ._optimizers import SGD, Adam, clip_by_global_norm
from ._validation import check_sequences, flatten_sequence_targets
from ._version import __version__

# Inference keeps the input projection of a whole batch, (T, B, 4H) values
# per layer-direction: batches are sized to keep it near this many bytes.
_PREDICT_BUFFER_BYTES = 32 * 2**20
_PREDICT_MAX_BATCH = 1024
# On a GPU each timestep costs a few kernel launches whatever the batch, so
# predict takes larger batches there (device memory, not a CPU cache, is the
# limit).
_GPU_PREDICT_BUFFER_BYTES = 1024 * 2**20
_GPU_PREDICT_MAX_BATCH = 4096


def time_major_batch(X, lengths, indices, equal_lengths=False):
    """Gather sequences ``indices`` into a time-major minibatch.

    The sequences are ordered by decreasing length (stable, so ties keep their
    order), as the kernels require, and the batch is cut to its longest one.
    ``equal_lengths=True`` says all of ``lengths`` are equal: ``indices`` are
    then in order already (the sort was ~3 us of a minibatch), and may be a
    slice of consecutive rows (a ``predict`` batch).

    Returns
    -------
    X_batch : ndarray of shape (T, B, n_features), C-contiguous
    batch_lengths : ndarray of shape (B,)
    order : ndarray of shape (B,)
        The sample index of each column of ``X_batch``.
    """
    if isinstance(indices, slice):
        if not equal_lengths:
            raise ValueError("a slice of rows needs equal_lengths=True")
        rows, order = indices, np.arange(indices.start, indices.stop)
    else:
        order = (indices if equal_lengths
                 else indices[np.argsort(-lengths[indices], kind="stable")])
        rows = order
    batch_lengths = lengths[rows]
    n_steps = int(batch_lengths[0])
    if X.dtype in (np.float32, np.float64) and X.flags.c_contiguous:
        # One pass, compiled (see _kernels/_gather.pyx), where NumPy makes
        # two copies: the gather, then the time-major one.
        X_batch = empty_aligned((n_steps, len(order), X.shape[2]), X.dtype)
        gather_time_major(X, np.asarray(order, dtype=np.intp), X_batch)
    else:
        X_batch = np.ascontiguousarray(X[rows, :n_steps].transpose(1, 0, 2))
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
        "output": [StrOptions({"last", "sequence"})],
        "proj_size": [Interval(Integral, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "solver": [StrOptions({"adam", "sgd"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "clip_norm": [Interval(Real, 0, None, closed="neither"), None],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "allow_tf32": ["boolean"],
    }

    @abstractmethod
    def __init__(
        self,
        hidden_layer_sizes=(32,),
        *,
        bidirectional=False,
        output="last",
        proj_size=0,
        dropout=0.0,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        clip_norm=None,
        device="cpu",
        allow_tf32=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.bidirectional = bidirectional
        self.output = output
        self.proj_size = proj_size
        self.dropout = dropout
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.clip_norm = clip_norm
        self.device = device
        self.allow_tf32 = allow_tf32

    # ----------------------------------------------------------- subclass API
    @abstractmethod
    def _encode_targets(self, y, dtype, reset, classes=None):
        """Validate ``y``; return ``(Y, loss, out_activation, target_weight)``.

        ``Y`` has shape (n_samples, n_outputs) and the compute dtype;
        ``target_weight`` is a per-sample weight derived from ``y`` (class
        weights) or None. With ``reset`` the subclass records what it needs to
        decode predictions; without, it checks ``y`` against that.
        """

    @abstractmethod
    def _decode(self, raw):
        """Predictions from raw outputs (along the last axis)."""

    @abstractmethod
    def _score_raw(self, raw, Y):
        """The estimator's ``score`` from raw outputs and encoded targets."""

    def _stratify(self, Y):
        """Labels to stratify the validation split by, or None."""
        return None

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
        if self.proj_size and self.proj_size >= min(sizes):
            raise ValueError(
                f"proj_size={self.proj_size} must be smaller than every hidden "
                f"layer size, got hidden_layer_sizes={sizes}."
            )
        return tuple(int(size) for size in sizes)

    def _network(self):
        return LSTMNetwork(**self._network_spec)

    def _make_optimizer(self, n_params, dtype, backend):
        """The solver, its buffers in the backend's array module."""
        if self.solver == "sgd":
            return SGD(n_params, dtype, self.learning_rate_init, self.momentum,
                       self.nesterovs_momentum, xp=backend.xp)
        # Adam's update is one pass over the buffer: a CUDA kernel on the
        # GPU, a Cython loop on the CPU.
        return Adam(n_params, dtype, self.learning_rate_init, self.beta_1,
                    self.beta_2, self.epsilon, xp=backend.xp,
                    fused_update=getattr(backend, "adam_update", None))

    def _fit_backend(self):
        """The backend ``fit`` trains on; raises for 'cuda' without a GPU."""
        return get_backend(self.device, allow_tf32=self.allow_tf32)

    def _predict_backend(self):
        """The backend of ``predict``: the GPU when ``device`` asks for one
        and one is usable, else the CPU, silently. A model fitted on a GPU
        thereby predicts on a machine without one (its weights are NumPy)."""
        if self.device != "cpu" and cuda_status()[0] is not None:
            return get_backend("cuda", allow_tf32=self.allow_tf32)
        return get_backend("cpu")

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
    def _fit(self, X, y, sample_weight=None, *, incremental=False, classes=None):
        """Train; if anything fails, the estimator is left exactly as it was.

        Parameters
        ----------
        incremental : bool
            One epoch over ``X`` continuing the current model (``partial_fit``).
        classes : array-like or None
            All classes, for the first ``partial_fit`` of a classifier.
        """
        previous_state = self.__dict__.copy()
        try:
            # First, so that device="cuda" without a GPU fails before any work.
            backend = self._fit_backend()
            # Divergence is detected and reported; numpy need not warn first.
            # The CPU backend holds BLAS at one thread until the fit ends.
            with np.errstate(over="ignore", invalid="ignore"), backend.session():
                self._fit_epochs(backend, X, y, sample_weight, incremental, classes)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _check_continuable(self, network, layer_sizes, n_outputs, how):
        """A warm start must not change the shape of the model."""
        if (layer_sizes, bool(self.bidirectional), self.output,
                self.proj_size) != (network.hidden_layer_sizes,
                                    network.n_directions == 2, network.output,
                                    network.proj_size):
            raise ValueError(
                f"{how} continues the fitted model, whose architecture is "
                f"hidden_layer_sizes={network.hidden_layer_sizes}, bidirectional="
                f"{network.n_directions == 2}, output={network.output!r}, "
                f"proj_size={network.proj_size}; got hidden_layer_sizes="
                f"{layer_sizes}, bidirectional={self.bidirectional}, output="
                f"{self.output!r}, proj_size={self.proj_size}. Fit a new "
                "model (warm_start=False) to change the architecture."
            )
        if n_outputs != network.n_outputs:
            raise ValueError(
                f"y has {n_outputs} output(s) per sample but the fitted model "
                f"has {network.n_outputs}; {how} needs targets of the same shape."
            )

    def _fit_epochs(self, backend, X, y, sample_weight, incremental, classes):
        how = "partial_fit" if incremental else "fit with warm_start=True"
        continuing = (incremental or self.warm_start) and hasattr(self, "_params")
        xp = backend.xp
        layer_sizes = self._layer_sizes()
        if self.dropout > 0 and len(layer_sizes) == 1:
            warnings.warn(
                f"dropout={self.dropout} has no effect with one LSTM layer: it "
                "acts on the outputs of every layer but the last.", UserWarning
            )
        X, lengths = check_sequences(self, X, reset=not continuing)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target "
                "y is None."
            )
        dtype = self._params.dtype if continuing else X.dtype
        X = X.astype(dtype, copy=False)
        sequence = self.output == "sequence"
        if sequence:
            y, valid = flatten_sequence_targets(y, lengths, X.shape[1])
        Y, loss_name, out_activation, target_weight = self._encode_targets(
            y, dtype, reset=not continuing, classes=classes
        )
        if not sequence and Y.shape[0] != X.shape[0]:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"X has {X.shape[0]} sequences but y has {Y.shape[0]} rows."
            )
        sample_weight = _check_sample_weight(
            sample_weight, X[:, 0, 0], dtype=dtype, ensure_non_negative=True
        )
        if sequence:
            # Targets and weights per timestep, (n_samples, n_timesteps, ...).
            Y_valid = Y
            Y = np.zeros(valid.shape + Y_valid.shape[1:], dtype=dtype)
            Y[valid] = Y_valid
            sample_weight = np.repeat(sample_weight[:, np.newaxis],
                                      X.shape[1], axis=1)
            if target_weight is not None:
                sample_weight[valid] *= target_weight.astype(dtype)
            sample_weight[~valid] = 0
        elif target_weight is not None:
            sample_weight = sample_weight * target_weight.astype(dtype)
        if sample_weight.sum() <= 0:
            raise ValueError("sample_weight must have a positive sum.")

        if continuing:
            network = self._network()
            self._check_continuable(network, layer_sizes, Y.shape[-1], how)
            params = xp.array(self._params)  # a copy, on the backend's device
            rng = np.random.RandomState()
            rng.set_state(self._rng_state)
            optimizer = self._make_optimizer(network.n_params, dtype, backend)
            # Moments carry over unless the solver changed since. partial_fit
            # keeps the scheduled step size; a warm-start fit restarts it at
            # learning_rate_init, as scikit-learn's MLP does.
            if self._optimizer_state.keys() == optimizer.state().keys():
                optimizer.load_state(self._optimizer_state)
            if incremental:
                optimizer.learning_rate = self._effective_learning_rate
            history = dict(
                loss_curve=list(self.loss_curve_),
                best_loss=_or(self.best_loss_, np.inf),
                validation_scores=list(self.validation_scores_ or []),
                best_validation_score=_or(self.best_validation_score_, -np.inf),
                no_improvement=self._no_improvement_count, t=self.t_,
            )
        else:
            network_spec = dict(
                n_features=X.shape[2], hidden_layer_sizes=layer_sizes,
                n_outputs=Y.shape[-1], bidirectional=bool(self.bidirectional),
                loss=loss_name, output=self.output, proj_size=self.proj_size,
            )
            network = LSTMNetwork(**network_spec)
            rng = check_random_state(self.random_state)
            # Drawn on the host from the same random state on every device,
            # then moved: a GPU fit starts from the CPU fit's weights.
            params = xp.asarray(network.init_params(rng, dtype, out_activation))
            optimizer = self._make_optimizer(network.n_params, dtype, backend)
            history = dict(loss_curve=[], best_loss=np.inf, validation_scores=[],
                           best_validation_score=-np.inf, no_improvement=0, t=0)

        # MLP's rule: partial_fit sees every sample; it never holds some out.
        early_stopping = self.early_stopping and not incremental
        train = np.arange(X.shape[0])
        validation = None
        if early_stopping:
            train, validation = train_test_split(
                train, random_state=rng, test_size=self.validation_fraction,
                stratify=None if sequence else self._stratify(Y),
            )
            if len(validation) < 2:
                raise ValueError(
                    "The validation set is too small. Increase "
                    "'validation_fraction' or the size of your dataset."
                )
        best_params = params.copy()

        weight_mask = network.weight_mask()
        batch_size = self._batch_size(len(train))
        steps = self._minibatch_steps(network, backend, params, weight_mask)
        converged = False
        for _ in range(1 if incremental else self.max_iter):
            start = time.perf_counter()
            epoch_loss = self._train_one_epoch(
                network, backend, params, optimizer, X, lengths, Y, sample_weight,
                train, batch_size, rng, weight_mask, epoch=len(history["loss_curve"]),
                steps=steps,
            )
            history["t"] += len(train)
            history["loss_curve"].append(epoch_loss)
            message = f"Iteration {len(history['loss_curve'])}, loss = {epoch_loss:.8f}"
            if early_stopping:
                raw = _raw_output_of(network, backend, params, X[validation],
                                     lengths[validation])
                if sequence:
                    score = self._score_raw(raw[valid[validation]],
                                            Y[validation][valid[validation]])
                else:
                    score = self._score_raw(raw, Y[validation])
                history["validation_scores"].append(score)
                message += f", validation score = {score:.6f}"
                improved = score >= history["best_validation_score"] + self.tol
                if score > history["best_validation_score"]:
                    history["best_validation_score"] = score
                    best_params = params.copy()
            else:
                improved = epoch_loss <= history["best_loss"] - self.tol
                history["best_loss"] = min(history["best_loss"], epoch_loss)
            history["no_improvement"] = 0 if improved else history["no_improvement"] + 1
            if self.verbose:
                print(f"{message}, time = {time.perf_counter() - start:.2f}s")

            if self.solver == "sgd" and self.learning_rate == "invscaling":
                optimizer.learning_rate = (
                    self.learning_rate_init / (history["t"] + 1) ** self.power_t
                )
            if history["no_improvement"] > self.n_iter_no_change:
                what = "Validation score" if early_stopping else "Training loss"
                reason = (f"{what} did not improve more than tol={self.tol} for "
                          f"{self.n_iter_no_change} consecutive epochs.")
                adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
                if adaptive and optimizer.learning_rate > 1e-6:
                    optimizer.learning_rate /= 5.0
                    history["no_improvement"] = 0
                    if self.verbose:
                        print(f"{reason} Setting learning rate to "
                              f"{optimizer.learning_rate:f}")
                else:
                    converged = True
                    if self.verbose:
                        print(f"{reason} Stopping.")
                    break

        if early_stopping:
            params = best_params
        # Success: only now does the estimator change.
        if not continuing:
            self._network_spec = network_spec
            self.out_activation_ = out_activation
            self.n_outputs_ = Y.shape[-1]
            self.n_params_ = network.n_params
        # Fitted state is NumPy whatever the device (DESIGN §4): it pickles,
        # clones and predicts on machines without CuPy.
        self._params = to_numpy(params)
        self._optimizer_state = {
            key: value if np.isscalar(value) else to_numpy(value).copy()
            for key, value in optimizer.state().items()
        }
        self._effective_learning_rate = optimizer.learning_rate
        self._rng_state = rng.get_state()
        self._no_improvement_count = history["no_improvement"]
        self._sklstm_version = __version__
        self.loss_curve_ = history["loss_curve"]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = len(self.loss_curve_)
        self.t_ = history["t"]
        if early_stopping:
            self.validation_scores_ = history["validation_scores"]
            self.best_validation_score_ = history["best_validation_score"]
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = history["best_loss"]
        if not converged and not incremental:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )

    def _minibatch_steps(self, network, backend, params, weight_mask):
        """The backend's own runner of this fit's minibatches, or None.

        The GPU backend replays them as CUDA graphs (``_backends/_graphs.py``)
        and the CPU backend runs them on workspaces kept across minibatches
        (``_backends/_cpu_steps.py``). Both cover ``output="last"`` without
        dropout masks to draw (one layer, or ``dropout=0``); a runner may
        still hand a minibatch back to the general path (``run`` returns
        None), e.g. a graph for one whose sequences do not all have the
        full length.
        """
        make = getattr(backend, "minibatch_steps", None)
        if (make is None or self.output != "last"
                or (self.dropout > 0 and len(network.hidden_layer_sizes) > 1)):
            return None
        return make(network, params, alpha=self.alpha,
                    weight_mask=backend.xp.asarray(weight_mask.astype(params.dtype)))

    def _train_one_epoch(self, network, backend, params, optimizer, X, lengths, Y,
                         sample_weight, train, batch_size, rng, weight_mask, epoch,
                         steps=None):
        """One pass of minibatch updates over the ``train`` rows; the mean loss.

        Minibatches are gathered on the host and copied to the backend's
        device (``xp.asarray``, a no-op on the CPU). On a device the losses
        are summed there and read once, at the end of the epoch: reading
        each one would wait for the device after every minibatch. With
        ``steps`` (see :meth:`_minibatch_steps`), a minibatch it takes is
        computed there.
        """
        xp = backend.xp
        on_device = getattr(backend, "on_device", False)
        order = rng.permutation(train) if self.shuffle else train
        n_batches = -(-len(order) // batch_size)
        show_progress = self.verbose >= 2 and n_batches >= 10
        # The L2 term multiplies by this 0/1 mask; in the parameters' dtype
        # that is the cheapest way to skip the biases (see loss_and_grad).
        weight_mask = xp.asarray(weight_mask.astype(params.dtype))
        # Each minibatch's gradient is written here, used, then overwritten.
        grad_buffer = xp.empty_like(params)
        epoch_loss = 0.0
        equal_lengths = bool(lengths.min() == lengths.max())
        for index, batch in enumerate(_batches(len(order), batch_size)):
            X_batch, batch_lengths, rows = time_major_batch(
                X, lengths, order[batch], equal_lengths)
            Y_batch, weight_batch = Y[rows], sample_weight[rows]
            if Y.ndim == 3:  # per-timestep targets, made time-major as X
                n_steps = X_batch.shape[0]
                Y_batch = np.ascontiguousarray(Y_batch[:, :n_steps].transpose(1, 0, 2))
                weight_batch = np.ascontiguousarray(weight_batch[:, :n_steps].T)
            computed = None if steps is None else steps.run(
                X_batch, batch_lengths, Y_batch, weight_batch)
            if computed is not None:
                loss, grad = computed
            else:
                loss, grad = network.loss_and_grad(
                    backend, params, xp.asarray(X_batch), batch_lengths,
                    xp.asarray(Y_batch), xp.asarray(weight_batch),
                    alpha=self.alpha, dropout=self.dropout, random_state=rng,
                    weight_mask=weight_mask, grad_out=grad_buffer,
                )
            if not on_device and not math.isfinite(loss):
                self._raise_diverged(epoch)
            if self.clip_norm is not None:  # else the norm is not needed
                clip_by_global_norm(grad, self.clip_norm, xp=xp)
            optimizer.update(params, grad)
            epoch_loss += loss * len(rows)
            if show_progress:
                _progress_bar(index + 1, n_batches)
        epoch_loss = float(epoch_loss)  # on a device: the epoch's one read
        if not (np.isfinite(epoch_loss) and bool(xp.isfinite(params).all())):
            self._raise_diverged(epoch)
        return epoch_loss / len(order)

    def _raise_diverged(self, epoch):
        raise ValueError(
            f"Training diverged: the loss became non-finite in epoch {epoch + 1}. "
            f"Lower learning_rate_init (now {self.learning_rate_init}), set "
            f"clip_norm (now {self.clip_norm}, e.g. clip_norm=1.0), or scale X "
            "and y. The estimator was left as it was before this fit."
        )

    # -------------------------------------------------------------- predict
    def _raw_output(self, X):
        """Raw head output for every sequence of ``X``, in input order.

        Returns
        -------
        raw : ndarray of shape (n_samples, n_outputs), or (n_samples,
            n_timesteps, n_outputs) with NaN on padding for output="sequence"
        lengths : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "_params")
        X, lengths = check_sequences(self, X, reset=False)
        backend = self._predict_backend()
        with backend.session():
            raw = _raw_output_of(self._network(), backend,
                                 backend.xp.asarray(self._params),
                                 X.astype(self._params.dtype, copy=False), lengths)
        return raw, lengths

    def score(self, X, y, sample_weight=None):
        """R² (regressor) or accuracy (classifier) of the predictions on ``X``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, in any form ``fit`` accepts.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            With ``output="sequence"``, over all valid timesteps, each
            weighted by its sequence's ``sample_weight``.
        """
        metric = accuracy_score if is_classifier(self) else r2_score
        if self.output != "sequence":
            return metric(y, self.predict(X), sample_weight=sample_weight)
        # Per-timestep outputs: score every valid timestep of every sequence.
        raw, lengths = self._raw_output(X)
        y_valid, valid = flatten_sequence_targets(y, lengths, raw.shape[1])
        if sample_weight is not None:
            sample_weight = np.repeat(np.asarray(sample_weight), lengths)
        return metric(y_valid, self._decode(raw)[valid], sample_weight=sample_weight)

    def __getstate__(self):
        state = super().__getstate__()
        state["_sklstm_version"] = __version__
        return state

    def __setstate__(self, state):
        pickled_version = state.get("_sklstm_version", "unknown")
        if pickled_version != __version__:
            warnings.warn(
                f"Trying to unpickle {type(self).__name__} from sklstm version "
                f"{pickled_version} when using version {__version__}. This might "
                "lead to breaking code or invalid results. Use at your own risk.",
                UserWarning,
            )
        super().__setstate__(state)

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


def _raw_output_of(network, backend, params, X, lengths):
    """Raw head output of ``params`` for padded sequences, in input order.

    ``X`` is a host array and the result too; ``params`` lives on the
    backend's device, to which each batch is copied.
    """
    n_samples, n_steps = X.shape[:2]
    widest = max(network.hidden_layer_sizes + (network.n_features,))
    per_sequence = n_steps * 4 * widest * X.itemsize
    if (not getattr(backend, "on_device", False) and not network.proj_size
            and len(network.hidden_layer_sizes) == 1 and network.n_directions == 1
            and network.output == "last"):
        # One CPU layer that keeps no sequence: the kernel holds per-step
        # states only (see _infer_rows), so only the batch's input counts.
        per_sequence = n_steps * (network.n_features + 1) * X.itemsize
    if getattr(backend, "on_device", False):
        buffer_bytes, max_batch = _GPU_PREDICT_BUFFER_BYTES, _GPU_PREDICT_MAX_BATCH
    else:
        buffer_bytes, max_batch = _PREDICT_BUFFER_BYTES, _PREDICT_MAX_BATCH
    batch_size = min(max(buffer_bytes // per_sequence, 1), max_batch)
    if network.output == "sequence":
        raw = np.full((n_samples, n_steps, network.n_outputs), np.nan, dtype=X.dtype)
    else:
        raw = np.empty((n_samples, network.n_outputs), dtype=X.dtype)
    # Sequences of similar length share a batch, so little is padding. When
    # all have one length, a batch is a slice of consecutive rows.
    equal_lengths = n_samples > 0 and lengths.min() == lengths.max()
    by_length = None if equal_lengths else np.argsort(-lengths, kind="stable")
    for batch in _batches(n_samples, batch_size):
        X_batch, batch_lengths, rows = time_major_batch(
            X, lengths, batch if equal_lengths else by_length[batch], equal_lengths)
        raw_batch, _ = network.forward(backend, params, backend.xp.asarray(X_batch),
                                       batch_lengths)
        raw_batch = to_numpy(raw_batch)
        if network.output == "sequence":
            # The valid timesteps of the whole batch in one fancy assignment,
            # not a Python loop over its (up to 1024) sequences.
            steps, columns = np.nonzero(
                np.arange(raw_batch.shape[0])[:, np.newaxis] < batch_lengths
            )
            raw[rows[columns], steps] = raw_batch[steps, columns]
        else:
            raw[rows] = raw_batch
    return raw


def _batches(n_samples, batch_size):
    """Slices of ``batch_size`` consecutive rows (the last may be shorter).

    What scikit-learn's ``gen_batches`` yields, without its parameter
    validation: ~70 us a call, 1.7 % of a ``predict`` of 1000 sequences of
    20 steps.
    """
    return [slice(start, min(start + batch_size, n_samples))
            for start in range(0, n_samples, batch_size)]


def per_sequence(values, lengths):
    """Per-timestep outputs as an array when all sequences are equally long,
    otherwise as a list of one array per sequence, cut to its length."""
    if (lengths == values.shape[1]).all():
        return values
    return [values[index, :length] for index, length in enumerate(lengths)]


def _or(value, default):
    return default if value is None else value


def _progress_bar(done, total, width=30):
    filled = width * done // total
    sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{total} minibatches")
    if done == total:
        sys.stdout.write("\n")
    sys.stdout.flush()
