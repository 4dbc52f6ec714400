"""
Forecasting a univariate time series
====================================

Forecast the next value of a series from the 24 values before it. The series
is cut into overlapping windows with :func:`~sklstm.preprocessing.make_windows`,
the inputs are standardised with :class:`~sklstm.preprocessing.SequenceScaler`
inside a pipeline, and the target is standardised with scikit-learn's
:class:`~sklearn.compose.TransformedTargetRegressor`, so the network sees
numbers near zero on both ends and its predictions come back in the original
units.
"""

# %%
# A series with two seasonal cycles, a slow trend and noise
# ---------------------------------------------------------
# Think of an hourly load curve: a daily cycle (24 steps), a weaker cycle of
# about a week, a drift upwards and measurement noise. Its values are far
# from zero, which is exactly what scaling is for.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mean_absolute_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler, make_windows

rng = np.random.RandomState(0)
hours = np.arange(720)
series = (
    100.0
    + 10.0 * np.sin(2 * np.pi * hours / 24)
    + 4.0 * np.sin(2 * np.pi * hours / 168)
    + 0.01 * hours
    + rng.normal(scale=1.0, size=hours.size)
)

# The examples train for a few epochs only, to run in seconds; scikit-learn
# warns when training stops at ``max_iter`` before converging.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# %%
# Windows, and a split that respects time
# ---------------------------------------
# ``make_windows(series, window=24)`` returns ``X`` of shape
# ``(n_windows, 24, 1)`` -- one feature per timestep -- and ``y``, the value
# right after each window. The last 20% of the windows are the test set: a
# random split would let the model peek at the future.
window = 24
X, y = make_windows(series, window=window, horizon=1)
n_train = int(0.8 * len(X))
X_train, X_test = X[:n_train], X[n_train:]
y_train, y_test = y[:n_train], y[n_train:]
print(f"X: {X.shape}, y: {y.shape}; {n_train} training windows, "
      f"{len(X_test)} test windows")

# %%
# Scale both ends, then fit
# -------------------------
# ``SequenceScaler`` learns one mean and one standard deviation per feature
# over all training windows and timesteps; ``TransformedTargetRegressor``
# does the same for ``y`` with a ``StandardScaler`` and inverts it on
# ``predict``.
model = TransformedTargetRegressor(
    regressor=make_pipeline(
        SequenceScaler(),
        LSTMRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                      batch_size=32, max_iter=25, tol=1e-3, random_state=0),
    ),
    transformer=StandardScaler(),
)
model.fit(X_train, y_train)
y_pred = model.predict(X_test)

# A forecast is only useful if it beats the obvious ones: "the same as one
# day ago" (the daily cycle) and "the same as the last value".
seasonal_naive = X_test[:, 0, 0]  # the value 24 steps before the target
last_value = X_test[:, -1, 0]
print(f"R^2 of the LSTM forecast: {model.score(X_test, y_test):.3f}")
for name, forecast in [("LSTM", y_pred), ("same as a day ago", seasonal_naive),
                       ("same as the last value", last_value)]:
    print(f"mean absolute error, {name:>22}: "
          f"{mean_absolute_error(y_test, forecast):.2f}")

# %%
# Forecast against truth
# ----------------------
test_hours = hours[window + n_train:]
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(hours[: window + n_train], series[: window + n_train], color="0.6",
        lw=1, label="training data")
ax.plot(test_hours, y_test, color="black", lw=1.5, label="truth")
ax.plot(test_hours, y_pred, color="tab:orange", lw=1.5, ls="--",
        label="LSTM, one step ahead")
ax.set_xlim(hours[-200], hours[-1])
ax.set_xlabel("hour")
ax.set_ylabel("value")
ax.legend(loc="upper left")
ax.set_title("One-step-ahead forecast on the held-out end of the series")
fig.tight_layout()
plt.show()
