"""
Early stopping: loss and validation curves
==========================================

With ``early_stopping=True`` an sklstm estimator holds out
``validation_fraction`` of the training sequences, scores them after every
epoch (R^2 for a regressor, accuracy for a classifier), stops once that score
has not improved by ``tol`` for ``n_iter_no_change`` epochs, and keeps the
weights of the best epoch. The curves it records, ``loss_curve_`` and
``validation_scores_``, show what happened.
"""

# %%
# A small, noisy data set that invites overfitting
# ------------------------------------------------
# 240 sequences of 15 steps; the target is a smooth function of the first
# feature plus plenty of noise. Two stacked layers of 16 units have far more
# weights than such a data set can pin down.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sklstm import LSTMRegressor

warnings.filterwarnings("ignore", category=ConvergenceWarning)

rng = np.random.RandomState(0)
X = rng.randn(240, 15, 3)
y = np.tanh(X[:, -5:, 0].sum(axis=1)) + 0.4 * rng.randn(240)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

# %%
# Fit with and without early stopping
# -----------------------------------
# Both models are the same but for ``early_stopping``; ``max_iter`` caps the
# run without it.
params = dict(hidden_layer_sizes=(16, 16), learning_rate_init=0.01,
              batch_size=32, max_iter=40, random_state=0)
stopped = LSTMRegressor(early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=5, **params).fit(X_train, y_train)
full = LSTMRegressor(**params).fit(X_train, y_train)

best_epoch = int(np.argmax(stopped.validation_scores_)) + 1
print(f"early stopping ran {stopped.n_iter_} epochs; the best validation "
      f"R^2, {stopped.best_validation_score_:.3f}, came at epoch {best_epoch}, "
      "and its weights are the fitted ones")
print(f"without early stopping: {full.n_iter_} epochs")
print(f"test R^2 with early stopping:    {stopped.score(X_test, y_test):.3f}")
print(f"test R^2 without early stopping: {full.score(X_test, y_test):.3f}")

# %%
# The curves
# ----------
# The training loss keeps falling while the validation score peaks and then
# sags: from there on, the network fits the noise of its training data.
# With early stopping ``best_loss_`` is None; without it,
# ``validation_scores_`` is None.
fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_loss.plot(np.arange(1, full.n_iter_ + 1), full.loss_curve_, color="0.6",
             label="without early stopping")
ax_loss.plot(np.arange(1, stopped.n_iter_ + 1), stopped.loss_curve_,
             color="tab:blue", label="with early stopping")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("training loss (loss_curve_)")
ax_loss.legend()
ax_score.plot(np.arange(1, stopped.n_iter_ + 1), stopped.validation_scores_,
              color="tab:blue", marker=".")
ax_score.axvline(best_epoch, color="tab:red", ls="--",
                 label=f"best epoch ({best_epoch}), weights kept")
ax_score.set_xlabel("epoch")
ax_score.set_ylabel("validation R^2 (validation_scores_)")
ax_score.legend()
fig.tight_layout()
plt.show()
