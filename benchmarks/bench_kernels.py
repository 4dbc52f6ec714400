"""Each LSTM kernel call of the CPU benchmark's workloads, timed alone and
set against a lower bound of its time.

For each layer-direction of the workloads of ``bench_cpu.py`` (W1-W4), with
the arrays a fit keeps for it (``_LayerDirection`` of
``sklstm/_backends/_cpu_steps.py``, so the same workspaces, packed weights
and thread plan) and BLAS held at one thread as a fit holds it, it times
``lstm_forward`` (training) and ``lstm_backward`` alternately, medians over
the calls, on one thread and on the pieces a fit cuts the call into. For
each call it prints the milliseconds, GFLOP/s, the share of the float32 GEMM
peak on as many threads (measured as ``bench_cpu.py`` measures it, the
higher of a measurement before the calls and one after), the share of the
cores' float32 multiply-add peak (``bench_cpu.fma_peak``: no product runs
faster) and a lower bound of its time:

- its matrix products at that peak: forward ``2 T B 4H (I + H)`` FLOPs;
  backward ``2 T B 4H (2H + I)``, and ``2 T B 4H I`` more when it computes
  the gradient of its input (layers above the first);
- plus its gate activations at the speed they run alone over an array
  (in cache, the fastest of 200 calls), the kernels' own ``sigmoid`` and ``tanh``:
  five per hidden unit and step forward (three sigmoids, two tanh), one
  backward (the tanh of the cell, recomputed), divided among the threads.

What the bound leaves out is the rest of the cell's arithmetic, the copies
and packing, and the threads' start and join. ``bound / time`` is then the
share of the call that the products and the activations take at best: near
1, a faster kernel must make the products or the activations cheaper (the
activations' cost is that of their accuracy, a few ulp; see
``docs/kernels.rst``); well below 1, time goes elsewhere. These are
calls with warm caches, in a loop; ``bench_cpu.py`` times whole epochs. On
a shared host the ratio moves with the host's speed between the peak's
measurements and the calls: read it from calm runs, where the peaks before
and after agree.

Usage::

    python benchmarks/bench_kernels.py                  # W1-W4, 2 threads
    python benchmarks/bench_kernels.py --workloads W4 --threads 2
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cpu import WORKLOADS, fma_peak, gemm_peak, parse_workloads  # noqa: E402

from sklstm._backends import _cpu  # noqa: E402
from sklstm._backends._cpu_steps import _LayerDirection  # noqa: E402
from sklstm._kernels._dispatch import kernels  # noqa: E402

#: (sigmoids, tanh) per hidden unit and step of each pass.
ACTIVATIONS = {"forward": (3, 2), "backward": (0, 1)}


def layer_directions(workload):
    """``(name, n_inputs, n_units, reverse, input_grad, top)`` of each
    layer-direction of ``workload``."""
    _, _, F, sizes, bidirectional, _ = WORKLOADS[workload]
    D = 2 if bidirectional else 1
    out, n_inputs = [], F
    for layer, H in enumerate(sizes):
        for direction in range(D):
            name = f"L{layer + 1}" + ("" if D == 1 else " rev" if direction else " fwd")
            out.append((name, n_inputs, H, bool(direction), layer > 0,
                        layer == len(sizes) - 1))
        n_inputs = D * H
    return out


def pass_flops(phase, T, B, n_inputs, n_units, input_grad):
    """FLOPs of the matrix products of one kernel call."""
    G = 4 * n_units
    if phase == "forward":
        return 2 * T * B * G * (n_inputs + n_units)
    # dh_prev = dgates @ W_hh, dW_hh, dW_ih, and dX = dgates @ W_ih
    return 2 * T * B * G * (2 * n_units + n_inputs * (2 if input_grad else 1))


def activation_seconds(n_values, repeats=200):
    """Seconds per value of the kernels' float32 sigmoid and of their tanh,
    each over an array of ``n_values``: the fastest of ``repeats`` calls,
    as the bound is the best case."""
    activations = kernels._activations_memview
    x = np.random.default_rng(0).standard_normal(n_values).astype(np.float32) * 3
    out = np.empty_like(x)
    times = {}
    for name, args in (("sigmoid", (x, out, None)), ("tanh", (x, None, out))):
        activations(*args)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            activations(*args)
            samples.append(time.perf_counter() - start)
        times[name] = min(samples) / n_values
    return times["sigmoid"], times["tanh"]


def bound_seconds(phase, T, B, n_inputs, n_units, input_grad, threads, peak,
                  sigmoid_s, tanh_s):
    """The lower bound of a call's time: its products at ``peak`` FLOP/s and
    its activations at ``sigmoid_s``/``tanh_s`` seconds a value, on
    ``threads`` threads."""
    n_sigmoid, n_tanh = ACTIVATIONS[phase]
    cells = T * B * n_units * (n_sigmoid * sigmoid_s + n_tanh * tanh_s)
    products = pass_flops(phase, T, B, n_inputs, n_units, input_grad)
    return products / peak + cells / threads


class KernelCalls:
    """One layer-direction's forward and backward calls, as a fit makes
    them, on random data. A layer below the top (W4's first, bidirectional
    as the layer above it) writes its hidden sequence into its half of the
    next layer's (T, B, 2H) input, and reads its gradient as the sum of its
    halves of two such arrays, the two directions' dX above."""

    def __init__(self, T, B, n_inputs, n_units, reverse, input_grad, top, seed=0,
                 module=kernels):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        G = 4 * n_units
        scale = 1 / np.sqrt(n_units)
        half = slice(n_units, None) if reverse else slice(None, n_units)
        self.ld = _LayerDirection(
            T, B, n_inputs, n_units, np.dtype(f32), input_grad=input_grad,
            own_dh_n=top,
            hidden=None if top else np.empty((T, B, 2 * n_units), f32)[:, :, half],
        )
        self.X = rng.standard_normal((T, B, n_inputs)).astype(f32)
        self.lengths = np.full(B, T, dtype=np.intp)
        self.W_ih = rng.uniform(-scale, scale, (G, n_inputs)).astype(f32)
        self.W_hh = rng.uniform(-scale, scale, (G, n_units)).astype(f32)
        self.bias = rng.uniform(-scale, scale, G).astype(f32)
        self.dW_ih, self.dW_hh = np.empty_like(self.W_ih), np.empty_like(self.W_hh)
        self.dbias = np.empty(G, f32)
        self.dhidden = self.dhidden_add = None
        if top:
            self.ld.dh_n[...] = rng.standard_normal((B, n_units))
        else:
            dX_above = rng.standard_normal((2, T, B, 2 * n_units)).astype(f32)
            self.dhidden = dX_above[0][:, :, half]
            self.dhidden_add = dX_above[1][:, :, half]
        self.reverse = reverse
        # ``module``: a build of the kernels (the one in use, or another's
        # for ab_kernels.py)
        self.forward_kernel = _cpu.specialised(module.lstm_forward, np.float32)
        self.backward_kernel = _cpu.specialised(module.lstm_backward, np.float32)

    def forward(self, n_threads):
        ld = self.ld
        self.forward_kernel(
            self.X, self.lengths, self.W_ih, self.W_hh, self.bias, self.reverse,
            True, ld.gates, ld.cells, ld.hidden, ld.h_n, ld.c_n, ld.step_gates,
            xh=ld.xh, W_cat_t=ld.W_cat_t, n_parts=ld.n_parts, n_threads=n_threads)

    def backward(self, n_threads):
        ld = self.ld
        self.backward_kernel(
            self.X, self.lengths, self.W_ih, self.W_hh, self.reverse, ld.gates,
            ld.cells, ld.hidden, self.dhidden, ld.dX, self.dW_ih, self.dW_hh,
            self.dbias, ld.gates, ld.dgates_step, ld.dh_rec, ld.dc_state,
            W_hh_packed=ld.W_hh_packed, weight_grad_work=ld.weight_grad_work,
            n_parts=ld.n_parts, n_threads=n_threads, dh_n=ld.dh_n,
            dhidden_add=self.dhidden_add)


def time_calls(calls, n_threads, repeats, min_seconds):
    """Median seconds of forward and of backward, alternating (backward
    overwrites the gates that forward wrote), after two warm-up pairs."""
    for _ in range(2):
        calls.forward(n_threads)
        calls.backward(n_threads)
    forward, backward = [], []
    while len(forward) < repeats or sum(forward) + sum(backward) < min_seconds:
        start = time.perf_counter()
        calls.forward(n_threads)
        middle = time.perf_counter()
        calls.backward(n_threads)
        forward.append(middle - start)
        backward.append(time.perf_counter() - middle)
    return statistics.median(forward), statistics.median(backward)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20,
                        help="the fewest timed pairs of calls per layer-direction")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="time more pairs while they add up to less")
    args = parser.parse_args(argv)
    workloads = parse_workloads(parser, args.workloads)

    thread_counts = sorted({1, args.threads})
    timings = []  # (label, phase, T, B, n_inputs, H, input_grad, threads, seconds)
    with threadpool_limits(args.threads):
        before = {n: gemm_peak(n) for n in thread_counts}
        fma_before = {n: fma_peak(n) for n in thread_counts}
        # 64 Ki values, 256 KiB an array: in cache, as the cells' gates are
        sigmoid_s, tanh_s = activation_seconds(1 << 16)
        with _cpu._blas_hold():  # as a fit holds BLAS: one thread
            for workload in workloads:
                _, T, _, _, _, B = WORKLOADS[workload]
                for name, n_in, H, reverse, input_grad, top in (
                        layer_directions(workload)):
                    calls = KernelCalls(T, B, n_in, H, reverse, input_grad, top)
                    for n_threads in sorted({1, calls.ld.n_parts}):
                        seconds = time_calls(calls, n_threads, args.repeats,
                                             args.min_seconds)
                        for phase, s in zip(("forward", "backward"), seconds):
                            timings.append((f"{workload} {name}", phase, T, B, n_in,
                                            H, input_grad, n_threads, s))
        after = {n: gemm_peak(n) for n in thread_counts}
        fma_after = {n: fma_peak(n) for n in thread_counts}
    # The bound is the best case: the higher of the peaks measured before
    # and after the calls (as bench_cpu.py takes it), and the activations'
    # fastest call.
    peaks = {n: max(before[n], after[n]) * 1e9 for n in thread_counts}
    fmas = {n: max(fma_before[n], fma_after[n]) * 1e9 for n in thread_counts}
    print("float32 GEMM peak (SciPy BLAS, 2048^3; before / after the calls): "
          + ", ".join(f"{before[n]:.0f} / {after[n]:.0f} GFLOP/s on {n} thread(s)"
                      for n in thread_counts))
    print("float32 multiply-add peak (sklstm's build; before / after): "
          + ", ".join(f"{fma_before[n]:.0f} / {fma_after[n]:.0f} GFLOP/s on {n} "
                      "thread(s)" for n in thread_counts))
    print(f"gate activations alone, one thread: sigmoid {sigmoid_s * 1e9:.2f}, "
          f"tanh {tanh_s * 1e9:.2f} ns a value")
    print(f"{'call':<20}{'pass':<10}{'threads':>7}{'ms':>9}{'GFLOP/s':>9}"
          f"{'% peak':>8}{'% FMA':>7}{'bound ms':>10}{'bound/time':>11}")
    rows = []
    for label, phase, T, B, n_in, H, input_grad, n_threads, s in timings:
        flop = pass_flops(phase, T, B, n_in, H, input_grad)
        peak = peaks[n_threads]
        bound = bound_seconds(phase, T, B, n_in, H, input_grad, n_threads, peak,
                              sigmoid_s, tanh_s)
        rows.append((label, phase, n_threads, s, flop / s, flop / s / peak, bound))
        print(f"{label:<20}{phase:<10}{n_threads:>7}{s * 1e3:>9.3f}"
              f"{flop / s / 1e9:>9.1f}{100 * flop / s / peak:>7.0f}%"
              f"{100 * flop / s / fmas[n_threads]:>6.0f}%"
              f"{bound * 1e3:>10.3f}{bound / s:>11.2f}")
    return rows


if __name__ == "__main__":
    main()
