"""
Saving a model and predicting in a fresh process
================================================

A fitted sklstm estimator pickles to NumPy arrays and plain Python values,
plus the sklstm version that wrote it. Save it with :func:`joblib.dump`, and
any process with sklstm installed can load it with :func:`joblib.load` and
predict -- no GPU, compiler or training data needed.

.. warning::

   Loading a pickle (``joblib.load``, ``pickle.load``) can run arbitrary
   code. Only load model files you created yourself or that come from a
   source you trust.
"""

# %%
# Train a pipeline and save it
# ----------------------------
import pathlib
import subprocess
import sys
import tempfile
import warnings

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline

import sklstm
from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # few epochs

rng = np.random.RandomState(0)
X = rng.randn(300, 12, 2)
y = X[:, -3:, 0].mean(axis=1) - 0.5 * X[:, 0, 1]
model = make_pipeline(
    SequenceScaler(),
    LSTMRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                  max_iter=20, random_state=0),
).fit(X[:250], y[:250])

# A temporary folder keeps this example from leaving files behind; in real
# use, pick a lasting path.
folder = pathlib.Path(tempfile.mkdtemp(prefix="sklstm_example_"))
model_path = folder / "model.joblib"
data_path = folder / "X_new.npy"
joblib.dump(model, model_path)
np.save(data_path, X[250:])
print(f"saved the model: {model_path.stat().st_size / 1024:.1f} KiB")

# %%
# Load and predict in a new Python process
# ----------------------------------------
# The script below is what a separate service or batch job would run. It is
# started with the same interpreter (``sys.executable``), so it sees the same
# installed sklstm; it imports nothing from this example.
script = f"""
import joblib
import numpy as np

model = joblib.load({str(model_path)!r})   # only load files you trust
X_new = np.load({str(data_path)!r})
np.save({str(folder / "y_new.npy")!r}, model.predict(X_new))
print(type(model[-1]).__name__, "loaded and predicted", len(X_new), "sequences")
"""
result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, check=True)
print("fresh process says:", result.stdout.strip())

y_fresh = np.load(folder / "y_new.npy")
y_here = model.predict(X[250:])
print("predictions agree with this process:", np.array_equal(y_fresh, y_here))

# %%
# Versions
# --------
# The pickle records the sklstm version; loading it under another version
# warns, as scikit-learn does for its own estimators. Keep the training
# environment's versions (``pip freeze``) with the model file, or retrain
# after upgrading.
print("this model file was written by sklstm", sklstm.__version__)

# %%
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(y[250:], y_fresh, s=14, label="fresh process")
ax.plot([y.min(), y.max()], [y.min(), y.max()], color="0.5", ls="--",
        label="perfect prediction")
ax.set_xlabel("true target")
ax.set_ylabel("prediction of the loaded model")
ax.legend()
fig.tight_layout()
plt.show()

for path in folder.iterdir():
    path.unlink()
folder.rmdir()
