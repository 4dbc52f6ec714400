"""CPU training and inference benchmark: sklstm vs PyTorch vs Keras.

For each workload and each side (sklstm through its public estimator,
PyTorch ``nn.LSTM`` + ``nn.Linear``, Keras ``LSTM`` + ``Dense``, all trained
with Adam on the MSE of the last hidden state's output, float32), it times

- one training epoch (shuffle, minibatches, forward, BPTT, Adam step), and
- inference over all samples,

as the median of at least ``--repeats`` runs after one warm-up, and of as
many more as fit in ``--min-seconds`` (up to 100: W1's epoch of ~10 ms
otherwise took 3 samples of 30 ms of a host whose speed moves by tens of
per cent over seconds), with the same number
of threads on every side (``torch.set_num_threads``, TensorFlow's intra/inter
op pools, ``threadpoolctl`` for the BLAS libraries), and prints a table of
seconds, the ratios torch/sklstm and keras/sklstm, sklstm's achieved GFLOP/s
against this machine's float32 GEMM peak (measured in the same run through
SciPy's BLAS, before and after the sides; the higher is taken), and each
side's peak memory. Last, each of the project's targets that the run
measured (``SPEED_TARGETS``, ``PEAK_TARGET``): the ratio, whether it was met,
and the share of the GEMM peak that sklstm must run at to meet it at the
other side's time in this run, beside the share it ran at. sklstm's own
packed products can run faster than that GEMM (one Zen 4 core: 106-117
GFLOP/s against OpenBLAS' 104), so the need is also given as a share of
the cores' float32 multiply-add peak (``fma_peak``, measured with
sklstm's build before and after the sides): where that is above 100 %, no
code meets the target here in that run, the products alone would take
longer; where the need is below the GEMM peak's 100 %, the gap between it
and the share sklstm ran at is what the kernels have left to win.

The epoch is timed alike on every side: PyTorch's epoch loop; inside
sklstm's ``fit(max_iter=1)``, its one epoch (``_train_one_epoch``); inside
Keras' ``fit(epochs=1)``, the epoch between its callbacks' epoch begin and
end. What a fit call adds around its epoch (checking X and y; for sklstm
also drawing the initial parameters: 1-3 ms) is printed apart, as the
whole call's time.

FLOPs: forward per layer-direction ``2 T N 4H (I + H)``; training is counted
as 3x forward (forward, gradient of the input side, gradient of the weights).

Each side runs each workload in a subprocess of its own (so imports, thread
pools and peak memory do not mix; a process kept across workloads hid
Keras' W4 peak inside the memory TensorFlow kept from W3), except with
``--quick``, where one process per side runs all workloads (importing
TensorFlow takes ~10 s a process). The sides of a workload run back to back,
so that a slow spell of a shared host falls on all sides of one workload
rather than on every workload of one side (before, W1 of sklstm and W1 of
Keras ran minutes apart). ``--rounds R``
goes through all workloads and sides R times, interleaved, and reports the
median over the rounds of each side's times. ``--paired`` also times
sklstm and PyTorch in one process, their calls alternating (sklstm, torch,
then torch, sklstm), and prints the median of the pairs' ratios: a slow
spell of the host then falls on both calls of a pair, where the sides'
separate runs can be seconds (W3: minutes) apart. Its cost: each call
starts with the other side's data in the caches, which weighs on the
shortest calls (W1's) most. Peak memory is the high-water
mark of the resident set (``VmHWM``, reset through ``/proc/self/clear_refs``
before each measured call) minus the resident set before the model was
built: it includes the side's working memory but not the data set it was
given.

PyTorch and TensorFlow are benchmark-only dependencies; a side whose library
is missing is skipped with the reason printed.

Usage::

    python benchmarks/bench_cpu.py              # full workloads
    python benchmarks/bench_cpu.py --quick      # smaller N, under a minute
    python benchmarks/bench_cpu.py --contention # a busy process on one core
    python benchmarks/bench_cpu.py --rounds 3   # interleaved, steadier ratios
    python benchmarks/bench_cpu.py --paired     # and sklstm/torch call by call
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cpu.py
"""

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# name: (N, T, F, hidden_layer_sizes, bidirectional, batch_size)
WORKLOADS = {
    "W1": (1000, 20, 1, (32,), False, 32),
    "W2": (4096, 50, 8, (64,), False, 64),
    "W3": (8192, 100, 32, (256,), False, 128),
    "W4": (4096, 50, 8, (64, 64), True, 64),
}
# --quick keeps T, F, H and the batch size (so the per-batch work is the
# same) and cuts N.
QUICK_N = {"W1": 1000, "W2": 512, "W3": 128, "W4": 256}
SIDES = ("sklstm", "torch", "keras")
INFER_BATCH = 1024  # torch and keras inference batch; sklstm chooses its own

# The project's targets (issue 4): (phase, other side, workload, how many
# times faster than the other side sklstm should be).
SPEED_TARGETS = (
    [("train", "torch", "W1", 5.0)]
    + [("train", "torch", w, 2.0) for w in ("W2", "W3", "W4")]
    + [("train", "keras", w, 5.0) for w in WORKLOADS]
    + [("infer", "torch", w, 2.0) for w in ("W1", "W2", "W4")]
    + [("infer", "torch", "W3", 1.5)]
)
# ... and sklstm's training of W3 at this share of the GEMM peak or more.
PEAK_TARGET = ("train", "W3", 0.60)


# ---------------------------------------------------------------- utilities
def parse_workloads(parser, text):
    """The workloads named in ``text`` (comma-separated), in its order; a
    name that is not one of WORKLOADS is a usage error of ``parser``."""
    workloads = [w.strip() for w in text.split(",") if w.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or not workloads:
        parser.error(f"unknown workloads {unknown or text!r}; expected some of "
                     f"{list(WORKLOADS)}")
    return workloads


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _trim():
    """Give freed heap memory back to the OS, so RSS is what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakMemory:
    """Peak resident memory of a block, above the resident set at ``base()``."""

    def base(self):
        _trim()
        self._base = _rss_kib("VmRSS")

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.peak_bytes = max(0, _rss_kib("VmHWM") - self._base) * 1024


#: The most timed calls of one measurement, whatever ``--min-seconds`` asks.
MAX_REPEATS = 100


def _more_calls(n_done, seconds, repeats, min_seconds):
    """Whether a measurement with ``n_done`` timed calls, which took
    ``seconds`` in all, takes another: until ``repeats`` calls, then while
    under ``min_seconds`` (at most MAX_REPEATS calls)."""
    return n_done < repeats or (n_done < MAX_REPEATS and seconds < min_seconds)


def _median_times(fn, repeats, min_seconds=0.0):
    """Medians over the timed calls of ``fn`` (after one warm-up; see
    :func:`_more_calls`) of the seconds of the part it times itself and of
    the whole call.

    ``fn`` returns the seconds of the epoch proper when the call does more
    (a fit call also checks its input and initialises the model), or None
    to have the whole call timed."""
    fn()  # warm-up
    parts, calls = [], []
    while _more_calls(len(calls), sum(calls), repeats, min_seconds):
        start = time.perf_counter()
        part = fn()
        calls.append(time.perf_counter() - start)
        parts.append(calls[-1] if part is None else part)
    return statistics.median(parts), statistics.median(calls)


def _median_time(fn, repeats, min_seconds=0.0):
    """Median over the timed calls of ``fn`` (after one warm-up; see
    :func:`_more_calls`) of the seconds of the whole call."""
    def whole_call():
        fn()  # returns None: _median_times times the whole call

    return _median_times(whole_call, repeats, min_seconds)[1]


def _time_and_memory(epoch, infer, repeats, min_seconds, mem):
    """Median times of ``epoch`` (the epoch proper, and the whole call) and
    ``infer``, then one more run of each under the peak-memory probe."""
    out = {}
    mem.base()
    out["train"], out["train_call"] = _median_times(epoch, repeats, min_seconds)
    with mem:
        epoch()
    out["train_mem"] = mem.peak_bytes
    out["infer"] = _median_time(infer, repeats, min_seconds)
    mem.base()
    with mem:
        infer()
    out["infer_mem"] = mem.peak_bytes
    return out


def flops(workload, n_samples):
    """Forward FLOPs of one pass over ``n_samples`` sequences."""
    _, T, F, sizes, bidirectional, _ = WORKLOADS[workload]
    n_dir = 2 if bidirectional else 1
    total, n_in = 0, F
    for H in sizes:
        total += n_dir * 2 * T * n_samples * 4 * H * (n_in + H)
        n_in = n_dir * H
    return total


def phase_flops(workload, n_samples, phase):
    """FLOPs of a training epoch (``phase="train"``: 3x forward) or of
    inference (``"infer"``) over ``n_samples`` sequences."""
    return flops(workload, n_samples) * (3 if phase == "train" else 1)


def make_data(workload, n_samples):
    import numpy as np

    _, T, F, _, _, _ = WORKLOADS[workload]
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, T, F)).astype(np.float32)
    y = (np.tanh(X[:, :, 0]).mean(axis=1) + 0.1 * rng.standard_normal(n_samples))
    return X, y.astype(np.float32)


def gemm_peak(threads, size=2048, repeats=5):
    """float32 GEMM GFLOP/s through SciPy's BLAS with ``threads`` threads."""
    import numpy as np
    from scipy.linalg.blas import sgemm
    from threadpoolctl import threadpool_limits

    rng = np.random.RandomState(0)
    a = np.asfortranarray(rng.standard_normal((size, size)).astype(np.float32))
    b = np.asfortranarray(rng.standard_normal((size, size)).astype(np.float32))
    with threadpool_limits(threads):
        seconds = _median_time(lambda: sgemm(1.0, a, b), repeats)
    return 2 * size**3 / seconds / 1e9


def fma_peak(threads, repeats=5, seconds=0.1):
    """float32 multiply-add GFLOP/s of ``threads`` cores in sklstm's build
    (vector FMAs with no memory traffic, see ``_kernels/_fma_peak.h``): the
    ceiling of any product on this machine."""
    from sklstm._kernels._dispatch import fma_rounds

    rounds = 1_000_000
    start = time.perf_counter()
    fma_rounds(rounds, threads)  # warm-up, and a first rate
    rate = rounds / max(time.perf_counter() - start, 1e-6)
    rounds = max(1, int(rate * seconds))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        flop = fma_rounds(rounds, threads)
        best = max(best, flop / (time.perf_counter() - start) / 1e9)
    return best


# ------------------------------------------------------------------- sides
# Each side's builder returns (epoch, infer, context): ``epoch()`` trains one
# epoch and returns the seconds of the epoch proper (None: time the whole
# call), ``infer()`` predicts every sample, and both run inside ``context``
# (a context manager: the side's thread limits).
def sklstm_calls(workload, n_samples, threads):
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from sklstm import LSTMRegressor
    from sklstm._base import BaseLSTM

    _, T, F, sizes, bidirectional, batch = WORKLOADS[workload]
    X, y = make_data(workload, n_samples)
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = LSTMRegressor(
        hidden_layer_sizes=sizes, bidirectional=bidirectional, batch_size=batch,
        max_iter=1, shuffle=True, alpha=0.0, random_state=0,
    )
    # The epoch proper is the fit's one call of _train_one_epoch (shuffle,
    # minibatches, forward, BPTT, Adam), as the other sides time their
    # epoch loop; the fit call around it also checks X and y and
    # initialises the model (reported apart, as "train_call").
    epoch_seconds = []
    train_one_epoch = BaseLSTM._train_one_epoch

    def timed_epoch(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return train_one_epoch(self, *args, **kwargs)
        finally:
            epoch_seconds.append(time.perf_counter() - start)

    def epoch():
        epoch_seconds.clear()
        model.fit(X, y)
        return epoch_seconds[0]

    def infer():
        predictions = model.predict(X)
        assert np.isfinite(predictions[:10]).all()
        return predictions

    @contextlib.contextmanager
    def context():
        BaseLSTM._train_one_epoch = timed_epoch
        try:
            with threadpool_limits(threads):
                yield
        finally:
            BaseLSTM._train_one_epoch = train_one_epoch

    return epoch, infer, context


def torch_calls(workload, n_samples, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    _, T, F, sizes, bidirectional, batch = WORKLOADS[workload]
    X_np, y_np = make_data(workload, n_samples)
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    torch.manual_seed(0)
    n_dir = 2 if bidirectional else 1
    # Stacked layers of equal size: one nn.LSTM.
    assert len(set(sizes)) == 1
    lstm = nn.LSTM(F, sizes[0], num_layers=len(sizes), batch_first=True,
                   bidirectional=bidirectional)
    head = nn.Linear(n_dir * sizes[0], 1)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)

    def last_hidden(xb):
        _, (h_n, _) = lstm(xb)
        return torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]

    def epoch():
        perm = torch.randperm(n_samples)
        for start in range(0, n_samples, batch):
            idx = perm[start:start + batch]
            pred = head(last_hidden(X[idx])).squeeze(1)
            loss = torch.nn.functional.mse_loss(pred, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def infer():
        with torch.inference_mode():
            return [head(last_hidden(X[s:s + INFER_BATCH]))
                    for s in range(0, n_samples, INFER_BATCH)]

    return epoch, infer, contextlib.nullcontext


def keras_calls(workload, n_samples, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    from keras import layers

    _, T, F, sizes, bidirectional, batch = WORKLOADS[workload]
    X, y = make_data(workload, n_samples)
    keras.utils.set_random_seed(0)
    stack = [keras.Input((T, F))]
    for k, H in enumerate(sizes):
        lstm = layers.LSTM(H, return_sequences=k < len(sizes) - 1)
        stack.append(layers.Bidirectional(lstm) if bidirectional else lstm)
    stack.append(layers.Dense(1))
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")

    class EpochTimer(keras.callbacks.Callback):
        """The epoch proper of a fit call (Keras also prepares the data)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = EpochTimer()

    def epoch():
        model.fit(X, y, batch_size=batch, epochs=1, shuffle=True, verbose=0,
                  callbacks=[timer])
        return timer.seconds

    def infer():
        return model.predict(X, batch_size=INFER_BATCH, verbose=0)

    return epoch, infer, contextlib.nullcontext


CALLS = {"sklstm": sklstm_calls, "torch": torch_calls, "keras": keras_calls}


def run_side(side, workload, n_samples, threads, repeats, min_seconds, mem):
    """One side alone: the medians of ``_time_and_memory``."""
    epoch, infer, context = CALLS[side](workload, n_samples, threads)
    with context():
        return _time_and_memory(epoch, infer, repeats, min_seconds, mem)


def run_paired(workload, n_samples, threads, repeats, min_seconds=0.0):
    """sklstm and PyTorch in one process, their calls alternating.

    Each repeat times both sides back to back, in the order sklstm, torch,
    then torch, sklstm on the next (ABBA), so that a slow spell of a shared
    host falls on both sides of a pair; the result holds each side's median
    and the median of the pairs' ratios (torch / sklstm). A pause before each
    call lets the other side's OpenMP threads stop spinning. After the
    warm-up pair, pairs are timed as :func:`_more_calls` says, on the time
    in the calls (not in the pauses)."""
    calls = {side: CALLS[side](workload, n_samples, threads)
             for side in ("sklstm", "torch")}
    out = {}
    for phase, index in (("train", 0), ("infer", 1)):
        times = {"sklstm": [], "torch": []}
        k, in_calls = 0, 0.0  # pairs so far (the first is the warm-up)
        while k == 0 or _more_calls(k - 1, in_calls, repeats, min_seconds):
            order = ("sklstm", "torch") if k % 2 == 0 else ("torch", "sklstm")
            for side in order:
                fn, context = calls[side][index], calls[side][2]
                time.sleep(0.05)
                with context():
                    start = time.perf_counter()
                    part = fn()
                    seconds = time.perf_counter() - start
                if k:  # not the warm-up pair
                    in_calls += seconds
                    # training: the epoch proper
                    times[side].append(part if phase == "train"
                                       and part is not None else seconds)
            k += 1
        for side, ts in times.items():
            out[f"{phase}_{side}"] = statistics.median(ts)
        out[f"{phase}_ratio"] = statistics.median(
            t / s for s, t in zip(times["sklstm"], times["torch"]))
    return out


def run_predict_memory(n_samples, n_steps, threads):
    """Peak memory of sklstm's predict on (n_samples, n_steps, 1), H=32."""
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from sklstm import LSTMRegressor

    warnings.simplefilter("ignore", ConvergenceWarning)
    H = 32
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, n_steps, 1)).astype(np.float32)
    model = LSTMRegressor(hidden_layer_sizes=(H,), max_iter=1, random_state=0)
    model.fit(X[:64], X[:64, -1, 0])
    mem = PeakMemory()
    with threadpool_limits(threads):
        mem.base()
        start = time.perf_counter()
        with mem:
            model.predict(X)
        seconds = time.perf_counter() - start
    return {"n_samples": n_samples, "n_steps": n_steps, "H": H,
            "seconds": seconds, "peak_bytes": mem.peak_bytes,
            "X_bytes": X.nbytes, "NTH_bytes": n_samples * n_steps * H * 4}


def worker(args):
    """Subprocess entry: one side (or ``paired``: sklstm and PyTorch). Reads
    a workload name per line of stdin and prints its result as one JSON
    line; ends at an empty line or EOF."""
    mem = PeakMemory()
    if args.worker == "predict_memory":
        result = run_predict_memory(args.memory_n, args.memory_t, args.threads)
        print("RESULT " + json.dumps(result))
        return
    for line in sys.stdin:
        workload = line.strip()
        if not workload:
            break
        n = QUICK_N[workload] if args.quick else WORKLOADS[workload][0]
        if args.worker == "paired":
            result = run_paired(workload, n, args.threads, args.repeats,
                                args.min_seconds)
        else:
            result = run_side(args.worker, workload, n, args.threads,
                              args.repeats, args.min_seconds, mem)
        result["n"] = n
        print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------- driver
def _spawn(argv, timeout=3600):
    cmd = [sys.executable, os.path.abspath(__file__)] + argv
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return None, reason


class _SideProcess:
    """A side's worker subprocess, asked for workloads one at a time."""

    def __init__(self, side, argv):
        # stderr to a file: TensorFlow writes enough to fill a pipe nobody
        # reads while the worker runs.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", side] + argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True)
        self.failure = None

    def run(self, workload):
        """The worker's result dict for ``workload``, or None (see ``failure``)."""
        if self.failure is not None:
            return None
        try:
            self._proc.stdin.write(workload + "\n")
            self._proc.stdin.flush()
            for line in self._proc.stdout:
                if line.startswith("RESULT "):
                    return json.loads(line[len("RESULT "):])
        except BrokenPipeError:
            pass
        self._proc.wait()
        self._stderr.seek(0)
        self.failure = (self._stderr.read().strip().splitlines()
                        or ["no output"])[-1]
        return None

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._stderr.close()


def _run_sides(sides, workloads, rounds, argv, fresh=True):
    """``{side: {workload: result}}`` (None for a side that failed) and
    ``{side: reason}`` of the sides skipped; the sides of each workload run
    back to back, and with several rounds each time is the median over the
    rounds (each peak memory the largest). ``fresh``: a new process per
    side and workload, else one per side."""
    skipped, failures = {}, {}
    for side in sides:
        reason = _available(side)
        if reason is not None:
            skipped[side] = reason
    running = [side for side in sides if side not in skipped]
    runs = {side: {w: [] for w in workloads} for side in running}
    processes = {}
    try:
        for _ in range(rounds):
            for workload in workloads:
                for side in running:
                    if side in failures:
                        continue
                    if fresh and side in processes:
                        processes.pop(side).close()
                    if side not in processes:
                        processes[side] = _SideProcess(side, argv)
                    result = processes[side].run(workload)
                    if result is None:
                        failures[side] = processes[side].failure
                    else:
                        runs[side][workload].append(result)
    finally:
        for process in processes.values():
            process.close()
    results = {side: None for side in sides}
    for side in running:
        if side in failures:
            skipped[side] = failures[side]
            continue
        results[side] = {
            w: {key: (max if key.endswith("_mem") else statistics.median)(
                    [r[key] for r in rs]) for key in rs[0]}
            for w, rs in runs[side].items()
        }
    return results, skipped


def _available(side):
    import importlib.util

    if side == "paired":
        return _available("sklstm") or _available("torch")
    module = {"sklstm": "sklstm", "torch": "torch", "keras": "tensorflow"}[side]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install {module})"
    if side == "keras" and importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    return None


def _fmt_mb(nbytes):
    return f"{nbytes / 2**20:7.1f}"


#: The busy process of ``--contention``: a pure-Python loop on one core,
#: which ends when its parent (whose pid it is given) does. The ``finally``
#: that kills it does not run when the benchmark itself is killed: an
#: orphan had stayed busy and slowed the next runs. The pid is passed, not
#: read with getppid() as the loop starts, since a parent killed before
#: then leaves the loop a new parent to watch.
BUSY_LOOP = """
import os, sys
while os.getppid() == int(sys.argv[1]):
    for _ in range(1_000_000):
        pass
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller N per workload: {QUICK_N}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="the fewest timed calls per measurement")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="time more calls while a measurement's add up "
                             f"to less (at most {MAX_REPEATS}); default 1, "
                             "0.2 with --quick")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times through all workloads and sides, "
                             "interleaved; each time is the median over them")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--contention", action="store_true",
                        help="keep one core busy with another process")
    parser.add_argument("--paired", action="store_true",
                        help="also time sklstm and PyTorch alternating in "
                             "one process, and print their pairs' ratios")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the long-sequence predict memory check")
    parser.add_argument("--memory-n", type=int, default=None)
    parser.add_argument("--memory-t", type=int, default=1000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workloads = parse_workloads(parser, args.workloads)
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 1.0
    if args.worker:
        worker(args)
        return

    env = {k: os.environ.get(k, "(unset)")
           for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"threads={args.threads} repeats={args.repeats} "
          f"min_seconds={args.min_seconds} rounds={args.rounds} "
          f"quick={args.quick} "
          f"contention={args.contention} "
          + " ".join(f"{k}={v}" for k, v in env.items()))
    busy = None
    if args.contention:
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())])
    try:
        # Measured before and after the sides, and the higher taken: on a
        # shared host the speed of the cores moves during a run, and a peak
        # taken at a slow moment would put sklstm above 100 % of it.
        peak_before = gemm_peak(args.threads)
        fma_before = fma_peak(args.threads)
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats),
                  "--min-seconds", str(args.min_seconds)]
        if args.quick:
            common.append("--quick")
        results, skipped = _run_sides(args.sides.split(","), args.workloads,
                                      args.rounds, common, fresh=not args.quick)
        paired = None
        if args.paired:
            paired, reason = _run_sides(["paired"], args.workloads, args.rounds,
                                        common, fresh=not args.quick)
            skipped.update(reason)
            paired = paired["paired"]
        memory = None
        if not args.no_memory and "sklstm" in args.sides.split(","):
            n_mem = args.memory_n or (2_000 if args.quick else 100_000)
            memory, reason = _spawn(
                ["--worker", "predict_memory", "--threads", str(args.threads),
                 "--memory-n", str(n_mem), "--memory-t", str(args.memory_t)])
            if reason:
                skipped["predict_memory"] = reason
        peak_after = gemm_peak(args.threads)
        fma_after = fma_peak(args.threads)
        peak = max(peak_before, peak_after)
        fma = max(fma_before, fma_after)
        print(f"float32 GEMM peak (SciPy BLAS, 2048^3, {args.threads} threads): "
              f"{peak:.1f} GFLOP/s (before the sides {peak_before:.1f}, after "
              f"{peak_after:.1f})")
        print(f"float32 multiply-add peak (sklstm's build, {args.threads} "
              f"threads): {fma:.1f} GFLOP/s (before {fma_before:.1f}, after "
              f"{fma_after:.1f}); the GEMM peak is {100 * peak / fma:.0f} % of it")
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()

    for side, reason in skipped.items():
        print(f"skipped {side}: {reason}")
    _print_table(args, results, peak, memory)
    if paired:
        _print_paired(args, paired)
    rows = target_rows(results, peak, args.workloads, paired, fma)
    if rows:
        _print_targets(rows)


def _print_table(args, results, peak, memory):
    sk, th, ks = (results.get(s) for s in SIDES)

    def sec(res, w, key):
        return f"{res[w][key]:8.4f}" if res else f"{'-':>8}"

    def ratio(res, w, key):
        return f"{res[w][key] / sk[w][key]:6.2f}" if res and sk else f"{'-':>6}"

    for phase in ("train", "infer"):
        print(f"\n{'epoch' if phase == 'train' else 'inference'} (seconds, median):")
        print(f"{'':4} {'N':>5} {'sklstm':>8} {'torch':>8} {'keras':>8} "
              f"{'t/sk':>6} {'k/sk':>6} {'GFLOP/s':>8} {'%peak':>6}   "
              f"peak MB: {'sklstm':>7} {'torch':>7} {'keras':>7}")
        for w in args.workloads:
            n = next(r[w]["n"] for r in results.values() if r)
            gflops = pct = f"{'-':>6}"
            if sk:
                rate = phase_flops(w, n, phase) / sk[w][phase] / 1e9
                gflops, pct = f"{rate:8.1f}", f"{100 * rate / peak:5.0f}%"
            mems = " ".join(
                _fmt_mb(r[w][phase + "_mem"]) if r else f"{'-':>7}"
                for r in (sk, th, ks))
            print(f"{w:4} {n:5d} {sec(sk, w, phase)} {sec(th, w, phase)} "
                  f"{sec(ks, w, phase)} {ratio(th, w, phase)} "
                  f"{ratio(ks, w, phase)} {gflops} {pct}            {mems}")

    if sk or ks:
        print("\nthe whole fit call of one epoch (seconds, median): the epoch "
              "above plus the checks of X and y and, for sklstm, the model's "
              "initialisation (PyTorch's loop has no such call):")
        for w in args.workloads:
            fit_ratio = (f"{th[w]['train'] / sk[w]['train_call']:6.2f}"
                         if th and sk else f"{'-':>6}")
            print(f"{w:4}   sklstm {sec(sk, w, 'train_call')}   keras "
                  f"{sec(ks, w, 'train_call')}   torch epoch / sklstm call "
                  f"{fit_ratio}")
    if sk:
        print("\nsklstm training memory per sample (peak / batch) vs the "
              "T*6H*4 bytes per layer-direction that BPTT must keep:")
        for w in args.workloads:
            _, T, F, sizes, bidirectional, batch = WORKLOADS[w]
            n_dir = 2 if bidirectional else 1
            bound = sum(n_dir * T * 6 * H * 4 for H in sizes)
            per = sk[w]["train_mem"] / batch
            print(f"  {w}: {per / 1024:8.1f} KiB/sample, bound {bound / 1024:8.1f} "
                  f"KiB/sample ({per / bound:4.2f}x)")
    if memory:
        print(f"\nsklstm predict on ({memory['n_samples']}, {memory['n_steps']}, 1), "
              f"H={memory['H']}: {memory['seconds']:.1f} s, peak "
              f"{memory['peak_bytes'] / 2**20:.1f} MB above the input "
              f"(X itself {memory['X_bytes'] / 2**20:.0f} MB; N*T*H*4 would be "
              f"{memory['NTH_bytes'] / 2**20:.0f} MB)")


def target_rows(results, peak, workloads, paired=None, fma=None):
    """Each target of SPEED_TARGETS and PEAK_TARGET that this run measured.

    A speed target comes with the ratio measured (the other side's time over
    sklstm's; for PyTorch also the paired ratio, when ``--paired`` ran), and
    with the share of the GEMM peak that sklstm would have to run at to
    meet it, given the other side's time in this run, and with ``fma`` (the
    multiply-add peak, GFLOP/s) the same need as a share of it: where that
    share is above 1, no code can meet the target on this machine in this
    run.

    Returns a list of dicts with keys ``phase``, ``other``, ``workload``,
    ``target``, ``ratio``, ``paired_ratio`` (None if not measured),
    ``needs`` and ``runs_at`` (shares of ``peak``) and ``needs_fma`` (a
    share of ``fma``; None without it); the peak target's dict has
    ``other`` None, ``target`` the share asked, ``ratio`` None.
    """
    sk = results.get("sklstm")
    rows = []
    if not sk:
        return rows
    for phase, other, w, target in SPEED_TARGETS:
        theirs = results.get(other)
        if w not in workloads or not theirs or w not in theirs or w not in sk:
            continue
        work = phase_flops(w, sk[w]["n"], phase)
        paired_ratio = None
        if paired and other == "torch" and w in paired:
            paired_ratio = paired[w][f"{phase}_ratio"]
        rows.append({
            "phase": phase, "other": other, "workload": w, "target": target,
            "ratio": theirs[w][phase] / sk[w][phase],
            "paired_ratio": paired_ratio,
            # sklstm's time at the target is theirs / target
            "needs": work * target / theirs[w][phase] / 1e9 / peak,
            "runs_at": work / sk[w][phase] / 1e9 / peak,
            "needs_fma": (None if fma is None
                          else work * target / theirs[w][phase] / 1e9 / fma),
        })
    phase, w, share = PEAK_TARGET
    if w in workloads and w in sk:
        runs_at = phase_flops(w, sk[w]["n"], phase) / sk[w][phase] / 1e9 / peak
        rows.append({"phase": phase, "other": None, "workload": w,
                     "target": share, "ratio": None, "paired_ratio": None,
                     "needs": share, "runs_at": runs_at,
                     "needs_fma": None if fma is None else share * peak / fma})
    return rows


def _print_targets(rows):
    print("\ntargets (ratio: the other side's time / sklstm's; needs: the "
          "share of the GEMM peak sklstm must run at to meet the target, at "
          "the other side's time in this run; runs at: sklstm's share; of "
          "FMA: the need as a share of the multiply-add peak, above 100 % no "
          "code meets the target in this run):")
    print(f"{'':4} {'phase':6} {'target':>16} {'ratio':>6} {'paired':>7} "
          f"{'met':>4} {'needs':>6} {'runs at':>8} {'of FMA':>7}")
    for r in rows:
        if r["other"] is None:
            goal = f">= {100 * r['target']:.0f}% peak"
            met = r["runs_at"] >= r["target"]
            ratio = paired = f"{'-':>6}"
        else:
            goal = f"{r['target']:g}x {r['other']}"
            met = r["ratio"] >= r["target"]
            ratio = f"{r['ratio']:6.2f}"
            paired = (f"{r['paired_ratio']:6.2f}" if r["paired_ratio"] is not None
                      else f"{'-':>6}")
        print(f"{r['workload']:4} {r['phase']:6} {goal:>16} {ratio} {paired:>7} "
              f"{'yes' if met else 'no':>4} {100 * r['needs']:5.0f}% "
              f"{100 * r['runs_at']:7.0f}% "
              + (f"{100 * r['needs_fma']:6.0f}%" if r["needs_fma"] is not None
                 else f"{'-':>7}"))


def _print_paired(args, paired):
    print("\nsklstm and PyTorch alternating in one process (--paired; seconds, "
          "median; t/sk: the median of the pairs' ratios):")
    print(f"{'':4} {'N':>5}   {'train':>8} {'sklstm':>8} {'torch':>8} {'t/sk':>6}"
          f"   {'infer':>8} {'sklstm':>8} {'torch':>8} {'t/sk':>6}")
    for w in args.workloads:
        r = paired[w]
        print(f"{w:4} {r['n']:5d}   {'':8} {r['train_sklstm']:8.4f} "
              f"{r['train_torch']:8.4f} {r['train_ratio']:6.2f}   {'':8} "
              f"{r['infer_sklstm']:8.4f} {r['infer_torch']:8.4f} "
              f"{r['infer_ratio']:6.2f}")


if __name__ == "__main__":
    main()
