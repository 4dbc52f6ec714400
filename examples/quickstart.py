"""
Quick start
===========

Train an :class:`~sklstm.LSTMRegressor` to continue a noisy sine wave and an
:class:`~sklstm.LSTMClassifier` to tell which of two frequencies a sequence
oscillates at, then print their held-out scores.
"""

# %%
# Forecasting: windows of a noisy sine, predict the next value.
import numpy as np
from sklearn.model_selection import train_test_split

from sklstm import LSTMClassifier, LSTMRegressor

rng = np.random.RandomState(0)
t = np.arange(1200) * 0.3
series = np.sin(t) + 0.5 * np.sin(0.37 * t) + 0.05 * rng.randn(t.size)
window = 20
X = np.stack([series[i : i + window] for i in range(len(series) - window)])
y = series[window:]
X = X[:, :, np.newaxis]  # (n_samples, n_timesteps, n_features)
X_train, X_test, y_train, y_test = train_test_split(X, y, shuffle=False)

regressor = LSTMRegressor(
    hidden_layer_sizes=(16,), learning_rate_init=0.01, batch_size=32,
    max_iter=30, random_state=0,
)
regressor.fit(X_train, y_train)
print(f"LSTMRegressor   R^2 on held-out windows: {regressor.score(X_test, y_test):.3f}")

# %%
# Classification: sequences of varying length, given as a list of arrays.
lengths = rng.randint(10, 40, size=600)
labels = rng.randint(0, 2, size=600)
frequencies = np.where(labels == 1, 0.9, 0.4)
sequences = [
    np.column_stack([np.sin(f * np.arange(n) + rng.uniform(0, 6)),
                     0.3 * rng.randn(n)])
    for f, n in zip(frequencies, lengths)
]
classes = np.array(["slow", "fast"])[labels]

classifier = LSTMClassifier(
    hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=30, random_state=0
)
classifier.fit(sequences[:450], classes[:450])
accuracy = classifier.score(sequences[450:], classes[450:])
print(f"LSTMClassifier  accuracy on held-out sequences: {accuracy:.3f}")
proba = classifier.predict_proba(sequences[450:451])[0]
print("class probabilities of the first held-out sequence:",
      ", ".join(f"{label}={p:.3f}" for label, p in zip(classifier.classes_, proba)))
