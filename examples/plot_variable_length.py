"""
Sequences of different lengths
==============================

Real sequences rarely share one length: sessions last as long as they last,
sensors drop out, sentences end. sklstm takes variable-length sequences in
two equivalent forms:

* a **list** of arrays of shape ``(n_timesteps_i, n_features)``;
* a **3-D array padded with trailing NaN timesteps**, as
  :func:`~sklstm.preprocessing.pad_sequences` builds it.

Padding never changes a prediction: each sequence is read up to its own last
valid timestep, whichever form it arrives in and whatever it is batched with.
"""

# %%
# Data: sequences of 5 to 60 timesteps
# ------------------------------------
# Each sequence has two features, a noisy signal and a noisy copy of its
# trend. The target is the average of the signal over the whole sequence, so
# the model must read every valid timestep -- and only those.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline

from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler, pad_sequences

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # few epochs

rng = np.random.RandomState(0)
n_samples = 500
lengths = rng.randint(5, 61, size=n_samples)
sequences, targets = [], []
for length in lengths:
    level = rng.normal()
    signal = level + 0.5 * rng.randn(length)
    trend = np.linspace(0, rng.normal(), length) + 0.1 * rng.randn(length)
    sequences.append(np.column_stack([signal, trend]))  # (length, 2)
    targets.append(signal.mean())
y = np.array(targets)
print(f"{n_samples} sequences, lengths {lengths.min()} to {lengths.max()}; "
      f"the first has shape {sequences[0].shape}")

# %%
# Fit on a list of arrays
# -----------------------
# :class:`~sklstm.preprocessing.SequenceScaler` accepts the same forms as the
# estimators and returns the form it was given (a list here).
# ``n_features_in_`` is the number of features per timestep, 2, whatever the
# lengths.
train, test = slice(0, 400), slice(400, None)
model = make_pipeline(
    SequenceScaler(),
    LSTMRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                  batch_size=32, max_iter=20, random_state=0),
)
model.fit(sequences[train], y[train])
lstm = model[-1]
print(f"n_features_in_ = {lstm.n_features_in_}")
print(f"R^2 on held-out sequences: {model.score(sequences[test], y[test]):.3f}")

# %%
# The same sequences as one NaN-padded array
# ------------------------------------------
# ``pad_sequences`` stacks the list into shape ``(n_samples, max_length,
# n_features)``; the timesteps after each sequence's end are all-NaN rows.
# Predictions from the list and from the padded array are the same.
X_test_padded = pad_sequences(sequences[test])
print(f"padded test array: {X_test_padded.shape}, "
      f"{np.isnan(X_test_padded[:, :, 0]).mean():.0%} of its timesteps are "
      "padding")
from_list = model.predict(sequences[test])
from_padded = model.predict(X_test_padded)
print("list and padded array give the same predictions:",
      np.allclose(from_list, from_padded))

# %%
# A sequence alone, or batched with longer ones
# ---------------------------------------------
# Padding a short sequence with many more NaN timesteps, or predicting it on
# its own, gives the same output again.
shortest = 400 + int(np.argmin(lengths[400:]))
alone = model.predict([sequences[shortest]])[0]
padded_more = model.predict(pad_sequences([sequences[shortest]],
                                          max_length=200))[0]
in_batch = from_list[shortest - 400]
print(f"sequence {shortest} ({lengths[shortest]} timesteps): alone {alone:.6f}, "
      f"padded to 200 {padded_more:.6f}, in the batch {in_batch:.6f}")

# %%
# Accuracy against length
# -----------------------
# Here the error grows with the length: the network keeps a running average
# in its cell state, and the longer the sequence, the further it has to carry
# it. Padding plays no part: a 5-step sequence costs 5 steps of computation
# even in a batch padded to 60 (the kernels shrink their matrix products as
# sequences end).
errors = np.abs(from_list - y[test])
fig, (ax_lengths, ax_error) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_lengths.hist(lengths, bins=20, color="tab:blue")
ax_lengths.set_xlabel("sequence length")
ax_lengths.set_ylabel("sequences")
ax_lengths.set_title("Lengths in the data set")
ax_error.scatter(lengths[400:], errors, s=12, color="tab:orange")
ax_error.set_xlabel("sequence length")
ax_error.set_ylabel("absolute error")
ax_error.set_title("Held-out error by length")
fig.tight_layout()
plt.show()
