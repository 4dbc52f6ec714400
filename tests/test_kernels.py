"""The Cython CPU backend against the readable NumPy reference backend."""

import functools

import numpy as np
import pytest

from sklstm._backends._cpu import CPUBackend
from sklstm._backends._reference import ReferenceBackend
from sklstm._kernels import _lstm_fast

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]

# (T, n_in, H, lengths): lengths sorted in descending order, lengths[0] == T.
CASES = {
    "equal": (7, 3, 5, [7, 7, 7, 7]),
    "variable": (9, 4, 6, [9, 8, 8, 5, 3, 1, 1]),
    "batch_of_one": (6, 2, 3, [6]),
    "one_step": (1, 3, 4, [1, 1, 1]),
    "H1_I1": (5, 1, 1, [5, 4, 2, 1]),
    # 9 input features: dW_ih = dgates.T @ X runs in sklstm's TN kernel from
    # one vector of columns on (8 floats with AVX2), plus a leftover column.
    "wide_input": (4, 9, 6, [4, 3, 3, 1]),
    # W_ih past 32 KiB (4H x I = 256 x 40): dX = dgates @ W_ih goes to BLAS.
    "many_inputs": (3, 40, 64, [3, 2, 2]),
    # W_hh beyond the 128 KiB that the per-step products always take on
    # packed panels (4H x H at H = 93): packed panels for few rows per piece
    # and BLAS from 256 rows per piece on (520 rows: also when cut in two)
    # in the AVX2 build, packed panels at any rows in the AVX-512 build,
    # BLAS in the baseline build.
    "large_weights": (4, 3, 93, [4, 4, 3, 1]),
    "large_weights_many_rows": (3, 2, 93, [3] * 280 + [2] * 240),
    # Gates past 1 MiB in float32 (12 x 100 x 4H at H = 64): the cell
    # backward prefetches the rows ahead of it, across the step boundaries
    # of rows of several lengths.
    "prefetched_rows": (12, 3, 64, [12] * 40 + [9] * 30 + [5] * 20 + [1] * 10),
}


# The kernels' own sigmoid/tanh, against NumPy in a wider type. For |x| up to
# CLAMP the sigmoid is exact to a few ulp; below -CLAMP it stays at
# sigmoid(-CLAMP), tiny but not accurate in ulps (exp(-x) stops at exp(CLAMP)).
WIDER = {np.float32: np.float64, np.float64: np.longdouble}
CLAMP = {np.float32: 80.0, np.float64: 700.0}


def _simd_builds():
    """The kernel builds (see sklstm/_kernels/_dispatch.py) this CPU runs."""
    import importlib

    levels = ["baseline", "avx2", "avx512"]
    supported = levels.index(_lstm_fast.cpu_simd_level())
    builds = [pytest.param(_lstm_fast, id="baseline")]
    for level in levels[1 : supported + 1]:
        try:
            module = importlib.import_module(f"sklstm._kernels._lstm_fast_{level}")
        except ImportError:
            continue
        builds.append(pytest.param(module, id=level))
    return builds


SIMD_BUILDS = _simd_builds()


def _activations(x, kernels=_lstm_fast):
    sigmoid = np.empty_like(x)
    tanh = np.empty_like(x)
    kernels._activations_memview(x, sigmoid, tanh)
    return sigmoid, tanh


def test_dispatch_takes_the_widest_build():
    import os

    from sklstm._kernels import _dispatch

    if os.environ.get("SKLSTM_SIMD"):
        pytest.skip("SKLSTM_SIMD asks for a build explicitly")
    assert _dispatch.kernels is SIMD_BUILDS[-1].values[0]


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reverse", [False, True])
def test_every_simd_build_matches_reference(kernels, name, reverse, monkeypatch):
    from sklstm._backends import _cpu

    monkeypatch.setattr(_cpu, "lstm_forward", kernels.lstm_forward)
    monkeypatch.setattr(_cpu, "lstm_backward", kernels.lstm_backward)
    for dtype in DTYPES:
        X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES[name], dtype)
        results = []
        for backend in (CPUBackend(), ReferenceBackend()):
            hidden, h_n, c_n, cache = backend.forward(
                X, lengths, W_ih, W_hh, bias, reverse=reverse
            )
            results.append((hidden, h_n, c_n, *backend.backward(dhidden, cache)))
        for actual, expected in zip(*results):
            np.testing.assert_allclose(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_accurate_to_few_ulp(dtype, kernels):
    tiny = np.logspace(-30, 2.8, 4000)
    x = np.concatenate(
        [np.linspace(-100, 100, 100_001), tiny, -tiny, [0.0, 1e30, -1e30]]
    )
    x = x.astype(dtype)
    sigmoid, tanh = _activations(x, kernels)

    x_wide = x.astype(WIDER[dtype])
    with np.errstate(over="ignore"):
        sigmoid_exact = 1 / (1 + np.exp(-x_wide))
    tanh_exact = np.tanh(x_wide)

    def ulp_error(actual, exact):
        spacing = np.spacing(np.abs(exact.astype(dtype))).astype(exact.dtype)
        return np.abs(actual.astype(exact.dtype) - exact) / spacing

    inside = np.abs(x) <= CLAMP[dtype]
    assert ulp_error(sigmoid, sigmoid_exact)[inside].max() <= 4
    assert np.all(sigmoid[x > CLAMP[dtype]] == 1)
    assert np.all(sigmoid[x < -CLAMP[dtype]] < 1e-30)
    assert ulp_error(tanh, tanh_exact).max() <= 4


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_special_values(dtype, kernels):
    x = np.array([np.inf, -np.inf, 0.0, np.nan], dtype=dtype)
    sigmoid, tanh = _activations(x, kernels)
    assert sigmoid[0] == 1 and 0 <= sigmoid[1] < 1e-30 and sigmoid[2] == 0.5
    np.testing.assert_array_equal(tanh[:3], [1.0, -1.0, 0.0])
    assert np.isnan(sigmoid[3]) and np.isnan(tanh[3])


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
def test_fma_rounds_counts_its_multiply_adds(kernels):
    # rounds x threads x 12 vectors of the build's float32 lanes, 2 FLOPs each
    lanes = {"_lstm_fast_avx512": 16, "_lstm_fast_avx2": 8}.get(
        kernels.__name__.rsplit(".", 1)[-1], 4)
    assert kernels.fma_rounds(1000, 2) == 1000 * 2 * 12 * lanes * 2
    assert kernels.fma_rounds(0) == 0
    for rounds, n_threads in [(-1, 1), (10, 0)]:
        with pytest.raises(ValueError, match="rounds >= 0 and n_threads >= 1"):
            kernels.fma_rounds(rounds, n_threads)


def _problem(T, n_in, H, lengths, dtype, seed=0):
    rng = np.random.default_rng(seed)
    B = len(lengths)
    lengths = np.asarray(lengths, dtype=np.intp)
    X = rng.standard_normal((T, B, n_in)).astype(dtype)
    W_ih = (0.5 * rng.standard_normal((4 * H, n_in))).astype(dtype)
    W_hh = (0.5 * rng.standard_normal((4 * H, H))).astype(dtype)
    bias = (0.2 * rng.standard_normal(4 * H)).astype(dtype)
    dhidden = rng.standard_normal((T, B, H)).astype(dtype)
    return X, lengths, W_ih, W_hh, bias, dhidden


def _padding_mask(T, lengths):
    """(T, B) True where row b is padding at time t."""
    return np.arange(T)[:, None] >= np.asarray(lengths)[None, :]


def _assert_close(actual, expected, dtype):
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_match_reference(case, reverse, dtype):
    T, n_in, H, lengths = CASES[case]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, dtype)
    args = (X, lengths, W_ih, W_hh, bias)

    hidden, h_n, c_n, cache = CPUBackend().forward(*args, reverse=reverse)
    ref_hidden, ref_h_n, ref_c_n, ref_cache = ReferenceBackend().forward(
        *args, reverse=reverse
    )
    for actual, expected in [(hidden, ref_hidden), (h_n, ref_h_n), (c_n, ref_c_n)]:
        _assert_close(actual, expected, dtype)

    grads = CPUBackend().backward(dhidden, cache)
    ref_grads = ReferenceBackend().backward(dhidden, ref_cache)
    assert len(grads) == 4
    for actual, expected in zip(grads, ref_grads):
        _assert_close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_saturated_gates_match_reference(reverse, dtype):
    # Huge pre-activations (unscaled data) hit the clamps of the activations.
    T, n_in, H, lengths = CASES["variable"]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, dtype)
    X = X * dtype(1e4)
    args = (X, lengths, W_ih, W_hh, bias, reverse)
    out = CPUBackend().forward(*args)
    ref = ReferenceBackend().forward(*args)
    grads = CPUBackend().backward(dhidden, out[3])
    ref_grads = ReferenceBackend().backward(dhidden, ref[3])
    for actual, expected in zip(out[:3] + grads[:1], ref[:3] + ref_grads[:1]):
        _assert_close(actual, expected, dtype)
    # The weight gradients sum dgates * X with X ~ 1e4, and the saturated
    # gates' derivatives, i * (1 - i), lose most digits to cancellation in
    # float32 in both backends: compare relative to the largest entry.
    atol = 1e-3 if dtype == np.float32 else 1e-12
    for actual, expected in zip(grads[1:], ref_grads[1:]):
        scale = max(np.abs(expected).max(), 1.0)
        np.testing.assert_allclose(actual / scale, expected / scale, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_is_zero_and_ignored(reverse, dtype):
    T, n_in, H, lengths = CASES["variable"]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, dtype)
    pad = _padding_mask(T, lengths)
    # Whatever sits in the padding of X and dhidden must not matter.
    X_nan = X.copy()
    X_nan[pad] = np.nan
    X_inf = X.copy()
    X_inf[pad] = np.inf
    dhidden_nan = dhidden.copy()
    dhidden_nan[pad] = np.nan

    backend = CPUBackend()
    hidden, h_n, c_n, cache = backend.forward(X, lengths, W_ih, W_hh, bias, reverse)
    grads = backend.backward(dhidden, cache)
    assert not hidden[pad].any()
    assert not grads[0][pad].any()  # dX

    for X_pad in (X_nan, X_inf):
        out = backend.forward(X_pad, lengths, W_ih, W_hh, bias, reverse)
        for actual, expected in zip(out[:3], (hidden, h_n, c_n)):
            np.testing.assert_allclose(actual, expected, **TOL[dtype])
        grads_pad = backend.backward(dhidden_nan, out[3])
        for actual, expected in zip(grads_pad, grads):
            np.testing.assert_allclose(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", ["equal", "variable"])
def test_inference_matches_training(case, reverse, dtype):
    T, n_in, H, lengths = CASES[case]
    X, lengths, W_ih, W_hh, bias, _ = _problem(T, n_in, H, lengths, dtype)
    args = (X, lengths, W_ih, W_hh, bias, reverse)
    backend = CPUBackend()

    hidden, h_n, c_n, cache = backend.forward(*args, training=True)
    inf_hidden, inf_h_n, inf_c_n, inf_cache = backend.forward(*args, training=False)
    assert inf_cache is None
    # Both compute x_t @ W_ih.T + h_prev @ W_hh.T as one GEMM per step over
    # [x_t | h_prev]: training only stores more, so the numbers are the same.
    np.testing.assert_array_equal(inf_hidden, hidden)
    np.testing.assert_array_equal(inf_h_n, h_n)
    np.testing.assert_array_equal(inf_c_n, c_n)

    # return_sequences=False: no hidden, same final states.
    for training in (False, True):
        none_hidden, seq_h_n, seq_c_n, seq_cache = backend.forward(
            *args, training=training, return_sequences=False
        )
        assert none_hidden is None
        assert (seq_cache is None) == (not training)
        # Bit for bit the same as the same mode with the sequence kept.
        np.testing.assert_array_equal(seq_h_n, inf_h_n if not training else h_n)
        np.testing.assert_array_equal(seq_c_n, inf_c_n if not training else c_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_read_only_inputs(reverse, dtype):
    T, n_in, H, lengths = CASES["variable"]
    arrays = _problem(T, n_in, H, lengths, dtype)
    for array in arrays:
        array.flags.writeable = False
    X, lengths, W_ih, W_hh, bias, dhidden = arrays
    args = (X, lengths, W_ih, W_hh, bias, reverse)

    out = CPUBackend().forward(*args)
    grads = CPUBackend().backward(dhidden, out[3])
    ref = ReferenceBackend().forward(*args)
    ref_grads = ReferenceBackend().backward(dhidden, ref[3])
    for actual, expected in zip(out[:3] + grads, ref[:3] + ref_grads):
        _assert_close(actual, expected, dtype)


def test_dtype_follows_X_and_inputs_are_converted():
    T, n_in, H, lengths = CASES["variable"]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, np.float64)
    ref = ReferenceBackend().forward(X, lengths, W_ih, W_hh, bias)
    ref_grads = ReferenceBackend().backward(dhidden, ref[3])

    # float32 X decides float32, even with float64 weights and int32 lengths.
    out = CPUBackend().forward(
        X.astype(np.float32), lengths.astype(np.int32), W_ih, W_hh, bias
    )
    assert all(a.dtype == np.float32 for a in out[:3])
    grads = CPUBackend().backward(dhidden, out[3])
    assert all(g.dtype == np.float32 for g in grads)
    for actual, expected in zip(out[:3] + grads, ref[:3] + ref_grads):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)

    # Non-contiguous float64 input (a transposed batch-major array).
    X_batch_major = np.ascontiguousarray(X.transpose(1, 0, 2))
    out = CPUBackend().forward(
        X_batch_major.transpose(1, 0, 2), lengths, W_ih.T.copy().T, W_hh, bias
    )
    grads = CPUBackend().backward(np.asfortranarray(dhidden), out[3])
    for actual, expected in zip(out[:3] + grads, ref[:3] + ref_grads):
        np.testing.assert_allclose(actual, expected, **TOL[np.float64])


def test_lengths_shorter_than_T():
    # The kernels do not need lengths[0] == T: padding-only steps are skipped.
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(6, 2, 3, [4, 2, 2], np.float64)
    for reverse in (False, True):
        out = CPUBackend().forward(X, lengths, W_ih, W_hh, bias, reverse)
        ref = ReferenceBackend().forward(X, lengths, W_ih, W_hh, bias, reverse)
        grads = CPUBackend().backward(dhidden, out[3])
        ref_grads = ReferenceBackend().backward(dhidden, ref[3])
        for actual, expected in zip(out[:3] + grads, ref[:3] + ref_grads):
            _assert_close(actual, expected, np.float64)


@pytest.mark.parametrize(
    "lengths, match",
    [([3, 5, 2], "descending"), ([5, 6, 2], "outside"), ([5, 3, -1], "outside")],
)
def test_bad_lengths_raise(lengths, match):
    X, _, W_ih, W_hh, bias, _ = _problem(5, 2, 3, [5, 5, 5], np.float64)
    with pytest.raises(ValueError, match=match):
        CPUBackend().forward(X, np.asarray(lengths), W_ih, W_hh, bias)


def test_bad_weight_shape_raises():
    X, lengths, W_ih, W_hh, bias, _ = _problem(5, 2, 3, [5, 5], np.float64)
    with pytest.raises(ValueError, match="W_ih"):
        CPUBackend().forward(X, lengths, W_ih[:, :1], W_hh, bias)
    with pytest.raises(ValueError, match="bias"):
        CPUBackend().forward(X, lengths, W_ih, W_hh, bias[:-1])


def test_bad_dh_n_shape_raises():
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(5, 2, 3, [5, 4], np.float64)
    with pytest.raises(ValueError, match=r"dh_n has shape \(3, 3\), expected "
                                         r"\(2, 3\)"):
        _run_kernels(X, lengths, W_ih, W_hh, bias, None, False, 1,
                     dh_n=np.zeros((3, 3)))


@pytest.mark.parametrize("reverse", [False, True])
def test_matches_torch_packed_lstm(reverse):
    """The outside oracle: PyTorch's nn.LSTM on a packed batch, float64."""
    torch = pytest.importorskip("torch")
    T, n_in, H, lengths = CASES["variable"]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, np.float64)
    lstm = torch.nn.LSTM(n_in, H, bidirectional=True).double()
    suffix = "_reverse" if reverse else ""
    direction = int(reverse)
    with torch.no_grad():
        getattr(lstm, "weight_ih_l0" + suffix).copy_(torch.from_numpy(W_ih))
        getattr(lstm, "weight_hh_l0" + suffix).copy_(torch.from_numpy(W_hh))
        getattr(lstm, "bias_ih_l0" + suffix).copy_(torch.from_numpy(bias))
        getattr(lstm, "bias_hh_l0" + suffix).zero_()
    X_t = torch.from_numpy(X).requires_grad_(True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(X_t, torch.from_numpy(lengths))
    packed_out, (h_n_t, c_n_t) = lstm(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, total_length=T)
    out_t = out_t[:, :, direction * H : (direction + 1) * H]
    (out_t * torch.from_numpy(dhidden)).sum().backward()

    hidden, h_n, c_n, cache = CPUBackend().forward(
        X, lengths, W_ih, W_hh, bias, reverse
    )
    dX, dW_ih, dW_hh, dbias = CPUBackend().backward(dhidden, cache)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hidden, out_t.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, h_n_t[direction].detach().numpy(), **tol)
    np.testing.assert_allclose(c_n, c_n_t[direction].detach().numpy(), **tol)
    np.testing.assert_allclose(dX, X_t.grad.numpy(), **tol)
    np.testing.assert_allclose(
        dW_ih, getattr(lstm, "weight_ih_l0" + suffix).grad.numpy(), **tol
    )
    np.testing.assert_allclose(
        dW_hh, getattr(lstm, "weight_hh_l0" + suffix).grad.numpy(), **tol
    )
    np.testing.assert_allclose(
        dbias, getattr(lstm, "bias_ih_l0" + suffix).grad.numpy(), **tol
    )


@pytest.mark.parametrize("with_dhidden", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_dh_n_matches_torch_and_finite_differences(reverse, with_dhidden):
    """The outside oracle for ``dh_n``: PyTorch's gradients of
    sum(h_n * dh_n) (+ sum(hidden * dhidden)) on a packed batch with an
    empty sequence, and central differences of the same loss, float64."""
    torch = pytest.importorskip("torch")
    T, n_in, H, lengths = CASES["variable"]
    lengths = list(lengths) + [0]
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths, np.float64)
    dh_n = np.random.default_rng(7).standard_normal((len(lengths), H))
    above = dhidden if with_dhidden else None
    hidden, h_n, c_n, dX, dW_ih, dW_hh, dbias = _run_kernels(
        X, lengths, W_ih, W_hh, bias, above, reverse, 1, dh_n=dh_n)

    rows = lengths > 0  # PyTorch packs non-empty sequences only
    lstm = torch.nn.LSTM(n_in, H, bidirectional=True).double()
    suffix = "_reverse" if reverse else ""
    with torch.no_grad():
        getattr(lstm, "weight_ih_l0" + suffix).copy_(torch.from_numpy(W_ih))
        getattr(lstm, "weight_hh_l0" + suffix).copy_(torch.from_numpy(W_hh))
        getattr(lstm, "bias_ih_l0" + suffix).copy_(torch.from_numpy(bias))
        getattr(lstm, "bias_hh_l0" + suffix).zero_()
    X_t = torch.from_numpy(X[:, rows]).requires_grad_(True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        X_t, torch.from_numpy(lengths[rows]))
    packed_out, (h_n_t, _) = lstm(packed)
    loss = (h_n_t[int(reverse)] * torch.from_numpy(dh_n[rows])).sum()
    if with_dhidden:
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out,
                                                          total_length=T)
        loss = loss + (out_t[:, :, int(reverse) * H:(int(reverse) + 1) * H]
                       * torch.from_numpy(dhidden[:, rows])).sum()
    loss.backward()
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dX[:, rows], X_t.grad.numpy(), **tol)
    assert (dX[:, ~rows] == 0).all()
    for name, grad in (("weight_ih_l0", dW_ih), ("weight_hh_l0", dW_hh),
                       ("bias_ih_l0", dbias)):
        np.testing.assert_allclose(
            grad, getattr(lstm, name + suffix).grad.numpy(), **tol)

    def loss_at(W):
        hidden, h_n = _run_kernels(X, lengths, W_ih, W, bias, dhidden,
                                   reverse, 1)[:2]
        total = (h_n * dh_n).sum()
        return total + (hidden * dhidden).sum() if with_dhidden else total

    for index in [(0, 0), (H + 1, 2), (4 * H - 1, H - 1)]:
        step = np.zeros_like(W_hh)
        step[index] = 1e-6
        numeric = (loss_at(W_hh + step) - loss_at(W_hh - step)) / 2e-6
        np.testing.assert_allclose(dW_hh[index], numeric, rtol=1e-6, atol=1e-9)


def test_threads_run_concurrently_and_agree():
    # The kernels release the GIL and keep all state in the arrays passed in,
    # so concurrent calls from threads must give the serial results.
    from concurrent.futures import ThreadPoolExecutor

    T, n_in, H, lengths = CASES["variable"]
    problems = [
        _problem(T, n_in, H, lengths, np.float64, seed=seed) for seed in range(6)
    ]

    def run(problem, reverse):
        X, lengths, W_ih, W_hh, bias, dhidden = problem
        backend = CPUBackend()
        hidden, h_n, c_n, cache = backend.forward(X, lengths, W_ih, W_hh, bias, reverse)
        return (hidden, h_n, c_n) + backend.backward(dhidden, cache)

    jobs = [(problem, reverse) for problem in problems for reverse in (False, True)]
    serial = [run(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda job: run(*job), jobs))
    for outs_serial, outs_threaded in zip(serial, threaded):
        for expected, actual in zip(outs_serial, outs_threaded):
            np.testing.assert_allclose(actual, expected, **TOL[np.float64])


def _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, reverse, n_threads,
                 W_hr=None, n_parts=0, chunked_grads=-1, packed_weights=False,
                 own_weight_grads=-1, kernels=_lstm_fast, input_grad=True,
                 dgates_in_place=False, dh_n=None, hidden_in_block=False,
                 dhidden_add=None, work=None):
    """lstm_forward + lstm_backward of the build ``kernels`` called directly
    with ``n_threads`` (and ``n_parts`` pieces of work; 0: one per thread).
    With ``packed_weights`` they get the workspaces the backend gives:
    packed panels of the weights, and without a projection the one product
    per step on [x_t | h_prev]. ``own_weight_grads`` is passed to backward,
    with the workspace it needs. Without ``input_grad``, backward gets no
    ``dX`` (returned as None). With ``dgates_in_place``, backward writes
    dgates over the gates. ``dh_n`` and ``dhidden_add`` are passed to
    backward. With ``hidden_in_block``, forward writes ``hidden`` into
    columns [2, 2 + P) of a wider array of NaN (returned as that view).
    ``work``: the ``weight_grad_work`` to pass (else one of NaN, if any)."""
    T, B, n_in = X.shape
    P = W_hh.shape[1]
    H = P if W_hr is None else W_hr.shape[1]
    dtype = X.dtype
    fwd_proj, bwd_proj, grads = {}, {}, []
    if packed_weights:
        fwd_proj["W_hh_t"] = np.empty((P, 4 * H), dtype)
        if W_hr is None:
            fwd_proj.update(xh=np.empty((B, n_in + H), dtype),
                            W_cat_t=np.empty((n_in + H, 4 * H), dtype))
        bwd_proj["W_hh_packed"] = np.empty((4 * H, P), dtype)
    if packed_weights or own_weight_grads == 1:
        size = kernels.weight_grad_workspace_size(4 * H, n_in, P,
                                                  n_parts or n_threads,
                                                  dtype.itemsize)
        bwd_proj["weight_grad_work"] = np.full(size, np.nan, dtype)
    if work is not None:
        bwd_proj["weight_grad_work"] = work
    if W_hr is not None:
        fwd_proj.update(W_hr=W_hr, m_step=np.empty((B, H), dtype))
        grads = [np.empty(W_hr.shape, dtype)]
        bwd_proj.update(W_hr=W_hr, dW_hr=grads[0],
                        dh_seq=np.empty((T, B, P), dtype),
                        m_seq=np.empty((T, B, H), dtype),
                        dh_step=np.empty((B, P), dtype),
                        dm_step=np.empty((B, H), dtype))
    gates = np.empty((T, B, 4 * H), dtype)
    cells, hidden = np.empty((T, B, H), dtype), np.empty((T, B, P), dtype)
    if hidden_in_block:
        hidden = np.full((T, B, P + 5), np.nan, dtype)[:, :, 2:2 + P]
    h_n, c_n = np.empty((B, P), dtype), np.empty((B, H), dtype)
    kernels.lstm_forward(X, lengths, W_ih, W_hh, bias, reverse, True, gates,
                         cells, hidden, h_n, c_n, np.empty((B, 4 * H), dtype),
                         n_threads, n_parts=n_parts, **fwd_proj)
    grads = [np.empty(X.shape, dtype) if input_grad else None,
             np.empty(W_ih.shape, dtype), np.empty(W_hh.shape, dtype),
             np.empty(4 * H, dtype)] + grads
    kernels.lstm_backward(
        X, lengths, W_ih, W_hh, reverse, gates, cells, hidden, dhidden,
        *grads[:4], gates if dgates_in_place else np.empty_like(gates),
        np.empty((B, 4 * H), dtype),
        np.empty((B, P), dtype), np.empty((B, H), dtype), n_threads,
        n_parts=n_parts, chunked_grads=chunked_grads,
        own_weight_grads=own_weight_grads, dh_n=dh_n, dhidden_add=dhidden_add,
        **bwd_proj,
    )
    return [hidden, h_n, c_n] + grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_threaded_kernels_match_single_thread(n_threads, reverse, dtype):
    """Rows split over OpenMP threads give the single-threaded results,
    also with variable lengths, padding and blocks of unequal size."""
    rng = np.random.default_rng(1)
    lengths = np.sort(rng.integers(0, 9, size=37))[::-1].copy()
    lengths[0] = 9
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(9, 5, 20, lengths, dtype)
    X[_padding_mask(9, lengths)] = np.nan  # padding must stay ignored
    expected = _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, reverse, 1)
    actual = _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, reverse, n_threads)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, **TOL[dtype])


def _backward_cases(projected, chunked_grads, kernels, shortest=1):
    """The problems of the bit-for-bit backward tests below: 1 and 9 inputs
    (row dots, and a whole vector plus a leftover column), both dtypes,
    ragged lengths from ``shortest`` (0: one sequence is empty) to 7, with
    or without a projection. Yields each problem with the keywords of
    :func:`_run_kernels`, once with sklstm's weight gradients and once with
    BLAS's."""
    for n_in in (1, 9):
        for dtype in DTYPES:
            rng = np.random.default_rng(n_in)
            lengths = np.sort(rng.integers(shortest, 8, size=21))[::-1].copy()
            lengths[0] = 7
            if shortest == 0:
                lengths[-1] = 0
            X, lengths, W_ih, W_hh, bias, dhidden = _problem(7, n_in, 12,
                                                             lengths, dtype)
            W_hr = None
            if projected:
                W_hh = np.ascontiguousarray(W_hh[:, :5])
                W_hr = rng.standard_normal((5, 12)).astype(dtype)
                dhidden = np.ascontiguousarray(dhidden[:, :, :5])
            for own in (0, 1):
                yield (X, lengths, W_ih, W_hh, bias, dhidden), dict(
                    W_hr=W_hr, chunked_grads=chunked_grads,
                    own_weight_grads=own, packed_weights=True, kernels=kernels)


def _backward_paths(test):
    """Parametrizes ``test`` over the backward paths: threads, direction,
    projection, chunked or post-loop weight gradients, SIMD build."""
    for name, values in [("kernels", SIMD_BUILDS), ("chunked_grads", [0, 1]),
                         ("projected", [False, True]),
                         ("reverse", [False, True]), ("n_threads", [1, 2])]:
        test = pytest.mark.parametrize(name, values)(test)
    return test


@_backward_paths
def test_backward_without_input_grad_leaves_the_other_gradients_unchanged(
    n_threads, reverse, projected, chunked_grads, kernels
):
    """dX=None skips dX = dgates @ W_ih only: every other output is the same
    bit for bit, on the chunked and the post-loop paths, with sklstm's
    weight gradients and BLAS."""
    for problem, kwargs in _backward_cases(projected, chunked_grads, kernels):
        full = _run_kernels(*problem, reverse, n_threads, **kwargs)
        lean = _run_kernels(*problem, reverse, n_threads, input_grad=False,
                            **kwargs)
        assert lean[3] is None and np.isfinite(full[3]).all()
        for position, (a, e) in enumerate(zip(lean, full)):
            if position != 3:
                np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_chunked_weight_gradients_over_several_chunks(n_threads, dtype, kernels):
    """Chunked weight gradients (the AVX-512 builds' default) over sequences
    several chunks long: without dX (the first layer's backward) every
    other output is the one computed with dX, bit for bit, and all of them
    match the post-loop path. Each chunk's dX rows are at an offset from
    dX's start; with dX=None that offset once made a write through a null
    pointer (a crash) from the second chunk on. Here a chunk is 2**18
    bytes of dgates: 16 steps of B=32 rows of 4H=128 in float32, 8 in
    float64, so T=40 is 3 or 5 chunks."""
    lengths = np.full(32, 40)
    lengths[20:] = 33  # ragged: the last chunk has fewer rows
    problem = _problem(40, 3, 32, lengths, dtype)
    kwargs = dict(kernels=kernels, packed_weights=True)
    full = _run_kernels(*problem, False, n_threads, chunked_grads=1, **kwargs)
    lean = _run_kernels(*problem, False, n_threads, chunked_grads=1,
                        input_grad=False, **kwargs)
    post_loop = _run_kernels(*problem, False, n_threads, chunked_grads=0,
                             **kwargs)
    assert lean[3] is None
    for position, (a, e, p) in enumerate(zip(lean, full, post_loop)):
        if position != 3:
            np.testing.assert_array_equal(a, e)
        np.testing.assert_allclose(e, p, **TOL[dtype])
    # The top layer's way: the gradient of h_n only, which enters at the
    # first chunk and must carry through the others.
    dh_n = np.random.default_rng(5).standard_normal((32, 32)).astype(dtype)
    top = problem[:5] + (None,)
    chunked = _run_kernels(*top, False, n_threads, chunked_grads=1,
                           input_grad=False, dh_n=dh_n, **kwargs)
    post_loop = _run_kernels(*top, False, n_threads, chunked_grads=0,
                             input_grad=False, dh_n=dh_n, **kwargs)
    for a, p in zip(chunked, post_loop):
        if a is not None:
            np.testing.assert_allclose(a, p, **TOL[dtype])


@_backward_paths
def test_dgates_over_the_gates_give_the_same_gradients(
    n_threads, reverse, projected, chunked_grads, kernels
):
    """Backward writing dgates over the gates (what the backends do) gives
    every output bit for bit as with a dgates array of its own, on the
    chunked and the post-loop paths, with sklstm's weight gradients and
    BLAS, and an empty sequence."""
    for problem, kwargs in _backward_cases(projected, chunked_grads, kernels,
                                           shortest=0):
        apart = _run_kernels(*problem, reverse, n_threads, **kwargs)
        over = _run_kernels(*problem, reverse, n_threads, dgates_in_place=True,
                            **kwargs)
        for a, e in zip(over, apart):
            assert np.isfinite(e).all()
            np.testing.assert_array_equal(a, e)


@_backward_paths
def test_hidden_and_its_gradient_in_blocks_of_columns(
    n_threads, reverse, projected, chunked_grads, kernels
):
    """``hidden`` written into a block of columns of a wider array, and its
    gradient read as the sum of two such blocks (``dhidden`` and
    ``dhidden_add``: between bidirectional layers) give every output bit
    for bit as contiguous arrays holding the same values (the blocks'
    sum), on every backward path; nothing outside the block is written."""
    for problem, kwargs in _backward_cases(projected, chunked_grads, kernels,
                                           shortest=0):
        X, lengths, W_ih, W_hh, bias, dhidden = problem
        T, B, P = dhidden.shape
        rng = np.random.default_rng(P)
        wide = rng.standard_normal((2, T, B, 2 * P + 1)).astype(dhidden.dtype)
        part, add = wide[0, :, :, P + 1:], wide[1, :, :, P + 1:]
        expected = _run_kernels(X, lengths, W_ih, W_hh, bias, part + add,
                                reverse, n_threads, **kwargs)
        actual = _run_kernels(X, lengths, W_ih, W_hh, bias, part, reverse,
                              n_threads, hidden_in_block=True,
                              dhidden_add=add, **kwargs)
        for a, e in zip(actual, expected):
            np.testing.assert_array_equal(a, e)
        block = actual[0].base
        assert np.isnan(block[:, :, :2]).all() and np.isnan(block[:, :, 2 + P:]).all()


@pytest.mark.parametrize("backend", [CPUBackend, ReferenceBackend])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
def test_backend_forward_writes_hidden_into_hidden_out(backend, training,
                                                       out_dtype):
    """``forward(hidden_out=...)`` (a direction's half of a bidirectional
    layer's output) returns that array holding the hidden sequence a plain
    call returns, bit for bit, leaves the other columns alone, and keeps
    the same cache for backward; of another dtype, it gets a copy."""
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["variable"],
                                                     np.float32)
    T, B, _ = X.shape
    H = W_hh.shape[1]
    expected, h_n, c_n, cache = backend().forward(X, lengths, W_ih, W_hh, bias,
                                                  reverse=True, training=training)
    wide = np.full((T, B, 2 * H), np.nan, out_dtype)
    hidden, h_n2, c_n2, cache2 = backend().forward(
        X, lengths, W_ih, W_hh, bias, reverse=True, training=training,
        hidden_out=wide[:, :, H:])
    assert np.shares_memory(hidden, wide)
    np.testing.assert_array_equal(hidden, expected.astype(out_dtype))
    np.testing.assert_array_equal(h_n2, h_n)
    np.testing.assert_array_equal(c_n2, c_n)
    assert np.isnan(wide[:, :, :H]).all()
    if training:
        grads = backend().backward(dhidden, cache)
        grads2 = backend().backward(dhidden, cache2)
        for a, e in zip(grads2, grads):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_strided_hidden_and_dhidden_add_are_checked():
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["variable"],
                                                     np.float64)
    T, B, _ = X.shape
    H = W_hh.shape[1]
    gates, cells = np.empty((T, B, 4 * H)), np.empty((T, B, H))
    state = [np.empty((B, H)), np.empty((B, H)), np.empty((B, 4 * H))]
    every_other = np.empty((T, B, 2 * H))[:, :, ::2]  # columns not contiguous
    time_apart = np.empty((2 * T, B, H))[::2]  # times 2B rows apart
    for hidden in (every_other, np.empty((B, T, H)).transpose(1, 0, 2)):
        with pytest.raises(ValueError, match="hidden must be C-contiguous or a "
                           "block of columns"):
            _lstm_fast.lstm_forward(X, lengths, W_ih, W_hh, bias, False, True,
                                    gates, cells, hidden, *state)
    hidden = np.empty((T, B, H))
    _lstm_fast.lstm_forward(X, lengths, W_ih, W_hh, bias, False, True, gates,
                            cells, hidden, *state)
    grads = [np.empty(X.shape), np.empty(W_ih.shape), np.empty(W_hh.shape),
             np.empty(4 * H), np.empty_like(gates), np.empty((B, 4 * H)),
             np.empty((B, H)), np.empty((B, H))]

    def backward(dhidden, **kwargs):
        _lstm_fast.lstm_backward(X, lengths, W_ih, W_hh, False, gates, cells,
                                 hidden, dhidden, *grads, **kwargs)

    with pytest.raises(ValueError, match="dhidden must be C-contiguous"):
        backward(time_apart)
    with pytest.raises(ValueError, match="give dhidden too"):
        backward(None, dhidden_add=dhidden)
    with pytest.raises(ValueError, match="the strides of dhidden"):
        backward(dhidden, dhidden_add=np.empty((T, B, 2 * H))[:, :, :H])
    with pytest.raises(ValueError, match=r"dhidden_add has shape"):
        backward(dhidden, dhidden_add=np.empty((T, B, H + 1)))


@pytest.mark.parametrize("reverse", [False, True])
def test_dgates_over_the_gates_leave_the_gradients_there(reverse):
    """The gates array then holds dgates: that of a backward into an array
    of its own, zero on padding."""
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["variable"],
                                                     np.float64)
    T, B, _ = X.shape
    H = W_hh.shape[1]
    results = []
    for in_place in (False, True):
        gates = np.empty((T, B, 4 * H))
        cells, hidden = np.empty((T, B, H)), np.empty((T, B, H))
        _lstm_fast.lstm_forward(X, lengths, W_ih, W_hh, bias, reverse, True,
                                gates, cells, hidden, np.empty((B, H)),
                                np.empty((B, H)), np.empty((B, 4 * H)))
        dgates = gates if in_place else np.full_like(gates, np.nan)
        _lstm_fast.lstm_backward(
            X, lengths, W_ih, W_hh, reverse, gates, cells, hidden, dhidden,
            np.empty(X.shape), np.empty(W_ih.shape), np.empty(W_hh.shape),
            np.empty(4 * H), dgates, np.empty((B, 4 * H)), np.empty((B, H)),
            np.empty((B, H)))
        results.append(dgates)
    np.testing.assert_array_equal(results[1], results[0])
    assert (results[1][_padding_mask(T, lengths)] == 0).all()
    assert np.abs(results[1]).max() > 0


def test_dgates_overlapping_the_gates_raise():
    """dgates is the gates array itself or apart from it: a view shifted by
    a row would read gradients as gates."""
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["equal"],
                                                     np.float64)
    T, B, _ = X.shape
    H = W_hh.shape[1]
    storage = np.zeros((T + 1, B, 4 * H))
    gates, shifted = storage[:T], storage[1:]
    with pytest.raises(ValueError, match="dgates overlaps gates"):
        _lstm_fast.lstm_backward(
            X, lengths, W_ih, W_hh, False, gates, np.zeros((T, B, H)),
            np.zeros((T, B, H)), dhidden, np.empty(X.shape),
            np.empty(W_ih.shape), np.empty(W_hh.shape), np.empty(4 * H),
            shifted, np.empty((B, 4 * H)), np.empty((B, H)),
            np.empty((B, H)))


@_backward_paths
def test_dh_n_is_dhidden_at_each_sequences_last_step(
    n_threads, reverse, projected, chunked_grads, kernels
):
    """dL/dh_n given as ``dh_n`` gives every output bit for bit as the same
    gradient put in ``dhidden`` where each sequence's h_n is (t = length - 1
    forward, t = 0 reverse), alone (``dhidden=None``) and added to a
    ``dhidden``; with an empty sequence, on the chunked and the post-loop
    paths, with sklstm's weight gradients and BLAS."""
    rng = np.random.default_rng(0)
    for problem, kwargs in _backward_cases(projected, chunked_grads, kernels,
                                           shortest=0):
        X, lengths, W_ih, W_hh, bias, dhidden = problem
        dh_n = rng.standard_normal(dhidden.shape[1:]).astype(X.dtype)
        rows = np.flatnonzero(lengths > 0)
        times = np.zeros_like(rows) if reverse else lengths[rows] - 1
        for above in (None, dhidden):
            scattered = np.zeros_like(dhidden) if above is None else above.copy()
            scattered[times, rows] += dh_n[rows]
            expected = _run_kernels(X, lengths, W_ih, W_hh, bias, scattered,
                                    reverse, n_threads, **kwargs)
            actual = _run_kernels(X, lengths, W_ih, W_hh, bias, above, reverse,
                                  n_threads, dh_n=dh_n, **kwargs)
            for a, e in zip(actual, expected):
                assert np.isfinite(e).all()
                np.testing.assert_array_equal(a, e)


def test_backends_skip_the_input_gradient_on_request():
    """backward(input_grad=False) returns dX as None and the same weight
    gradients, on the CPU and the reference backends."""
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["variable"],
                                                     np.float64)
    for backend in (CPUBackend(), ReferenceBackend()):
        grads = [backend.backward(dhidden, backend.forward(
            X, lengths, W_ih, W_hh, bias)[3], input_grad=flag)
            for flag in (True, False)]
        assert grads[1][0] is None and grads[0][0].shape == X.shape
        for a, e in zip(grads[1][1:], grads[0][1:]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("T", [1, 13])
def test_chunked_weight_grads_match_the_post_loop_path(T, n_threads, dtype):
    # Forward direction: BPTT runs in chunks of ~256 KiB of dgates, each
    # followed by its share of dX, dW_ih, dW_hh and dbias (B = H = 64: 4
    # steps in float32, 2 in float64), or computes them after the loop.
    # Which one a build takes by default depends on its SIMD level, so both
    # are asked for here, on every machine.
    rng = np.random.default_rng(3)
    lengths = np.sort(rng.integers(1, T + 1, size=64))[::-1].copy()
    lengths[0] = T
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, 5, 64, lengths, dtype)
    X[_padding_mask(T, lengths)] = 7.0  # finite padding: the chunked path
    chunked, after_the_loop = (
        _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, False, n_threads,
                     chunked_grads=flag)
        for flag in (1, 0)
    )
    for a, e in zip(chunked, after_the_loop):
        np.testing.assert_allclose(a, e, **TOL[dtype])


@pytest.mark.parametrize("n_in", [3, 300])
def test_weight_grads_by_row_blocks_match_finite_differences(n_in):
    """The row-block backward's gradients of L = sum(hidden * dhidden), in
    float64, against central differences along random directions (with
    many inputs, dX reads W_ih in place)."""
    rng = np.random.default_rng(5)
    T, H = 7, 6
    lengths = np.sort(rng.integers(1, T + 1, size=24))[::-1].copy()
    lengths[0] = T
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths,
                                                      np.float64)
    X[_padding_mask(T, lengths)] = 0.5

    def run(X, W_ih, W_hh, bias):
        return _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, False, 2,
                            n_parts=2, chunked_grads=1, own_weight_grads=1,
                            packed_weights=True)

    def loss(X, W_ih, W_hh, bias):
        return float(np.sum(run(X, W_ih, W_hh, bias)[0] * dhidden))

    grads = run(X, W_ih, W_hh, bias)[3:7]  # dX, dW_ih, dW_hh, dbias
    valid = ~_padding_mask(T, lengths)
    args, eps = [X, W_ih, W_hh, bias], 1e-6
    for index, grad in enumerate(grads):
        for _ in range(2):
            direction = rng.standard_normal(args[index].shape)
            if index == 0:
                direction *= valid[:, :, np.newaxis]  # X's padding is not read
            plus, minus = list(args), list(args)
            plus[index] = args[index] + eps * direction
            minus[index] = args[index] - eps * direction
            expected = (loss(*plus) - loss(*minus)) / (2 * eps)
            np.testing.assert_allclose(np.sum(grad * direction), expected,
                                       rtol=1e-6, atol=1e-9)


# (T, n_in, H, B): dX by _input_grad_part (few inputs) or read in place (G
# * I past 32 KiB), one step, 4H past whole vectors (H = 5) or whole panels
# (H = 20), and fewer row blocks than pieces (B = 17: at least 8 rows a
# block, so 2 blocks of 3 pieces).
ROW_BLOCK_CASES = {"few_inputs": (13, 5, 16, 37), "many_inputs": (6, 300, 8, 37),
                   "one_step": (1, 3, 16, 37), "odd_units": (9, 4, 5, 37),
                   "past_a_panel": (7, 9, 20, 37), "few_rows": (8, 4, 16, 17)}


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("n_parts", [2, 3])
@pytest.mark.parametrize("case", list(ROW_BLOCK_CASES))
def test_weight_grads_by_row_blocks(case, n_parts, kernels):
    """Chunked, with sklstm's weight-gradient workspace and several row
    blocks, each block sums its own rows' weight gradients and the blocks'
    sums are added: the same gradients as BLAS after the loop, on 1 thread
    or n_parts bit for bit, and the sums left in the workspace add up to
    dW_hh (so this path ran)."""
    T, n_in, H, B = ROW_BLOCK_CASES[case]
    rng = np.random.default_rng(8)
    lengths = np.sort(rng.integers(1, T + 1, size=B))[::-1].copy()
    lengths[0] = T
    for dtype in DTYPES:
        X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths,
                                                          dtype)
        X[_padding_mask(T, lengths)] = 0.5  # finite padding: chunked paths
        size = kernels.weight_grad_workspace_size(4 * H, n_in, H, n_parts,
                                                  np.dtype(dtype).itemsize)
        works = [np.full(size, np.nan, dtype) for _ in range(2)]
        by_rows = [
            _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, False,
                         n_threads, n_parts=n_parts, chunked_grads=1,
                         own_weight_grads=1, packed_weights=True,
                         kernels=kernels, work=work)
            for n_threads, work in zip((1, n_parts), works)
        ]
        blas = _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, False, 1,
                            n_parts=n_parts, chunked_grads=0,
                            own_weight_grads=0, kernels=kernels)
        for serial, threaded, expected in zip(*by_rows, blas):
            np.testing.assert_array_equal(threaded, serial)
            np.testing.assert_allclose(serial, expected, **TOL[dtype])
        np.testing.assert_array_equal(works[1], works[0])
        G, block = 4 * H, (n_in + H + 1) * 4 * H
        n_blocks = min(n_parts, B // 8)
        sums = [works[0][k * block:k * block + G * H] for k in range(n_blocks)]
        np.testing.assert_array_equal(
            functools.reduce(np.add, sums).reshape(G, H), by_rows[0][5])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("own_weight_grads", [0, 1])
@pytest.mark.parametrize("packed_weights", [False, True])
@pytest.mark.parametrize("projected", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n_parts", [2, 3])
def test_results_do_not_depend_on_the_threads_running_the_pieces(
    n_parts, reverse, projected, packed_weights, own_weight_grads, dtype
):
    """For a given cut into pieces, 1 thread or n_parts threads compute the
    same numbers bit for bit: the thread chooser may change its mind in the
    middle of a fit without changing the fit."""
    rng = np.random.default_rng(4)
    lengths = np.sort(rng.integers(1, 12, size=41))[::-1].copy()
    lengths[0] = 12
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(12, 5, 24, lengths, dtype)
    W_hr = None
    if projected:
        W_hr = rng.uniform(-0.3, 0.3, size=(7, 24)).astype(dtype)
        W_hh = np.ascontiguousarray(W_hh[:, :7])
        dhidden = np.ascontiguousarray(dhidden[..., :7])
    runs = [
        _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, reverse, n_threads,
                     W_hr=W_hr, n_parts=n_parts, packed_weights=packed_weights,
                     own_weight_grads=own_weight_grads)
        for n_threads in (1, n_parts)
    ]
    for serial, threaded in zip(*runs):
        np.testing.assert_array_equal(threaded, serial)


# Shapes for sklstm's own weight gradients (SK_DEFINE_WEIGHT_GRAD): blocks of
# 64 rows of dgates with a partial last one, gate units past the last whole
# panel (4H % 16 != 0), one and a few rows of the transposed gradient (I =
# 1, 3), a time of more rows than one block (B = 70), one step, and a dW_ih
# too large for it.
OWN_GRAD_CASES = {
    "variable": (9, 4, 6, [9, 8, 8, 5, 3, 1, 1]),
    "one_input": (13, 1, 32, [13] * 5 + [7, 2]),
    "wide_rows": (3, 3, 20, [3] * 50 + [2] * 20),
    "one_step": (1, 9, 16, [1, 1, 1]),
    # dW_ih past 128 KiB (4H x I = 32 x 1100): BLAS for it, the kernel for
    # dW_hh and dbias, with no room kept for dW_ih in the workspace.
    "many_inputs": (3, 1100, 8, [3, 3, 2]),
}


@pytest.mark.parametrize("kernels", SIMD_BUILDS)
@pytest.mark.parametrize("case", list(OWN_GRAD_CASES))
@pytest.mark.parametrize("projected", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_own_weight_grads_match_blas(case, reverse, projected, kernels):
    """dW_ih, dW_hh and dbias summed by sklstm's kernel in blocks of rows
    agree with BLAS's products, on every build (each takes one of them by
    default), whole or cut in pieces, with NaN padding in X too (dW_ih then
    sums valid rows only, in BLAS)."""
    T, n_in, H, lengths = OWN_GRAD_CASES[case]
    for dtype in DTYPES:
        X, lengths, W_ih, W_hh, bias, dhidden = _problem(T, n_in, H, lengths,
                                                          dtype)
        W_hr = None
        if projected:
            P = max(1, H // 3)
            W_hr = np.random.default_rng(7).uniform(-0.3, 0.3, (P, H))
            W_hr = W_hr.astype(dtype)
            W_hh = np.ascontiguousarray(W_hh[:, :P])
            dhidden = np.ascontiguousarray(dhidden[..., :P])
        for padding in (0.5, np.nan):
            X[_padding_mask(T, lengths)] = padding
            for n_parts in (1, 2, 3):
                own, blas = (
                    _run_kernels(X, lengths, W_ih, W_hh, bias, dhidden, reverse,
                                 1, W_hr=W_hr, n_parts=n_parts,
                                 own_weight_grads=flag, kernels=kernels,
                                 chunked_grads=0)
                    for flag in (1, 0)
                )
                for a, e in zip(own, blas):
                    np.testing.assert_allclose(a, e, **TOL[dtype])


def test_own_weight_grads_check_their_workspace():
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(4, 2, 3, [4, 4], np.float32)
    size = _lstm_fast.weight_grad_workspace_size(12, 2, 3, 2, 4)
    # Two pieces of at most 12 gate units (pieces are cut in multiples of
    # 16), each with a block of 64 packed rows and the transposed dW_ih (2
    # rows) and dW_hh (3 rows).
    assert size == 2 * 12 * (64 + 2 + 3)
    # With 10 000 inputs, dW_ih (480 KB) goes to BLAS: no room is kept for it.
    assert _lstm_fast.weight_grad_workspace_size(12, 10_000, 3, 2, 4) == (
        2 * 12 * (64 + 3))
    gates, cells = np.empty((4, 2, 12), np.float32), np.empty((4, 2, 3), np.float32)
    hidden = np.empty((4, 2, 3), np.float32)
    _lstm_fast.lstm_forward(X, lengths, W_ih, W_hh, bias, False, True, gates,
                            cells, hidden, np.empty((2, 3), np.float32),
                            np.empty((2, 3), np.float32),
                            np.empty((2, 12), np.float32))
    with pytest.raises(ValueError, match="weight_grad_work has 10 elements"):
        _lstm_fast.lstm_backward(
            X, lengths, W_ih, W_hh, False, gates, cells, hidden, dhidden,
            np.empty_like(X), np.empty_like(W_ih), np.empty_like(W_hh),
            np.empty(12, np.float32), np.empty((4, 2, 12), np.float32),
            np.empty((2, 12), np.float32), np.empty((2, 3), np.float32),
            np.empty((2, 3), np.float32), n_parts=2, own_weight_grads=1,
            weight_grad_work=np.empty(10, np.float32),
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("H", [5, 24, 37])
def test_packed_weights_give_the_in_place_kernels_sums(H, reverse, dtype):
    """Backward's per-step products on W_hh's packed panels (full panels and
    leftover columns) sum exactly as sklstm's kernel reading W_hh in place:
    the packing moves memory, not arithmetic."""
    rng = np.random.default_rng(6)
    lengths = np.sort(rng.integers(1, 7, size=23))[::-1].copy()
    lengths[0] = 7
    X, lengths, W_ih, W_hh, bias, dhidden = _problem(7, 3, H, lengths, dtype)
    T, B, _ = X.shape
    gates, cells = np.empty((T, B, 4 * H), dtype), np.empty((T, B, H), dtype)
    hidden = np.empty((T, B, H), dtype)
    _lstm_fast.lstm_forward(X, lengths, W_ih, W_hh, bias, reverse, True, gates,
                            cells, hidden, np.empty((B, H), dtype),
                            np.empty((B, H), dtype), np.empty((B, 4 * H), dtype),
                            W_hh_t=np.empty((H, 4 * H), dtype))

    def backward(**workspace):
        grads = [np.empty(X.shape, dtype), np.empty(W_ih.shape, dtype),
                 np.empty(W_hh.shape, dtype), np.empty(4 * H, dtype)]
        _lstm_fast.lstm_backward(
            X, lengths, W_ih, W_hh, reverse, gates, cells, hidden, dhidden,
            *grads, np.empty((T, B, 4 * H), dtype), np.empty((B, 4 * H), dtype),
            np.empty((B, H), dtype), np.empty((B, H), dtype), **workspace,
        )
        return grads

    in_place = backward()
    packed = backward(W_hh_packed=np.empty((4 * H, H), dtype))
    for a, e in zip(packed, in_place):
        np.testing.assert_array_equal(a, e)


def test_thread_chooser_takes_the_faster_and_follows_the_load():
    from sklstm._backends._cpu import _ThreadChooser

    chooser = _ThreadChooser(min_probe=4, max_probe=16)
    seconds = {1: 2.0, 2: 1.0}  # quiet: two threads are faster

    def call():
        n = chooser.choose("k", 2)
        chooser.record("k", n, seconds[n])
        return n

    assert [call() for _ in range(3)] == [2, 2, 1]  # warm-up, then each once
    assert [call() for _ in range(20)].count(1) <= 2  # only the tries
    seconds[2] = 10.0  # another process: the split collapses
    used = [call() for _ in range(40)]
    # Dropped at once; then only its tries, of two calls each (the first
    # wakes the threads and is not measured).
    assert used[1:].count(2) <= 6 and used[-1] == 1
    assert "1, 2, 1" not in str(used[1:])
    seconds[2] = 1.0  # quiet again: the next try brings it back
    used = [call() for _ in range(40)]
    assert used[-20:].count(1) <= 2  # only the tries
    assert chooser.choose("whole", 1) == 1  # nothing to choose from


def test_thread_chooser_does_not_time_the_threads_waking_up():
    # The threads of the split sleep after a few calls on one thread, and the
    # first call that wakes them is 3x slower than the next ones.
    from sklstm._backends._cpu import _ThreadChooser

    chooser = _ThreadChooser(min_probe=4, max_probe=16)
    used = []
    slow_spell = set(range(3, 13))  # calls where the machine is busy

    def call():
        n = chooser.choose("k", 2)
        if n == 1:
            seconds = 1.5
        elif len(used) >= 4 and used[-4:] == [1] * 4:
            seconds = 3.0  # waking
        else:
            seconds = 1.0
        if len(used) in slow_spell:
            seconds *= 4 if n == 2 else 1.2
        chooser.record("k", n, seconds)
        used.append(n)

    for _ in range(120):
        call()
    # The slow spell moved the fit to one thread; once it is over, a try
    # measures the split awake and takes it back, for good.
    assert 1 in used[3:13]
    assert used[-60:].count(2) >= 55


def test_fit_is_the_same_whatever_the_thread_chooser_picks(monkeypatch):
    from threadpoolctl import threadpool_limits

    from sklstm import LSTMRegressor
    from sklstm._backends import _cpu

    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 6, 3)).astype(np.float32)
    y = X[:, :, 0].sum(axis=1)
    # Work of 64 x 4 x 32 x 32 per step: cut in 2 pieces under 2 threads.
    monkeypatch.setattr(_cpu._thread_plan, "__defaults__", (None, 1))
    coefs = []
    for n_threads in (1, 2):
        monkeypatch.setattr(_cpu._thread_chooser, "choose",
                            lambda key, n_parts, n=n_threads: min(n, n_parts))
        model = LSTMRegressor(hidden_layer_sizes=(32,), batch_size=64,
                              max_iter=3, random_state=0)
        with threadpool_limits(2):
            model.fit(X, y)
        coefs.append(model._params.copy())
    np.testing.assert_array_equal(coefs[0], coefs[1])


def test_thread_plan_obeys_threadpool_limits():
    from threadpoolctl import threadpool_limits

    from sklstm._backends._cpu import _thread_plan

    with threadpool_limits(1):
        assert _thread_plan(4096, 512)[0] == 1
    assert _thread_plan(8, 4)[0] == 1  # too little work to split


def _max_blas_threads():
    from threadpoolctl import threadpool_info

    return max(info["num_threads"] for info in threadpool_info()
               if info["user_api"] == "blas")


def test_fit_holds_blas_at_one_thread_and_restores_it(monkeypatch):
    """During a fit BLAS stays at one thread (the kernels split the work
    themselves, by the limit read when the fit began); after it, and after a
    fit that fails, the limit is back."""
    from threadpoolctl import threadpool_limits

    from sklstm import LSTMRegressor
    from sklstm._backends import _cpu

    seen = []
    original = _cpu.lstm_forward

    def recording(*args, **kwargs):
        seen.append((_max_blas_threads(), _cpu._thread_plan(4096, 512)[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(_cpu, "lstm_forward", recording)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4, 2)).astype(np.float32)
    with threadpool_limits(2):
        LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, X[:, 0, 0])
        assert _max_blas_threads() == 2
        with pytest.raises(ValueError):
            LSTMRegressor(max_iter=1).fit(X, X[:3, 0, 0])  # y too short
        assert _max_blas_threads() == 2
    assert seen and set(seen) == {(1, 2)}


def test_blas_hold_nests_and_is_the_main_threads():
    """Holds nest; a fit in a worker thread neither takes nor ends the hold
    (OpenBLAS lowered by the main thread cannot be raised from another)."""
    import threading

    from threadpoolctl import threadpool_limits

    from sklstm import LSTMRegressor
    from sklstm._backends._cpu import _blas_hold

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4, 2)).astype(np.float32)
    seen = []

    def fit_in_a_thread():
        LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1).fit(X, X[:, 0, 0])
        seen.append((_blas_hold.limit, _max_blas_threads()))

    with threadpool_limits(2):
        with _blas_hold():
            assert _blas_hold.limit == 2 and _max_blas_threads() == 1
            with _blas_hold():
                assert _blas_hold.limit == 2
            assert _blas_hold.limit == 2 and _max_blas_threads() == 1
            thread = threading.Thread(target=fit_in_a_thread)
            thread.start()
            thread.join(60)
        assert seen == [(2, 1)]  # the main thread's hold, untouched
        assert _blas_hold.limit is None and _max_blas_threads() == 2
        thread = threading.Thread(target=fit_in_a_thread)
        thread.start()
        thread.join(60)
        assert seen[1] == (None, 2)  # per-call, and restored
        assert _max_blas_threads() == 2


# ---------------------------------------------------------------------------
# Projection (PyTorch's proj_size): W_hr (P, H), W_hh (4H, P), h of width P.


def _projected_problem(T, n_in, H, P, lengths, dtype, seed=0):
    X, lengths, W_ih, _, bias, _ = _problem(T, n_in, H, lengths, dtype, seed)
    rng = np.random.default_rng(seed + 100)
    W_hh = (0.5 * rng.standard_normal((4 * H, P))).astype(dtype)
    W_hr = (0.5 * rng.standard_normal((P, H))).astype(dtype)
    dhidden = rng.standard_normal((T, len(lengths), P)).astype(dtype)
    return X, lengths, W_ih, W_hh, bias, W_hr, dhidden


# (T, n_in, H, P, lengths)
PROJ_CASES = {
    "equal": (7, 3, 5, 2, [7, 7, 7, 7]),
    "variable": (9, 4, 6, 3, [9, 8, 8, 5, 3, 1, 1]),
    "one_step": (1, 3, 4, 1, [1, 1, 1]),
    "P_equals_H": (5, 2, 3, 3, [5, 4, 2]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", list(PROJ_CASES))
def test_projection_matches_reference(case, reverse, dtype):
    T, n_in, H, P, lengths = PROJ_CASES[case]
    X, lengths, W_ih, W_hh, bias, W_hr, dhidden = _projected_problem(
        T, n_in, H, P, lengths, dtype
    )
    args = (X, lengths, W_ih, W_hh, bias, reverse)

    hidden, h_n, c_n, cache = CPUBackend().forward(*args, W_hr=W_hr)
    ref = ReferenceBackend().forward(*args, W_hr=W_hr)
    assert hidden.shape == (T, len(lengths), P)
    assert h_n.shape == (len(lengths), P) and c_n.shape == (len(lengths), H)
    for actual, expected in zip((hidden, h_n, c_n), ref[:3]):
        _assert_close(actual, expected, dtype)
    assert not hidden[_padding_mask(T, lengths)].any()

    grads = CPUBackend().backward(dhidden, cache)
    ref_grads = ReferenceBackend().backward(dhidden, ref[3])
    assert len(grads) == 5  # dX, dW_ih, dW_hh, dbias, dW_hr
    for actual, expected in zip(grads, ref_grads):
        _assert_close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", ["equal", "variable"])
def test_projection_inference_matches_training(case, reverse, dtype):
    T, n_in, H, P, lengths = PROJ_CASES[case]
    X, lengths, W_ih, W_hh, bias, W_hr, _ = _projected_problem(
        T, n_in, H, P, lengths, dtype
    )
    args = (X, lengths, W_ih, W_hh, bias, reverse)
    backend = CPUBackend()
    hidden, h_n, c_n, _ = backend.forward(*args, W_hr=W_hr)
    inf_hidden, inf_h_n, inf_c_n, inf_cache = backend.forward(
        *args, training=False, W_hr=W_hr
    )
    assert inf_cache is None
    for actual, expected in zip((inf_hidden, inf_h_n, inf_c_n), (hidden, h_n, c_n)):
        np.testing.assert_array_equal(actual, expected)
    none_hidden, seq_h_n, seq_c_n, seq_cache = backend.forward(
        *args, training=False, return_sequences=False, W_hr=W_hr
    )
    assert none_hidden is None and seq_cache is None
    np.testing.assert_array_equal(seq_h_n, h_n)
    np.testing.assert_array_equal(seq_c_n, c_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_projection_padding_is_ignored(reverse, dtype):
    T, n_in, H, P, lengths = PROJ_CASES["variable"]
    X, lengths, W_ih, W_hh, bias, W_hr, dhidden = _projected_problem(
        T, n_in, H, P, lengths, dtype
    )
    pad = _padding_mask(T, lengths)
    backend = CPUBackend()
    out = backend.forward(X, lengths, W_ih, W_hh, bias, reverse, W_hr=W_hr)
    grads = backend.backward(dhidden, out[3])
    assert not grads[0][pad].any()  # dX
    X[pad] = np.nan
    dhidden[pad] = np.nan
    out_nan = backend.forward(X, lengths, W_ih, W_hh, bias, reverse, W_hr=W_hr)
    grads_nan = backend.backward(dhidden, out_nan[3])
    for actual, expected in zip(out_nan[:3] + grads_nan, out[:3] + grads):
        np.testing.assert_allclose(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_projection_threaded_kernels_match_single_thread(reverse, dtype):
    # P = 17 > 16 puts rows of dW_hr in both threads' pieces.
    rng = np.random.default_rng(2)
    lengths = np.sort(rng.integers(0, 9, size=37))[::-1].copy()
    lengths[0] = 9
    X, lengths, W_ih, W_hh, bias, W_hr, dhidden = _projected_problem(
        9, 5, 24, 17, lengths, dtype
    )
    X[_padding_mask(9, lengths)] = np.nan
    args = (X, lengths, W_ih, W_hh, bias, dhidden, reverse)
    expected = _run_kernels(*args, 1, W_hr=W_hr)
    actual = _run_kernels(*args, 2, W_hr=W_hr)
    assert len(actual) == 8
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, **TOL[dtype])
    ref = ReferenceBackend().forward(*args[:5], reverse, W_hr=W_hr)
    ref_grads = ReferenceBackend().backward(dhidden, ref[3])
    for a, e in zip(actual, ref[:3] + ref_grads):
        np.testing.assert_allclose(a, e, **TOL[dtype])


def test_projection_bad_shapes_raise():
    X, lengths, W_ih, W_hh, bias, W_hr, _ = _projected_problem(
        5, 2, 4, 3, [5, 5], np.float64
    )
    with pytest.raises(ValueError, match="W_hr"):
        CPUBackend().forward(X, lengths, W_ih, W_hh, bias, W_hr=W_hr[:, :-1])
    with pytest.raises(ValueError, match="W_hr"):
        CPUBackend().forward(X, lengths, W_ih, W_hh, bias, W_hr=W_hr[:-1])
    with pytest.raises(ValueError, match="W_ih has shape"):
        CPUBackend().forward(X, lengths, W_ih, W_hh, bias)  # W_hr forgotten
    B, H = len(lengths), 4
    with pytest.raises(ValueError, match="m_step"):
        _lstm_fast.lstm_forward(
            X, lengths, W_ih, W_hh, bias, False, False,
            np.empty((5, B, 4 * H)), None, None, np.empty((B, 3)),
            np.empty((B, H)), np.empty((B, 4 * H)), 1, W_hr=W_hr,
        )  # fmt: skip


def test_workspace_pool_never_shares_a_live_buffer():
    # Two layers' forwards on one backend before either backward (as a
    # stacked network does), a second backward of a cache (refused), a pickled
    # backend: results stay those of fresh backends, bit for bit.
    import pickle

    X, lengths, W_ih, W_hh, bias, dhidden = _problem(*CASES["variable"], np.float32)

    def run(backend):
        out = []
        _, _, _, cache_a = backend.forward(X, lengths, W_ih, W_hh, bias)
        _, _, _, cache_b = backend.forward(X[::-1].copy(), lengths, W_ih, W_hh, bias)
        out.append(backend.backward(dhidden, cache_a))
        with pytest.raises(ValueError, match="already backpropagated"):
            backend.backward(dhidden, cache_a)
        out.append(backend.backward(2 * dhidden, cache_b))
        out.append(backend.forward(X, lengths, W_ih, W_hh, bias, training=False)[:3])
        return [a for group in out for a in group]

    backend = CPUBackend()
    first = run(backend)
    again = run(backend)
    fresh = run(pickle.loads(pickle.dumps(CPUBackend())))
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.shares_memory(first[0], first[4])
    assert not np.shares_memory(first[0], first[8])
