"""Two builds of the LSTM kernels, timed call by call in one process.

Why: on a shared host the speed moves by 10-30 % over minutes, more than
most changes to a kernel are worth, so timing an old build and a new one in
separate runs (or processes) compares the host's moods as much as the code.
Here both builds' ``lstm_forward`` and ``lstm_backward`` run on the same
layer-directions (``KernelCalls`` of ``bench_kernels.py``: a fit's arrays,
workspaces and thread plan, BLAS held at one thread), their calls
alternating (this build first in one round, the other first in the next),
so a slow spell of the host falls on both calls of a round. The script
prints each build's median milliseconds and the median of the rounds'
ratios, this build's time over the other's: below 1, this build is faster.

The other build is a checkout of sklstm built in place (``python setup.py
build_ext --inplace``, or ``pip install -e .``); its kernel module of the
same instruction set as this one's (``SKLSTM_SIMD`` and the CPU pick it) is
loaded beside it under another name. Both are called with the arguments
this checkout's ``_LayerDirection`` prepares, so the two kernels must take
the same arguments and workspaces. Results are compared too: a build that
gives other numbers than this one is reported (not every change must keep
them bit for bit, but most do here).

Usage::

    git worktree add /tmp/base HEAD~1
    (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/ab_kernels.py /tmp/base --workloads W3 --threads 2
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cpu import WORKLOADS, parse_workloads  # noqa: E402
from bench_kernels import KernelCalls, layer_directions  # noqa: E402

from sklstm._backends import _cpu  # noqa: E402
from sklstm._kernels._dispatch import kernels  # noqa: E402


def load_other_build(checkout):
    """The kernel module of another checkout, of the same instruction set
    as the one in use here, imported under another name."""
    filename = Path(kernels.__file__).name
    path = Path(checkout) / "sklstm" / "_kernels" / filename
    if not path.is_file():
        raise ValueError(
            f"no {filename} in {path.parent}: build that checkout in place "
            "first (python setup.py build_ext --inplace)"
        )
    if path.resolve() == Path(kernels.__file__).resolve():
        raise ValueError(f"{checkout} is this checkout: give another one")
    # The module's init function is named after the last part of its name,
    # so the parent name may differ; it must not be imported as sklstm's.
    name = "sklstm_other_build." + kernels.__name__.rsplit(".", 1)[1]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        # e.g. it cimports a module of this checkout's whose C API differs
        raise ValueError(f"{path} does not load beside this build: {error}")
    return module


def run_pair(calls, n_threads):
    """Seconds of one forward and one backward call."""
    start = time.perf_counter()
    calls.forward(n_threads)
    middle = time.perf_counter()
    calls.backward(n_threads)
    return middle - start, time.perf_counter() - middle


def results(calls):
    """What the last forward and backward calls computed."""
    return [calls.ld.h_n, calls.dW_ih, calls.dW_hh, calls.dbias]


def compare(builds, n_threads, rounds, min_seconds):
    """Medians of the forward and backward seconds of ``builds`` ("this"
    and "other": ``KernelCalls`` of one layer-direction, the same data) and
    of their rounds' ratios (this / other), and whether both gave the same
    results."""
    for calls in builds.values():  # warm-up, and the results to compare
        run_pair(calls, n_threads)
    same = all(np.array_equal(a, b) for a, b in
               zip(results(builds["this"]), results(builds["other"])))
    times = {name: [] for name in builds}
    spent = 0.0
    while len(times["this"]) < rounds or spent < min_seconds:
        order = ("this", "other") if len(times["this"]) % 2 else ("other", "this")
        for name in order:
            seconds = run_pair(builds[name], n_threads)
            times[name].append(seconds)
            spent += sum(seconds)
        if len(times["this"]) >= 1000:
            break
    out = {}
    for phase in (0, 1):
        this = [t[phase] for t in times["this"]]
        that = [t[phase] for t in times["other"]]
        out[phase] = (statistics.median(this), statistics.median(that),
                      statistics.median(a / b for a, b in zip(this, that)))
    return out, same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="another sklstm checkout, built in place")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10,
                        help="the fewest rounds (one call pair of each build)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="time more rounds while they add up to less")
    args = parser.parse_args(argv)
    workloads = parse_workloads(parser, args.workloads)
    try:
        other = load_other_build(args.other)
    except ValueError as error:
        parser.error(str(error))

    print(f"this build: {kernels.__file__}\nother build: {other.__file__}")
    print(f"{'call':<20}{'pass':<10}{'threads':>7}{'this ms':>10}{'other ms':>10}"
          f"{'this/other':>12}  results")
    rows = []
    with threadpool_limits(args.threads), _cpu._blas_hold():
        for workload in workloads:
            _, T, _, _, _, B = WORKLOADS[workload]
            for name, n_in, H, reverse, input_grad, top in layer_directions(workload):
                shape = (T, B, n_in, H, reverse, input_grad, top)
                builds = {"this": KernelCalls(*shape),
                          "other": KernelCalls(*shape, module=other)}
                for n_threads in sorted({1, builds["this"].ld.n_parts}):
                    out, same = compare(builds, n_threads, args.rounds,
                                        args.min_seconds)
                    for phase, label in ((0, "forward"), (1, "backward")):
                        this_s, other_s, ratio = out[phase]
                        rows.append((f"{workload} {name}", label, n_threads,
                                     this_s, other_s, ratio, same))
                        print(f"{workload + ' ' + name:<20}{label:<10}{n_threads:>7}"
                              f"{this_s * 1e3:>10.3f}{other_s * 1e3:>10.3f}"
                              f"{ratio:>12.3f}  {'same' if same else 'DIFFER'}")
    return rows


if __name__ == "__main__":
    main()
