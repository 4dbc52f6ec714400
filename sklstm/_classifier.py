"""LSTMClassifier: log-loss on a softmax or logistic output."""

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

from ._base import BaseLSTM, per_sequence
from ._compat import StrOptions, _fit_context


class LSTMClassifier(ClassifierMixin, BaseLSTM):
    """Long short-term memory network for classification of sequences.

    Stacked LSTM layers read each sequence; a linear head maps the last
    valid hidden state to class scores: a softmax over classes (multiclass),
    one logistic output (binary) or one logistic output per label
    (multilabel). Trained on the log-loss with minibatch Adam or SGD. The
    forward pass and backpropagation through time run in Cython kernels on
    BLAS.

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
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, ``{label: weight}``; 'balanced'
        weighs each class by ``n_samples / (n_classes * count)``. Multiplies
        ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or list of ndarray
        Class labels (for multilabel, the label indices).
    loss_ : float
        Training log-loss of the last epoch (plus the L2 term).
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
        Width of the output layer.
    out_activation_ : str
        'softmax' (multiclass) or 'logistic' (binary, multilabel).
    n_features_in_ : int
        Features per timestep for 3-D or list input; for 2-D (univariate)
        input, the number of columns, i.e. timesteps.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` is a DataFrame.

    See Also
    --------
    LSTMRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : Feed-forward counterpart.

    Notes
    -----
    The compute dtype follows ``X``: float32 input trains in float32 (the
    fastest), anything else in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sklstm import LSTMClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(64, 10, 2)
    >>> y = np.where(X[:, 0, 0] > 0, "up", "down")
    >>> clf = LSTMClassifier(hidden_layer_sizes=(8,), max_iter=5,
    ...                      random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
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
        class_weight=None,
    ):
        self.class_weight = class_weight
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

    _parameter_constraints: dict = {
        **BaseLSTM._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    # ClassifierMixin.score comes first in the MRO but knows nothing of
    # per-timestep outputs; BaseLSTM.score handles both kinds.
    score = BaseLSTM.score

    def _encode_targets(self, y, dtype, reset, classes=None):
        y = np.asarray(y) if not hasattr(y, "shape") else y
        if getattr(y, "ndim", 1) == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        multilabel = type_of_target(y, input_name="y") == "multilabel-indicator"
        if multilabel and self.output == "sequence":
            raise ValueError(
                "Multilabel targets are not supported with output='sequence'; "
                "give one class label per timestep."
            )
        if reset:
            if multilabel:
                self.classes_ = np.arange(y.shape[1])
            else:
                self.classes_ = np.unique(y if classes is None else classes)
                if classes is not None:
                    self._check_known_labels(y)
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes "
                    f"in the data, but the data contains only one class: "
                    f"{self.classes_[0]!r}."
                )
            if multilabel:
                self._target_type = "multilabel-indicator"
            else:
                n_classes = len(self.classes_)
                self._target_type = "binary" if n_classes == 2 else "multiclass"
        elif multilabel != (self._target_type == "multilabel-indicator") or (
            multilabel and y.shape[1] != len(self.classes_)
        ):
            raise ValueError(
                f"y has the form {type_of_target(y)!r} but the fitted model "
                f"predicts {self._target_type!r} targets with classes "
                f"{self.classes_}; pass targets of the same form."
            )
        else:
            self._check_known_labels(y)

        if multilabel:
            Y = np.asarray(y, dtype=dtype)
        else:
            Y = LabelBinarizer().fit(self.classes_).transform(y).astype(dtype)
        target_weight = None
        if self.class_weight is not None:
            target_weight = compute_sample_weight(self.class_weight, y)
        if self._target_type == "multiclass":
            return Y, "softmax_log_loss", "softmax", target_weight
        return Y, "logistic_log_loss", "logistic", target_weight

    def _check_known_labels(self, y):
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown.tolist()} that are not in classes_ "
                f"{self.classes_.tolist()}. Pass every class in the first call "
                "to partial_fit (classes=...), or fit a new model."
            )

    def _decode(self, raw):
        """Labels from raw outputs."""
        if self._target_type == "multiclass":
            return self.classes_[np.argmax(raw, axis=-1)]
        if self._target_type == "binary":
            return self.classes_[(raw[..., 0] > 0).astype(np.intp)]
        return (raw > 0).astype(int)

    def _score_raw(self, raw, Y):
        if self._target_type == "multiclass":
            return float(np.mean(raw.argmax(axis=1) == Y.argmax(axis=1)))
        return float(np.mean(((raw > 0) == (Y > 0.5)).all(axis=1)))

    def _stratify(self, Y):
        if self._target_type == "multiclass":
            return Y.argmax(axis=1)
        if self._target_type == "binary":
            return Y[:, 0]
        return None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on sequences ``X`` and labels ``y``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like of shape (n_timesteps_i, \
n_features)
            Sequences. 2-D input is univariate sequences. Trailing all-NaN
            timesteps of a 3-D array are padding.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels (any type), or a label indicator matrix for
            multilabel classification. With ``output="sequence"``, one label
            per timestep: shape (n_samples, n_timesteps), or a list of arrays
            of shape (n_timesteps_i,).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence in the loss.

        Returns
        -------
        self : LSTMClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update the model with one epoch over ``X`` and ``y``.

        The first call initialises the model and needs ``classes``; later
        calls continue its weights and optimizer state. Early stopping does
        not apply. If the call fails, the model is left as it was.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, with the features of earlier calls.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels, all among ``classes`` of the first call.
        classes : array-like of shape (n_classes,), default=None
            Every class that will ever appear; required in the first call
            (except for multilabel indicator targets), ignored after.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence in the loss.

        Returns
        -------
        self : LSTMClassifier
            The updated estimator.
        """
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: the "
                "class frequencies of the whole stream are unknown. Pass a "
                "dict of class weights instead."
            )
        first_call = not hasattr(self, "_params")
        if first_call and classes is None and not (
            getattr(y, "ndim", np.ndim(y)) == 2 and np.shape(y)[1] > 1
        ):
            raise ValueError(
                "classes must be passed on the first call to partial_fit."
            )
        return self._fit(X, y, sample_weight, incremental=True,
                         classes=classes if first_call else None)

    def predict_proba(self, X):
        """Class probabilities of sequences ``X``.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, in any form ``fit`` accepts.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``; rows sum to 1 except for multilabel
            output, where each column is one label's probability. With
            ``output="sequence"``, one row per timestep: shape (n_samples,
            n_timesteps, n_classes) when all sequences have the same length,
            otherwise a list of arrays of shape (n_timesteps_i, n_classes).
        """
        raw, lengths = self._raw_output(X)
        if self.out_activation_ == "softmax":
            proba = softmax(raw, axis=-1)
        else:
            proba = expit(raw)
            if self._target_type == "binary":
                proba = np.concatenate([1 - proba, proba], axis=-1)
        return per_sequence(proba, lengths) if self.output == "sequence" else proba

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, in any form ``fit`` accepts.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Shaped as :meth:`predict_proba`'s output.
        """
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            if isinstance(proba, list):
                return [np.log(sequence_proba) for sequence_proba in proba]
            return np.log(proba)

    def predict(self, X):
        """Predict the class of each sequence.

        Parameters
        ----------
        X : {array-like} of shape (n_samples, n_timesteps, n_features) or \
(n_samples, n_timesteps), or list of array-like
            Sequences, in any form ``fit`` accepts.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_labels)
            Predicted labels (an indicator matrix for multilabel). With
            ``output="sequence"``, one label per timestep: shape (n_samples,
            n_timesteps) when all sequences have the same length, otherwise a
            list of arrays of shape (n_timesteps_i,).
        """
        raw, lengths = self._raw_output(X)
        labels = self._decode(raw)
        if self.output == "sequence":
            # Padding has no label: NaN rows decode to classes_[0]; cut them.
            return per_sequence(labels, lengths)
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags
