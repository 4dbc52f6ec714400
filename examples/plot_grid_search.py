"""
Choosing the architecture and learning rate with GridSearchCV
=============================================================

An :class:`~sklstm.LSTMRegressor` is an ordinary scikit-learn estimator, so
:class:`~sklearn.model_selection.GridSearchCV` tunes it like any other: here
over the sizes of the stacked LSTM layers and Adam's initial learning rate,
with the model inside a pipeline (parameter names get the step's prefix,
``lstmregressor__``).
"""

# %%
# A task that needs memory
# ------------------------
# Each sequence is 20 steps of noise in two features; the target is the sum
# of the first feature over the first three steps. The network has to notice
# those values at the start and carry them to the end, 17 steps later.
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # few epochs

rng = np.random.RandomState(0)
X = rng.randn(300, 20, 2)
y = X[:, :3, 0].sum(axis=1)

# %%
# The search
# ----------
# Two architectures (one layer of 8 units; two stacked layers, 16 then 8) by
# three learning rates, scored by 3-fold cross-validated R^2: 18 fits of 15
# epochs each. ``n_jobs=2`` runs two fits at a time in separate processes;
# sklstm limits the BLAS threads inside each fit so that the workers do not
# oversubscribe the cores.
pipeline = make_pipeline(
    SequenceScaler(),
    LSTMRegressor(max_iter=15, batch_size=32, random_state=0),
)
param_grid = {
    "lstmregressor__hidden_layer_sizes": [(8,), (16, 8)],
    "lstmregressor__learning_rate_init": [0.001, 0.01, 0.1],
}
search = GridSearchCV(pipeline, param_grid, cv=KFold(3), n_jobs=2)
start = time.perf_counter()
search.fit(X, y)
print(f"{len(search.cv_results_['params'])} candidates x 3 folds in "
      f"{time.perf_counter() - start:.1f} s")
print("best parameters:", search.best_params_)
print(f"best cross-validated R^2: {search.best_score_:.3f}")

# %%
# All the results
# ---------------
# ``cv_results_`` holds every candidate's mean and spread over the folds.
results = search.cv_results_
sizes_grid = param_grid["lstmregressor__hidden_layer_sizes"]
rates = param_grid["lstmregressor__learning_rate_init"]
mean_score = np.empty((len(sizes_grid), len(rates)))
std_score = np.empty_like(mean_score)
for params, mean, std in zip(results["params"], results["mean_test_score"],
                             results["std_test_score"]):
    row = sizes_grid.index(params["lstmregressor__hidden_layer_sizes"])
    column = rates.index(params["lstmregressor__learning_rate_init"])
    mean_score[row, column], std_score[row, column] = mean, std
print("mean R^2 " + "".join(f"{f'lr={rate}':>10}" for rate in rates))
for sizes, row in zip(sizes_grid, mean_score):
    print(f"{str(sizes):>8} " + "".join(f"{score:10.3f}" for score in row))

# %%
# Score against learning rate
# ---------------------------
# Too small a step learns little in 15 epochs; too large a step overshoots.
fig, ax = plt.subplots(figsize=(6, 3.5))
for sizes, mean, std in zip(sizes_grid, mean_score, std_score):
    ax.errorbar(rates, mean, yerr=std, marker="o", capsize=3,
                label=f"hidden_layer_sizes={sizes}")
ax.set_xscale("log")
ax.set_xlabel("learning_rate_init")
ax.set_ylabel("cross-validated R^2")
ax.set_title("GridSearchCV over architecture and learning rate")
ax.legend()
fig.tight_layout()
plt.show()
