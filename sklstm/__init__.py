"""sklstm: LSTM networks as scikit-learn estimators.

The forward pass and backpropagation through time run in Cython kernels on
BLAS; the estimators follow scikit-learn's ``MLPRegressor``/``MLPClassifier``.
"""

from ._classifier import LSTMClassifier
from ._regressor import LSTMRegressor
from ._version import __version__

__all__ = ["LSTMClassifier", "LSTMRegressor", "__version__"]
