"""
Classifying multivariate sequences
==================================

Recognise an activity from a wrist-worn accelerometer: each sample is two
seconds of three-axis acceleration, a sequence of shape
``(n_timesteps, 3)``. An :class:`~sklstm.LSTMClassifier` reads the whole
sequence and gives a probability per class with ``predict_proba``; a
confusion matrix shows which activities it mixes up.
"""

# %%
# Simulated accelerometer recordings
# ----------------------------------
# Four activities, 50 readings per sequence (25 Hz for two seconds), three
# axes. Walking and running are periodic with different step rates and
# strengths; climbing stairs looks like walking with an extra upward push on
# the vertical axis every step; resting is noise around gravity. Each
# recording has its own phase, rate and a random device tilt, so no single
# timestep gives the answer away.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, log_loss
from sklearn.model_selection import train_test_split

from sklstm import LSTMClassifier

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # few epochs

ACTIVITIES = np.array(["resting", "walking", "stairs", "running"])
rng = np.random.RandomState(0)
n_samples, n_timesteps = 600, 50
t = np.arange(n_timesteps) / 25.0  # seconds


def record(activity):
    """One (n_timesteps, 3) recording: x, y (horizontal) and z (vertical)."""
    step_rate = {"resting": 0.0, "walking": 1.8, "stairs": 1.5,
                 "running": 2.8}[activity] * rng.uniform(0.85, 1.15)
    strength = {"resting": 0.0, "walking": 0.35, "stairs": 0.35,
                "running": 0.8}[activity]
    phase = rng.uniform(0, 2 * np.pi)
    step = np.sin(2 * np.pi * step_rate * t + phase)
    x = 0.5 * strength * np.sin(np.pi * step_rate * t + phase)  # sway
    y = 0.3 * strength * step
    z = 1.0 + strength * step  # gravity plus the bounce of each step
    if activity == "stairs":
        z += 0.25 * np.clip(step, 0, None)  # push up on every step
    signal = np.column_stack([x, y, z])
    tilt = rng.normal(scale=0.15, size=3)  # how the device sits on the wrist
    return signal + tilt + rng.normal(scale=0.15, size=signal.shape)


labels = rng.choice(ACTIVITIES, size=n_samples)
X = np.stack([record(activity) for activity in labels])
print(f"X: {X.shape} (n_samples, n_timesteps, n_features); "
      f"activities: {', '.join(ACTIVITIES)}")

# %%
# Train
# -----
# String labels work as in any scikit-learn classifier. Four classes give a
# softmax output over ``classes_`` (sorted labels).
X_train, X_test, y_train, y_test = train_test_split(
    X, labels, test_size=0.25, stratify=labels, random_state=0
)
clf = LSTMClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                     batch_size=32, max_iter=40, random_state=0)
clf.fit(X_train, y_train)

# %%
# Probabilities and accuracy
# --------------------------
# ``predict_proba`` has one column per entry of ``classes_``, and each row
# sums to one; ``predict`` picks the most probable class.
proba = clf.predict_proba(X_test)
y_pred = clf.predict(X_test)
print("classes_:", clf.classes_)
print("probabilities of the first test sequence:",
      np.round(proba[0], 3), f"(true: {y_test[0]})")
print(f"test accuracy: {accuracy_score(y_test, y_pred):.3f}")
print(f"test log-loss: {log_loss(y_test, proba, labels=clf.classes_):.3f}")

# %%
# Where the mistakes are
# ----------------------
# Walking and climbing stairs differ only by a small push per step, so that
# is where the errors gather.
fig, (ax_signal, ax_matrix) = plt.subplots(1, 2, figsize=(10, 4))
for activity, color in zip(ACTIVITIES, ["0.5", "tab:blue", "tab:green",
                                        "tab:red"]):
    first = np.flatnonzero(labels == activity)[0]
    ax_signal.plot(t, X[first, :, 2], color=color, label=activity)
ax_signal.set_xlabel("time (s)")
ax_signal.set_ylabel("vertical acceleration (g)")
ax_signal.set_title("One recording per activity (z axis)")
ax_signal.legend(fontsize="small")
ConfusionMatrixDisplay.from_predictions(
    y_test, y_pred, labels=ACTIVITIES, ax=ax_matrix, colorbar=False
)
ax_matrix.set_title("Confusion matrix on the test set")
fig.tight_layout()
plt.show()
