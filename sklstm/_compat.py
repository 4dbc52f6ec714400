"""The one module that imports scikit-learn's private helpers.

scikit-learn does not promise to keep these names; if one moves, this is the
only file to mend.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight

__all__ = ["Interval", "StrOptions", "_check_sample_weight", "_fit_context"]
