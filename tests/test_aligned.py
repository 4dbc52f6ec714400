"""Workspaces that start on a cache line (``sklstm/_aligned.py``)."""

import gc

import numpy as np
import pytest

from sklstm._aligned import CACHE_LINE, empty_aligned
from sklstm._backends import _cpu, _cpu_steps
from sklstm._base import time_major_batch
from sklstm._network import LSTMNetwork


@pytest.mark.parametrize("shape", [(50, 64, 256), (3, 7), 13, (1,), (2, 0, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.intp])
def test_empty_aligned_starts_on_a_cache_line(shape, dtype):
    a = empty_aligned(shape, dtype)
    expected_shape = (shape,) if isinstance(shape, int) else shape
    assert a.shape == expected_shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    if a.size:
        assert a.ctypes.data % CACHE_LINE == 0


def test_empty_aligned_other_alignment_and_lifetime():
    a = empty_aligned((4, 3), np.float64, alignment=256)
    assert a.ctypes.data % 256 == 0
    a[...] = np.arange(12).reshape(4, 3)
    gc.collect()  # the view keeps its buffer alive
    np.testing.assert_array_equal(a.ravel(), np.arange(12))


def test_the_fits_workspaces_start_on_a_cache_line():
    network = LSTMNetwork(n_features=3, hidden_layer_sizes=(6, 5),
                          n_outputs=1, bidirectional=True)
    plan = _cpu_steps._Plan(network, 9, 11, np.dtype(np.float32))
    arrays = [plan.draw, plan.dhead_input, plan.head_input]
    arrays += [a for a in plan.concat if a is not None]
    for ld in (ld for lds in plan.layers for ld in lds):
        arrays += [ld.gates, ld.cells, ld.h_n, ld.c_n, ld.step_gates, ld.xh,
                   ld.W_cat_t, ld.dgates_step, ld.dh_rec, ld.dc_state]
        arrays += [a for a in (ld.dh_n, ld.dX, ld.weight_grad_work) if a is not None]
    assert all(a.ctypes.data % CACHE_LINE == 0 for a in arrays)
    pool = _cpu._WorkspacePool()
    assert pool.take((40, 9, 24), np.dtype(np.float32)).ctypes.data % CACHE_LINE == 0
    X = np.random.default_rng(0).standard_normal((30, 8, 3)).astype(np.float32)
    lengths = np.full(30, 8, dtype=np.intp)
    X_batch, _, _ = time_major_batch(X, lengths, np.arange(5, 25), True)
    assert X_batch.ctypes.data % CACHE_LINE == 0
    np.testing.assert_array_equal(X_batch, X[5:25].transpose(1, 0, 2))
