"""Declares the Cython extensions; all metadata lives in pyproject.toml."""

import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# Bounds and initialisation checks for debugging runs: SKLSTM_DEBUG_CYTHON=1.
DEBUG = os.environ.get("SKLSTM_DEBUG_CYTHON", "0") != "0"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "initializedcheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
}
COMMON = dict(
    include_dirs=[np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    # -fno-trapping-math lets GCC if-convert the clamps in the gate
    # activations (sklstm/_kernels/_activations.pxd), so the fused loops
    # vectorize; nothing in sklstm reads floating-point exception flags.
    # -fno-math-errno lets it vectorize sqrt (Adam's loop): nothing reads
    # errno either.
    extra_compile_args=["-O3", "-fno-trapping-math", "-fno-math-errno"],
)
# The timestep loops split a minibatch's rows over OpenMP threads (prange);
# the number of threads is passed in by the backend, which reads the
# threadpoolctl limits.
OPENMP = ["-fopenmp"]

# The kernels are built once per instruction set, and
# sklstm/_kernels/_dispatch.py imports the widest one the CPU supports: the
# fused gate loops run about 2x faster with AVX2+FMA or AVX-512 than with
# the SSE2 of baseline x86-64, and a wheel must still run on any x86-64.
# Each variant is a stub .pyx that includes _lstm_fast.pyx. Only on x86
# with GCC or Clang (the flags' spelling); elsewhere the baseline alone.
# SKLSTM_NATIVE=1 builds the baseline with -march=native instead (a source
# build for this machine only).
SIMD_VARIANTS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw",
               "-mavx512vl", "-mprefer-vector-width=512"],
}
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
if not X86 or sys.platform == "win32":
    SIMD_VARIANTS = {}
NATIVE = os.environ.get("SKLSTM_NATIVE", "0") != "0"


def _kernels(name, flags=()):
    return Extension(
        f"sklstm._kernels.{name}",
        # The clamps of the gate activations, defined apart (see the header).
        [f"sklstm/_kernels/{name}.pyx", "sklstm/_kernels/_activation_limits.c"],
        # The C headers the .pyx includes (rebuilds, and the sdist).
        depends=["sklstm/_kernels/_small_gemm.h",
                 "sklstm/_kernels/_fma_peak.h",
                 "sklstm/_kernels/_activation_limits.h",
                 "sklstm/_kernels/_activations.pxd",
                 "sklstm/_kernels/_lstm_fast.pyx"],
        **{**COMMON,
           "extra_compile_args": COMMON["extra_compile_args"] + OPENMP
           + list(flags)},
        extra_link_args=OPENMP,
    )


EXTENSIONS = [
    Extension("sklstm._kernels._blas", ["sklstm/_kernels/_blas.pyx"], **COMMON),
    Extension("sklstm._kernels._head", ["sklstm/_kernels/_head.pyx"], **COMMON),
    Extension("sklstm._kernels._gather", ["sklstm/_kernels/_gather.pyx"], **COMMON),
    _kernels("_lstm_fast", ["-march=native"] if NATIVE else []),
] + [_kernels(f"_lstm_fast_{name}", flags)
     for name, flags in SIMD_VARIANTS.items()]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("SKLSTM_ANNOTATE") == "1",
    )
)
