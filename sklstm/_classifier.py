"""LSTMClassifier: log-loss on a softmax or logistic output."""

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from ._base import BaseLSTM
from ._compat import _fit_context


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
    dropout : float, default=0.0
        Probability of zeroing an output of each layer but the last, during
        training.
    solver : {'adam', 'sgd'}, default='adam'
        Optimizer of the weights.
    alpha : float, default=0.0001
        L2 penalty on the weights (not the biases), as in scikit-learn's MLP.
    batch_size : int or 'auto', default='auto'
        Sequences per minibatch; ``'auto'`` is ``min(200, n_samples)``.
    learning_rate_init : float, default=0.001
        Step size.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the sequences before each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and dropout; an int makes ``fit``
        repeatable bit for bit.
    tol : float, default=1e-4
        Training stops when the loss has not improved by at least ``tol`` for
        ``n_iter_no_change`` consecutive epochs.
    verbose : bool, default=False
        Print one line per epoch.
    momentum : float, default=0.9
        Momentum of 'sgd'.
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum with 'sgd'.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's moment decay rates and numerical stabiliser.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
    clip_norm : float or None, default=None
        Rescale each minibatch gradient to at most this global L2 norm.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or list of ndarray
        Class labels (for multilabel, the label indices).
    loss_ : float
        Training log-loss of the last epoch (plus the L2 term).
    best_loss_ : float
        Lowest epoch loss.
    loss_curve_ : list of float
        Loss of each epoch.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    n_outputs_ : int
        Width of the output layer.
    out_activation_ : str
        'softmax' (multiclass) or 'logistic' (binary, multilabel).
    n_features_in_ : int
        Features per timestep for 3-D or list input; for 2-D (univariate)
        input, the number of columns, i.e. timesteps.
    feature_names_in_ : ndarray of shape (n_features_in_,)
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
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            bidirectional=bidirectional,
            dropout=dropout,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate_init=learning_rate_init,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            clip_norm=clip_norm,
        )

    def _encode_targets(self, y, dtype, reset):
        y = np.asarray(y) if not hasattr(y, "shape") else y
        check_classification_targets(y)
        if reset:
            target_type = type_of_target(y, input_name="y")
            binarizer = LabelBinarizer().fit(y)
            if len(binarizer.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes "
                    f"in the data, but the data contains only one class: "
                    f"{binarizer.classes_[0]!r}."
                )
            self.classes_ = binarizer.classes_
            self._target_type = target_type
        else:
            binarizer = LabelBinarizer().fit(self.classes_)
        Y = binarizer.transform(y).astype(dtype)
        if self._target_type == "multiclass":
            return Y, "softmax_log_loss", "softmax"
        return Y, "logistic_log_loss", "logistic"

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
            multilabel classification.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sequence in the loss.

        Returns
        -------
        self : LSTMClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

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
            output, where each column is one label's probability.
        """
        raw = self._raw_output(X)
        if self.out_activation_ == "softmax":
            return softmax(raw, axis=1)
        proba = expit(raw)
        if self._target_type == "binary":
            return np.hstack([1 - proba, proba])
        return proba

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
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

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
            Predicted labels (an indicator matrix for multilabel).
        """
        raw = self._raw_output(X)
        if self._target_type == "multiclass":
            return self.classes_[np.argmax(raw, axis=1)]
        if self._target_type == "binary":
            return self.classes_[(raw[:, 0] > 0).astype(np.intp)]
        return (raw > 0).astype(int)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
