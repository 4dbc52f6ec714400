"""The workflows users run: search, pipelines, persistence, threads, Dask."""

import pickle
import subprocess
import sys
import warnings

import cloudpickle
import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from sklstm import LSTMClassifier, LSTMRegressor
from sklstm.preprocessing import SequenceScaler


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _sequences(rng, n=80, n_steps=8, n_features=3):
    X = 5.0 + 3.0 * rng.randn(n, n_steps, n_features)
    return X, X[:, -3:, 0].mean(axis=1) - X[:, 0, 1] / 3


def _search(n_jobs):
    pipeline = make_pipeline(
        SequenceScaler(), LSTMRegressor(max_iter=15, batch_size=16, random_state=0)
    )
    grid = {
        "lstmregressor__hidden_layer_sizes": [(4,), (8,)],
        "lstmregressor__learning_rate_init": [0.003, 0.03],
    }
    return GridSearchCV(pipeline, grid, cv=KFold(2), n_jobs=n_jobs)


def test_grid_search_over_a_pipeline_in_parallel(rng):
    X, y = _sequences(rng)
    parallel = _search(n_jobs=2).fit(X, y)
    serial = _search(n_jobs=1).fit(X, y)
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])
    assert parallel.predict(X).shape == (len(X),)


def test_cross_val_score_and_clone(rng):
    X, y = _sequences(rng)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    fitted = clone(model).fit(X, y)
    fresh = clone(fitted)
    assert not hasattr(fresh, "_params") and fresh.get_params() == model.get_params()


def test_transformed_target_regressor(rng):
    X, y = _sequences(rng)
    model = TransformedTargetRegressor(
        regressor=LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0),
        transformer=StandardScaler(),
    ).fit(X, 1000 * y + 50)
    assert model.predict(X).shape == (len(X),)
    assert abs(model.predict(X).mean() - (1000 * y + 50).mean()) < 1000 * y.std()


def _fitted_models(rng):
    X, y = _sequences(rng, n=40)
    regressor = LSTMRegressor(hidden_layer_sizes=(4, 3), bidirectional=True,
                              max_iter=2, random_state=0).fit(X, y)
    classifier = LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2,
                                random_state=0).fit(X, np.where(y > 1.2, "hi", "lo"))
    return X, [regressor, classifier]


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads),
                                          (cloudpickle.dumps, pickle.loads)])
def test_pickle_round_trip(dumps, loads, rng):
    X, models = _fitted_models(rng)
    for model in models:
        restored = loads(dumps(model))
        np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_joblib_model_predicts_the_same_in_a_fresh_process(rng, tmp_path):
    X, models = _fitted_models(rng)
    np.save(tmp_path / "X.npy", X)
    for index, model in enumerate(models):
        joblib.dump(model, tmp_path / f"model{index}.joblib")
        np.save(tmp_path / f"expected{index}.npy", model.predict(X))
    script = (
        "import sys, joblib, numpy as np\n"
        "X = np.load(sys.argv[1] + '/X.npy')\n"
        "for i in range(2):\n"
        "    model = joblib.load(f'{sys.argv[1]}/model{i}.joblib')\n"
        "    expected = np.load(f'{sys.argv[1]}/expected{i}.npy')\n"
        "    assert (model.predict(X) == expected).all(), i\n"
        "print('identical')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "identical"


def test_pickled_state_is_arrays_and_plain_values(rng):
    _, models = _fitted_models(rng)
    plain = (str, int, float, bool, type(None), np.ndarray, np.generic)

    def check(value, where):
        if isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                check(item, f"{where}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                check(item, f"{where}[{key!r}]")
        else:
            assert isinstance(value, plain), f"{where} is {type(value)}"

    for model in models:
        state = model.__getstate__()
        assert state["_sklstm_version"]
        check(state, type(model).__name__)


def test_loading_a_pickle_from_another_version_warns(rng):
    _, models = _fitted_models(rng)
    state = models[0].__getstate__()
    state["_sklstm_version"] = "0.0.1"
    restored = LSTMRegressor.__new__(LSTMRegressor)
    with pytest.warns(UserWarning, match="sklstm version 0.0.1"):
        restored.__setstate__(state)


def test_read_only_memmap_input(rng, tmp_path):
    X, y = _sequences(rng, n=30)
    joblib.dump((X, y), tmp_path / "data.joblib")
    X_map, y_map = joblib.load(tmp_path / "data.joblib", mmap_mode="r")
    assert not X_map.flags.writeable
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    model.fit(X_map, y_map)
    np.testing.assert_array_equal(model.predict(X_map), model.predict(X))


def _blas_threads():
    return max(info["num_threads"] for info in threadpool_info()
               if info["user_api"] == "blas")


def test_fit_obeys_threadpool_limits(rng, monkeypatch):
    """Inside threadpool_limits(1), every kernel call of every minibatch runs
    on one thread, with BLAS at one thread."""
    from sklstm._backends import _cpu

    seen = []
    original = _cpu.lstm_forward

    def recording(*args, **kwargs):
        seen.append((_blas_threads(), kwargs["n_threads"], kwargs["n_parts"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(_cpu, "lstm_forward", recording)
    X, y = _sequences(rng, n=30)
    with threadpool_limits(1):
        LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, y)
    assert seen and set(seen) == {(1, 1, 1)}


def _threads_during_fit(estimator, X, y):
    """A scorer that reports how many BLAS threads the worker allows."""
    return float(_blas_threads())


def test_parallel_search_does_not_oversubscribe(rng):
    """With n_jobs=2 on 2 cores, each worker's fit gets one BLAS thread."""
    import os

    X, y = _sequences(rng, n=30)
    search = GridSearchCV(
        LSTMRegressor(max_iter=1), {"hidden_layer_sizes": [(2,), (3,)]},
        cv=KFold(2), n_jobs=2, scoring=_threads_during_fit,
    ).fit(X, y)
    share = max(1, (os.cpu_count() or 1) // 2)
    assert search.cv_results_["mean_test_score"].max() <= share


def test_grid_search_on_a_dask_cluster_matches_local(rng):
    distributed = pytest.importorskip("distributed")
    X, y = _sequences(rng)
    local = _search(n_jobs=1).fit(X, y)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster):
            with joblib.parallel_config(backend="dask"):
                on_dask = _search(n_jobs=-1).fit(X, y)
    assert on_dask.best_params_ == local.best_params_
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"])


@pytest.mark.parametrize("n_samples", [1, 31, 32, 33, 1000])
@pytest.mark.parametrize("batch_size", [1, 7, 32, 1024])
def test_minibatch_slices_are_gen_batches(n_samples, batch_size):
    from sklearn.utils import gen_batches

    from sklstm._base import _batches

    assert _batches(n_samples, batch_size) == list(gen_batches(n_samples,
                                                               batch_size))


def test_time_major_batch_of_a_slice_is_that_of_its_rows(rng):
    from sklstm._base import time_major_batch

    X = rng.randn(9, 5, 3)
    lengths = np.full(9, 5)
    rows = slice(2, 7)
    by_slice = time_major_batch(X, lengths, rows, equal_lengths=True)
    by_index = time_major_batch(X, lengths, np.arange(2, 7), equal_lengths=True)
    for a, b in zip(by_slice, by_index):
        np.testing.assert_array_equal(a, b)
    assert by_slice[0].flags.c_contiguous and by_slice[0].shape == (5, 5, 3)
    with pytest.raises(ValueError, match="equal_lengths"):
        time_major_batch(X, lengths, rows)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_time_major_batch_is_numpys_gather(rng, dtype, contiguous):
    # The compiled one-pass gather (C-contiguous float X) and NumPy's two
    # copies (any other X) give the same batch: sorted by length, cut to
    # the longest, time-major.
    from sklstm._base import time_major_batch

    X = (rng.randn(11, 6, 4) * 10).astype(dtype)
    if not contiguous:
        X = np.asfortranarray(X)
    lengths = np.array([6, 2, 5, 5, 1, 3, 4, 4, 6, 2, 3])
    indices = np.array([4, 1, 7, 2, 10])
    X_batch, batch_lengths, order = time_major_batch(X, lengths, indices)
    np.testing.assert_array_equal(order, [2, 7, 10, 1, 4])
    np.testing.assert_array_equal(batch_lengths, [5, 4, 3, 2, 1])
    assert X_batch.flags.c_contiguous and X_batch.dtype == dtype
    np.testing.assert_array_equal(X_batch, X[order, :5].transpose(1, 0, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 40])
def test_gather_time_major_copies_every_step_of_every_row(dtype, n_rows):
    """Whatever the number of rows against the groups the gather copies
    together (16), repeated rows and a cut to fewer steps included."""
    from sklstm._kernels._gather import gather_time_major

    rng = np.random.default_rng(n_rows)
    X = rng.standard_normal((23, 9, 3)).astype(dtype)
    rows = rng.integers(0, 23, n_rows).astype(np.intp)
    out = np.full((7, n_rows, 3), np.nan, dtype)
    gather_time_major(X, rows, out)
    np.testing.assert_array_equal(out, X[rows, :7].transpose(1, 0, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_time_major_checks_its_arguments(dtype):
    from sklstm._kernels._gather import gather_time_major

    X = np.arange(2 * 3 * 2, dtype=dtype).reshape(2, 3, 2)
    rows = np.array([1, 0], dtype=np.intp)
    out = np.empty((3, 2, 2), dtype)
    gather_time_major(X, rows, out)
    np.testing.assert_array_equal(out, X[[1, 0]].transpose(1, 0, 2))
    with pytest.raises(ValueError, match=r"out has shape \(4, 2, 2\)"):
        gather_time_major(X, rows, np.empty((4, 2, 2), dtype))
    with pytest.raises(ValueError, match="out has shape"):
        gather_time_major(X, rows, np.empty((3, 3, 2), dtype))
    with pytest.raises(ValueError, match=r"row 2 is outside \[0, 2\)"):
        gather_time_major(X, np.array([0, 2], dtype=np.intp), out)
    with pytest.raises(ValueError, match="outside"):
        gather_time_major(X, np.array([-1, 0], dtype=np.intp), out)
    gather_time_major(X, rows[:0], np.empty((3, 0, 2), dtype))  # nothing to do


@pytest.mark.parametrize("variable", [False, True])
def test_predict_in_several_batches_is_predict_row_by_row(rng, monkeypatch,
                                                          variable):
    import sklstm._base

    X = rng.randn(23, 6, 2)
    if variable:  # and in an order that is not by length
        X = [x[: 1 + i % 6] for i, x in enumerate(X)]
    y = rng.randn(23)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3,
                          random_state=0).fit(X, y)
    monkeypatch.setattr(sklstm._base, "_PREDICT_MAX_BATCH", 5)
    in_batches = model.predict(X)
    one_by_one = np.concatenate([model.predict(X[i : i + 1]) for i in range(23)])
    np.testing.assert_allclose(in_batches, one_by_one, rtol=1e-6, atol=1e-7)
