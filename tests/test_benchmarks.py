"""The CPU benchmark script runs and prints its tables (tiny settings: this
checks the script, not the speed; speed is read from full runs)."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu.py"


def _run(*args):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1",
         "--min-seconds", "0", "--no-memory", "--workloads", "W1", *args],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _row(output, header, workload="W1"):
    """The fields of ``workload``'s first row after the line ``header``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return next(line.split() for line in lines[start:]
                if line.startswith(workload))


def test_sklstm_side_alone():
    out = _run("--sides", "sklstm")
    fields = _row(out, "epoch (seconds")
    # W1, N, sklstm seconds, then '-' for the sides not run
    assert fields[:2] == ["W1", "1000"]
    assert 0 < float(fields[2]) < 60
    assert fields[3] == fields[4] == "-"
    assert 0 < float(_row(out, "inference (seconds")[2]) < 60


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed")
def test_paired_with_torch():
    out = _run("--sides", "sklstm,torch", "--paired")
    fields = _row(out, "sklstm and PyTorch alternating")
    # W1 N | train: sklstm torch ratio | infer: sklstm torch ratio
    assert fields[:2] == ["W1", "1000"]
    sk_train, torch_train, ratio = map(float, fields[2:5])
    assert sk_train > 0 and torch_train > 0 and ratio > 0
    sk_infer, torch_infer, ratio = map(float, fields[5:8])
    assert sk_infer > 0 and torch_infer > 0 and ratio > 0
    # the targets of W1 against PyTorch, with the paired ratios
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("targets"))
    targets = [line.split() for line in lines[start:]
               if line.startswith("W1") and "torch" in line]
    assert [t[1] for t in targets] == ["train", "infer"]
    assert all(t[6] in ("yes", "no") for t in targets)


def _load(script):
    """A benchmark script as a module (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_measurement_times_enough_calls_to_fill_min_seconds():
    bench = _load(SCRIPT)
    calls = []  # each call's seconds

    def ten_ms_call():
        start = time.perf_counter()
        time.sleep(0.01)
        calls.append(time.perf_counter() - start)

    bench._median_time(ten_ms_call, repeats=2, min_seconds=0)
    assert len(calls) == 1 + 2  # the warm-up, then the repeats
    calls.clear()
    bench._median_time(ten_ms_call, repeats=2, min_seconds=0.05)
    timed = calls[1:]
    # calls until their time adds up to 50 ms (as the script times them,
    # with the call around: up to 1 ms more), and not one more
    assert len(timed) > 2 and sum(timed) >= 0.049 and sum(timed[:-1]) < 0.05
    calls.clear()
    bench._median_time(lambda: calls.append(None), repeats=2, min_seconds=60)
    assert len(calls) == 1 + bench.MAX_REPEATS


def test_targets_give_the_ratio_and_the_share_of_the_peak_each_needs():
    bench = _load(SCRIPT)
    n = bench.WORKLOADS["W4"][0]
    train_flops = 3 * bench.flops("W4", n)
    results = {
        "sklstm": {"W4": {"n": n, "train": 1.5, "infer": 0.5}},
        "torch": {"W4": {"n": n, "train": 3.3, "infer": 0.9}},
    }
    peak = 100.0  # GFLOP/s
    rows = bench.target_rows(results, peak, ["W4"],
                             paired={"W4": {"train_ratio": 1.9, "infer_ratio": 2.1}})
    # W4's targets against PyTorch only: Keras was not run, W1-W3 were not
    assert [(r["phase"], r["other"], r["target"]) for r in rows] == [
        ("train", "torch", 2.0), ("infer", "torch", 2.0)]
    train, infer = rows
    assert train["ratio"] == pytest.approx(3.3 / 1.5)
    assert train["paired_ratio"] == 1.9
    # twice PyTorch: an epoch in 3.3 / 2 s
    assert train["needs"] == pytest.approx(train_flops / (3.3 / 2) / 1e9 / peak)
    assert train["runs_at"] == pytest.approx(train_flops / 1.5 / 1e9 / peak)
    assert infer["ratio"] == pytest.approx(0.9 / 0.5)  # below its 2x
    assert infer["needs"] > infer["runs_at"]
    assert train["needs_fma"] is None  # no multiply-add peak given
    # the same needs as shares of a multiply-add peak twice the GEMM's
    rows_fma = bench.target_rows(results, peak, ["W4"], fma=2 * peak)
    for row, row_fma in zip(rows, rows_fma):
        assert row_fma["needs_fma"] == pytest.approx(row["needs"] / 2)
    # W3's share of the peak is a target of its own
    results["sklstm"]["W3"] = {"n": 8192, "train": 10.0, "infer": 3.0}
    rows = bench.target_rows(results, peak, ["W3", "W4"])
    peak_row = [r for r in rows if r["other"] is None]
    assert len(peak_row) == 1 and peak_row[0]["target"] == 0.60
    assert peak_row[0]["runs_at"] == pytest.approx(
        3 * bench.flops("W3", 8192) / 10.0 / 1e9 / peak)
    peak_row = bench.target_rows(results, peak, ["W3"], fma=2 * peak)[-1]
    assert peak_row["other"] is None and peak_row["needs_fma"] == pytest.approx(0.30)
    assert bench.target_rows({"torch": results["torch"]}, peak, ["W4"]) == []


KERNELS_SCRIPT = SCRIPT.parent / "bench_kernels.py"


def test_kernel_bound_counts_the_products_and_the_activations():
    bench = _load(KERNELS_SCRIPT)
    # W4: two layers, two directions each; the second layer reads both
    # directions below and computes the gradient of its input
    assert bench.layer_directions("W4") == [
        ("L1 fwd", 8, 64, False, False, False),
        ("L1 rev", 8, 64, True, False, False),
        ("L2 fwd", 128, 64, False, True, True),
        ("L2 rev", 128, 64, True, True, True)]
    assert bench.layer_directions("W1") == [("L1", 1, 32, False, False, True)]
    T, B, n_in, H = 50, 64, 8, 64
    per_unit = 2 * T * B * 4 * H
    assert bench.pass_flops("forward", T, B, n_in, H, False) == per_unit * (n_in + H)
    assert (bench.pass_flops("backward", T, B, n_in, H, False)
            == per_unit * (2 * H + n_in))
    assert (bench.pass_flops("backward", T, B, n_in, H, True)
            == per_unit * (2 * H + 2 * n_in))
    peak, sigmoid_s, tanh_s = 1e11, 4e-10, 5e-10
    # forward: products at the peak, five activations a unit over 2 threads
    bound = bench.bound_seconds("forward", T, B, n_in, H, False, 2, peak,
                                sigmoid_s, tanh_s)
    assert bound == pytest.approx(per_unit * (n_in + H) / peak
                                  + T * B * H * (3 * sigmoid_s + 2 * tanh_s) / 2)
    # backward: one tanh a unit
    bound = bench.bound_seconds("backward", T, B, n_in, H, True, 1, peak,
                                sigmoid_s, tanh_s)
    assert bound == pytest.approx(per_unit * (2 * H + 2 * n_in) / peak
                                  + T * B * H * tanh_s)


def _w1_call_rows(script, *args):
    """The fields of the rows of W1's calls that ``script`` prints, run at
    W1 with ``args``: forward then backward for each thread count (1, and
    the pieces a fit cuts W1's calls into on 2 threads)."""
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--workloads", "W1",
         "--min-seconds", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("W1")]
    assert [r[2] for r in rows[:2]] == ["forward", "backward"]
    return rows


def test_kernel_script_times_each_call():
    rows = _w1_call_rows(KERNELS_SCRIPT, "--repeats", "2")
    for row in rows:
        ms, gflops, bound_ms, ratio = (float(row[k]) for k in (4, 5, 8, 9))
        assert ms > 0 and gflops > 0 and bound_ms > 0
        # the shares of the GEMM and multiply-add peaks
        assert row[6].endswith("%") and row[7].endswith("%")
        assert ratio == pytest.approx(bound_ms / ms, rel=0.05, abs=0.01)


AB_SCRIPT = SCRIPT.parent / "ab_kernels.py"


def test_ab_script_compares_two_builds_call_by_call(tmp_path):
    """Against a copy of this very build, every call gives the same results,
    and both builds' times and their ratio are printed."""
    from sklstm._kernels._dispatch import kernels

    build = Path(kernels.__file__)
    copy = tmp_path / "sklstm" / "_kernels" / build.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(build.read_bytes())
    rows = _w1_call_rows(AB_SCRIPT, str(tmp_path), "--rounds", "2")
    for row in rows:
        this_ms, other_ms, ratio = (float(row[k]) for k in (4, 5, 6))
        assert this_ms > 0 and other_ms > 0 and ratio > 0
        assert row[7] == "same"


def test_ab_script_needs_another_built_checkout(tmp_path):
    ab = _load(AB_SCRIPT)
    with pytest.raises(ValueError, match="build that checkout in place"):
        ab.load_other_build(tmp_path)
    this_checkout = Path(ab.kernels.__file__).parents[2]
    with pytest.raises(ValueError, match="this checkout"):
        ab.load_other_build(this_checkout)


@pytest.mark.parametrize("script", [SCRIPT, KERNELS_SCRIPT])
def test_an_unknown_workload_is_a_usage_error(script):
    proc = subprocess.run([sys.executable, str(script), "--workloads", "W1,W9"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "unknown workloads ['W9']" in proc.stderr


def test_the_busy_process_of_contention_ends_with_its_parent():
    # Killed, the benchmark does not run the finally that kills its busy
    # process; the process must notice and stop (not stay busy for the
    # runs after), also when its parent dies as it starts.
    loop = _load(SCRIPT).BUSY_LOOP
    starter = ("import os, subprocess, sys, time\n"
               "busy = subprocess.Popen([sys.executable, '-c', sys.argv[1],\n"
               "                         str(os.getpid())])\n"
               "print(busy.pid, flush=True)\n"
               "time.sleep(60)\n")
    for wait in (0, 0.5):
        parent = subprocess.Popen([sys.executable, "-c", starter, loop],
                                  stdout=subprocess.PIPE, text=True)
        busy = Path(f"/proc/{int(parent.stdout.readline())}/stat")
        time.sleep(wait)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _process_state(busy) not in ("Z", "gone"):
            assert time.monotonic() < deadline, "the busy process outlived its parent"
            time.sleep(0.05)


def _process_state(stat):
    """The state letter in a /proc/PID/stat file, or "gone"."""
    try:
        return stat.read_text().split()[2]
    except FileNotFoundError:
        return "gone"
