"""scikit-learn's own estimator checks, on default parameters.

2-D input is univariate sequences, so every check drives the real recurrence.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklstm import LSTMClassifier, LSTMRegressor

EXPECTED_FAILED_CHECKS = {
    # Minibatch training on shuffled data cannot equal training on data with
    # duplicated rows: the batches, and so the updates, differ. scikit-learn
    # exempts MLPRegressor/MLPClassifier from this check for the same reason.
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch SGD/Adam: weighting is not the same as repeating rows"
    ),
}


@parametrize_with_checks(
    [LSTMRegressor(), LSTMClassifier()],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
