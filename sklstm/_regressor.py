"""LSTMRegressor: squared error on an identity output."""

from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_array

from ._base import BaseLSTM, per_sequence
from ._compat import _fit_context


class LSTMRegressor(RegressorMixin, BaseLSTM):
    """Long short-term memory network for regression on sequences.

    Stacked LSTM layers read each sequence; a linear head maps the last
    valid hidden state to the targets. Trained with minibatch Adam or SGD on
    the squared error. The forward pass and backpropagation through time run
    in Cython kernels on BLAS.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(32,)
        Hidden units of each stacked LSTM layer.
    bidirectional : bool, default=False
        Run every layer forward and backward in time and concatenate.
    output : {'last', 'sequence'}, default='last'
        'last' predicts one value per sequence from its last valid hidden
        state; 'sequence' predicts one per timestep (``y`` then has a target
        per timestep, and padding is masked out of the loss).
    proj_size : int, default=0
        If positive, each layer projects its hidden state to ``proj_size``
        values, ``h_t = (o * tanh(c_t)) @ W_hr.T``, as PyTorch's
        ``nn.LSTM(proj_size=...)``; it must be smaller than every hidden layer
        size. Fewer recurrent weights, a smaller output per layer.
    dropout : float, default=0.0
        Probability of zeroing an output of each layer but the last, during
        training.
    solver : {'adam', 'sgd'}, default='adam'
        Optimizer of the weights.
    alpha : float, default=0.0001
        L2 penalty on the weights (not the biases), as in scikit-learn's MLP.
    batch_size : int or 'auto', default='auto'
        Sequences per minibatch; ``'auto'`` is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Step-size schedule of ``solver='sgd'``, as in scikit-learn's MLP:
        'invscaling' divides ``learning_rate_init`` by
        ``(t_ + 1) ** power_t`` after each epoch; 'adaptive' divides the step
        by 5 each time the loss (or validation score) stalls for
        ``n_iter_no_change`` epochs, and stops below 1e-6.
    learning_rate_init : float, default=0.001
        Initial step size.
    power_t : float, default=0.5
        Exponent of 'invscaling'.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the sequences before each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling, dropout and the validation split; an
        int makes ``fit`` repeatable bit for bit.
    tol : float, default=1e-4
        Training stops when the loss (or, with early stopping, the validation
        score) has not improved by at least ``tol`` for ``n_iter_no_change``
        consecutive epochs.
    verbose : int, default=0
        1 prints one line per epoch (loss, validation score, time); 2 also
        draws a progress bar within epochs of 10 or more minibatches.
    warm_start : bool, default=False
        ``fit`` continues from the fitted weights and optimizer state (Adam's
        moments or SGD's velocity; the step size restarts at
        ``learning_rate_init``) instead of starting afresh.
    momentum : float, default=0.9
        Momentum of 'sgd'.
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum with 'sgd'.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data, stop when its score
        stalls, and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's moment decay rates and numerical stabiliser.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
    clip_norm : float or None, default=None
        Rescale each minibatch gradient to at most this global L2 norm.
    device : {'cpu', 'cuda', 'auto'}, default='cpu'
        Where ``fit`` and ``predict`` run. 'cuda' trains on an NVIDIA GPU
        through CuPy, and ``fit`` raises an error with an installation hint
        if CuPy or a GPU is missing; 'auto' uses the GPU when CuPy and a GPU
        are usable, else the CPU. Fitted weights are NumPy arrays whatever
        the device, so a model trained on a GPU pickles and predicts
        anywhere; ``predict`` falls back to the CPU when no GPU is usable.
        See :doc:`/user_guide/gpu`.
    allow_tf32 : bool, default=False
        With a GPU, let float32 matrix products use TF32 tensor cores
        (faster on large models, about 3 significant digits per product).
        No effect on the CPU or in float64.

    Attributes
    ----------
    loss_ : float
        Training loss of the last epoch (half the squared error, summed over
        outputs and averaged over samples, plus the L2 term).
    best_loss_ : float or None
        Lowest epoch loss (None with early stopping).
    loss_curve_ : list of float
        Loss of each epoch.
    validation_scores_ : list of float or None
        Score on the held-out data after each epoch (early stopping only).
    best_validation_score_ : float or None
        Best of ``validation_scores_``; its weights are the fitted ones.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    n_params_ : int
        Number of trainable parameters.
    n_outputs_ : int
        Number of targets.
    out_activation_ : str
        'identity'.
    n_features_in_ : int
        Features per timestep for 3-D or list input; for 2-D (univariate)
        input, the number of columns, i.e. timesteps.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` is a DataFrame.

    See Also
    --------
    LSTMClassifier : The same network for classification.
    sklearn.neural_network.MLPRegressor : Feed-forward counterpart.

    Notes
    -----
    The compute dtype follows ``X``: float32 input trains in float32 (the
    fastest), anything else in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sklstm import LSTMRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(64, 10, 2)
    >>> y = X[:, :, 0].sum(axis=1)
    >>> model = LSTMRegressor(hidden_layer_sizes=(8,), max_iter=5,
    ...                       random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """

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
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            bidirectional=bidirectional,
            output=output,
            proj_size=proj_size,
            dropout=dropout,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            clip_norm=clip_norm,
            device=device,
            allow_tf32=allow_tf32,
        )

    # RegressorMixin.score comes first in the MRO but knows nothing of
    # per-timestep outputs; BaseLSTM.score handles both kinds.
    score = BaseLSTM.score

    def _encode_targets(self, y, dtype, reset, classes=None):
        y = check_array(y, ensure_2d=False, dtype=dtype, input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(
                f"y has {y.ndim} dimensions; expected shape (n_samples,) or "
                "(n_samples, n_outputs)."
            )
        if reset:
            self._y_is_1d = y.ndim == 1
        return y.reshape(len(y), -1), "squared_error", "identity", None

    def _decode(self, raw):
        return raw[..., 0] if raw.shape[-1] == 1 and self._y_is_1d else raw

    def _score_raw(self, raw, Y):
        return r2_score(Y, raw)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences ``X`` and targets ``y``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like of shape (n_timesteps_i, \
n_features)
            Sequences. 2-D input is univariate sequences. Trailing all-NaN
            timesteps of a 3-D array are padding.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets. With ``output="sequence"``, one per timestep: shape
            (n_samples, n_timesteps[, n_outputs]), or a list of arrays of
            shape (n_timesteps_i[, n_outputs]).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence in the loss.

        Returns
        -------
        self : LSTMRegressor
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over ``X`` and ``y``.

        The first call initialises the model; later calls continue its
        weights and optimizer state. Early stopping does not apply. If the
        call fails, the model is left as it was.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, with the features of earlier calls.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets, with the outputs of earlier calls.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence in the loss.

        Returns
        -------
        self : LSTMRegressor
            The updated estimator.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predict the targets of sequences ``X``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, in any form ``fit`` accepts.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions. With ``output="sequence"``, one per timestep: shape
            (n_samples, n_timesteps[, n_outputs]) when all sequences have the
            same length, otherwise a list of arrays of shape
            (n_timesteps_i[, n_outputs]).
        """
        raw, lengths = self._raw_output(X)
        y = self._decode(raw)
        return per_sequence(y, lengths) if self.output == "sequence" else y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
