"""GPU training and inference benchmark: sklstm (CuPy) vs PyTorch (cuDNN).

For each workload and TF32 setting, both sides train the same model (one
LSTM layer + a linear head on the last hidden state, MSE, Adam, float32)
and the script times

- one training epoch (shuffle, minibatches, forward, BPTT, Adam step), and
- inference over all samples,

as the median of ``--repeats`` runs after one warm-up, and prints seconds per
side and the ratios torch/sklstm (above 1: sklstm is faster).

sklstm runs through its public estimator, ``LSTMRegressor(device="cuda")
.fit(X, y)`` and ``predict(X)``, so its times include what a user pays:
input validation and copying each minibatch from host memory to the GPU.
Its epoch time is that of an epoch within a longer fit: the time of a
3-epoch fit minus that of a 1-epoch fit, halved. The first epoch of a fit
also captures its CUDA graphs and checks them against eager steps; the
"sk 1st" column is the time of a whole 1-epoch fit. ``--no-graphs`` times
sklstm with every kernel launched from Python. PyTorch gets its data on the
GPU once, before timing, and runs ``nn.LSTM`` (cuDNN) + ``nn.Linear`` with
``torch.optim.Adam``.

TF32: "off" sets ``allow_tf32=False`` on sklstm and
``torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 =
False``; "on" sets all of them to True (PyTorch's own default is cuDNN TF32
on, matmul TF32 off).

Usage::

    python benchmarks/bench_gpu.py            # G1, G2, G3, TF32 off and on
    python benchmarks/bench_gpu.py --quick    # smaller N, same per-batch work
    python benchmarks/bench_gpu.py --workloads G1 --tf32 off

Needs CuPy and an NVIDIA GPU; the PyTorch side is skipped (with the reason
printed) when PyTorch or its CUDA support is missing.
"""

import argparse
import statistics
import sys
import time
import warnings

import numpy as np

# name: (N, T, F, H, batch_size)
WORKLOADS = {
    "G1": (4096, 50, 8, 64, 64),
    "G2": (8192, 100, 32, 256, 128),
    "G3": (65536, 100, 32, 512, 1024),
}
# --quick keeps T, F, H and the batch size (so per-batch work is the same)
# and cuts N.
QUICK_N = {"G1": 1024, "G2": 1024, "G3": 8192}
INFER_BATCH = 4096  # PyTorch's inference batch; sklstm picks its own (<= 4096)
# sklstm's epoch time is the difference between fits of 1 + EXTRA_EPOCHS
# epochs and of 1 epoch, divided by EXTRA_EPOCHS.
EXTRA_EPOCHS = 2


def make_data(workload, n_samples):
    _, T, F, _, _ = WORKLOADS[workload]
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, T, F)).astype(np.float32)
    y = np.tanh(X[:, :, 0]).mean(axis=1) + 0.1 * rng.standard_normal(n_samples)
    return X, y.astype(np.float32)


def median_time(fn, repeats, synchronize):
    """Median wall time of ``fn`` after one warm-up, the GPU drained each time."""
    fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------- sides
def run_sklstm(workload, X, y, tf32, repeats, graphs=True):
    import cupy
    from sklearn.exceptions import ConvergenceWarning

    from sklstm import LSTMRegressor
    from sklstm._backends import _graphs

    _graphs.ENABLED = graphs
    _, _, _, H, batch = WORKLOADS[workload]
    warnings.simplefilter("ignore", ConvergenceWarning)

    def model(epochs):
        # tol=0 and a patience above max_iter: every epoch runs.
        return LSTMRegressor(hidden_layer_sizes=(H,), batch_size=batch,
                             max_iter=epochs, tol=0.0, n_iter_no_change=99,
                             shuffle=True, alpha=0.0, random_state=0,
                             device="cuda", allow_tf32=tf32)

    def synchronize():
        cupy.cuda.Device().synchronize()

    one, three = model(1), model(1 + EXTRA_EPOCHS)
    first = median_time(lambda: one.fit(X, y), repeats, synchronize)
    longer = median_time(lambda: three.fit(X, y), repeats, synchronize)
    infer = median_time(lambda: one.predict(X), repeats, synchronize)
    assert np.isfinite(one.predict(X[:10])).all()
    # An epoch in a fit of many: the fit's marginal cost per epoch. A fit's
    # first epoch also captures the CUDA graphs (and checks them).
    return {"train": (longer - first) / EXTRA_EPOCHS, "first": first,
            "infer": infer}


def run_torch(workload, X_np, y_np, tf32, repeats):
    import torch
    from torch import nn

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    device = torch.device("cuda")
    _, _, F, H, batch = WORKLOADS[workload]
    n_samples = len(X_np)
    X = torch.from_numpy(X_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    torch.manual_seed(0)
    lstm = nn.LSTM(F, H, batch_first=True).to(device)
    head = nn.Linear(H, 1).to(device)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()),
                           lr=1e-3)

    def epoch():
        perm = torch.randperm(n_samples, device=device)
        for start in range(0, n_samples, batch):
            idx = perm[start:start + batch]
            _, (h_n, _) = lstm(X[idx])
            loss = nn.functional.mse_loss(head(h_n[-1]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def infer():
        with torch.inference_mode():
            return [head(lstm(X[s:s + INFER_BATCH])[1][0][-1]).cpu()
                    for s in range(0, n_samples, INFER_BATCH)]

    train = median_time(epoch, repeats, torch.cuda.synchronize)
    inference = median_time(infer, repeats, torch.cuda.synchronize)
    return {"train": train, "infer": inference}


def torch_unavailable():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "PyTorch has no CUDA device"
    return None


# ------------------------------------------------------------------ driver
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller N per workload: {QUICK_N}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--tf32", default="off,on",
                        help="TF32 settings to run: off, on or off,on")
    parser.add_argument("--no-graphs", action="store_true",
                        help="sklstm without CUDA graphs (every kernel "
                             "launched from Python)")
    args = parser.parse_args()

    from sklstm._backends import cuda_status

    cupy, reason = cuda_status()
    if cupy is None:
        sys.exit(f"bench_gpu needs CuPy and a GPU: {reason}")
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, "
          f"CuPy {cupy.__version__}, repeats={args.repeats}, quick={args.quick}")
    skip_torch = torch_unavailable()
    if skip_torch:
        print(f"skipped torch: {skip_torch}")

    rows = []
    for workload in args.workloads.split(","):
        n_samples = QUICK_N[workload] if args.quick else WORKLOADS[workload][0]
        X, y = make_data(workload, n_samples)
        for setting in args.tf32.split(","):
            tf32 = setting == "on"
            sk = run_sklstm(workload, X, y, tf32, args.repeats,
                            graphs=not args.no_graphs)
            th = None if skip_torch else run_torch(workload, X, y, tf32, args.repeats)
            rows.append((workload, n_samples, setting, sk, th))
            _print_row(*rows[-1])


def _print_row(workload, n_samples, setting, sk, th):
    if not hasattr(_print_row, "header"):
        _print_row.header = True
        print(f"\n{'':4} {'N':>6} {'tf32':>4} | {'epoch s: sklstm':>15} {'torch':>8} "
              f"{'t/sk':>6} {'sk 1st':>7} | {'infer s: sklstm':>15} {'torch':>8} "
              f"{'t/sk':>6}")

    def col(result, key):
        return f"{result[key]:8.4f}" if result else f"{'-':>8}"

    def ratio(key):
        return f"{th[key] / sk[key]:6.2f}" if th else f"{'-':>6}"

    print(f"{workload:4} {n_samples:6d} {setting:>4} | {sk['train']:15.4f} "
          f"{col(th, 'train')} {ratio('train')} {sk['first']:7.3f} | "
          f"{sk['infer']:15.4f} "
          f"{col(th, 'infer')} {ratio('infer')}", flush=True)


if __name__ == "__main__":
    main()
