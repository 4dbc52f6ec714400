"""Choose the build of the LSTM kernels for this CPU, once, at import.

``_lstm_fast.pyx`` is compiled up to three times (see ``setup.py``): the
baseline ``_lstm_fast`` (any x86-64, or any other platform) and, on x86-64,
``_lstm_fast_avx2`` (``-mavx2 -mfma``) and ``_lstm_fast_avx512`` (AVX-512
F/DQ/BW/VL). The source is the same; only the instruction set the compiler
may use differs, which is what vectorises the fused gate loops (the inlined
sigmoid and tanh of ``_activations.pxd``) with wider registers and FMA. The
BLAS calls go to SciPy's OpenBLAS, which dispatches on its own.

The widest build the CPU supports is taken (``cpu_simd_level``, which asks
CPUID and XCR0 through GCC's ``__builtin_cpu_supports``). A variant that is
missing (a non-x86 build, or a compiler without the flags) falls back to
the next narrower one. ``SKLSTM_SIMD=baseline|avx2|avx512`` asks for a
build explicitly, e.g. to compare them or to reproduce results across
machines: results are bit-for-bit repeatable within one build and thread
count, but builds differ in the last bits (FMA rounds once, not twice).
Asking for a build the CPU does not support falls back too (it would crash
on an illegal instruction).
"""

import importlib
import os

from . import _lstm_fast as _baseline

_LEVELS = ("baseline", "avx2", "avx512")


def _load():
    supported = _LEVELS.index(_baseline.cpu_simd_level())
    wanted = os.environ.get("SKLSTM_SIMD", "").strip().lower() or _LEVELS[-1]
    if wanted not in _LEVELS:
        raise ImportError(
            f"SKLSTM_SIMD={wanted!r}; expected one of {', '.join(_LEVELS)}"
        )
    for level in range(min(supported, _LEVELS.index(wanted)), 0, -1):
        try:
            module = importlib.import_module(
                f"._lstm_fast_{_LEVELS[level]}", __package__
            )
        except ImportError:
            continue
        return _LEVELS[level], module
    return "baseline", _baseline


#: The build in use ("baseline", "avx2" or "avx512") and its module.
simd_level, kernels = _load()
lstm_forward = kernels.lstm_forward
lstm_backward = kernels.lstm_backward
uses_own_weight_grads = kernels.uses_own_weight_grads
weight_grad_workspace_size = kernels.weight_grad_workspace_size
adam_update = kernels.adam_update
max_threads = kernels.max_threads
fma_rounds = kernels.fma_rounds
