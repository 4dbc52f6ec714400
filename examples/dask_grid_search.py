"""
Grid search on a Dask cluster
=============================

The same ``GridSearchCV`` that runs on one machine with ``n_jobs`` runs on a
Dask cluster through joblib's ``dask`` backend: each fit becomes a Dask task.
Here the cluster is a ``LocalCluster`` of two single-threaded worker
processes; to use a real cluster, replace it with
``Client("tcp://scheduler-address:8786")`` (workers need sklstm installed).
"""

# %%
import joblib
import numpy as np
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from sklstm import LSTMRegressor
from sklstm.preprocessing import SequenceScaler

rng = np.random.RandomState(0)
X = rng.randn(200, 12, 2)
y = X[:, -4:, 0].mean(axis=1) - 0.5 * X[:, 0, 1]

search = GridSearchCV(
    make_pipeline(SequenceScaler(),
                  LSTMRegressor(max_iter=20, batch_size=32, random_state=0)),
    {"lstmregressor__hidden_layer_sizes": [(8,), (16,)],
     "lstmregressor__learning_rate_init": [0.003, 0.03]},
    cv=KFold(3),
    n_jobs=-1,
)

if __name__ == "__main__":
    # One thread per worker: BLAS inside each fit must not oversubscribe.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        with joblib.parallel_config(backend="dask"):
            search.fit(X, y)
    print("best parameters:", search.best_params_)
    print(f"best cross-validated R^2: {search.best_score_:.3f}")
