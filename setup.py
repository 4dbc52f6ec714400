"""Declares the Cython extensions; all metadata lives in pyproject.toml."""

import os

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
    extra_compile_args=["-O3", "-fno-trapping-math"],
)
# The timestep loops split a minibatch's rows over OpenMP threads (prange);
# the number of threads is passed in by the backend, which reads the
# threadpoolctl limits.
OPENMP = ["-fopenmp"]
EXTENSIONS = [
    Extension("sklstm._kernels._blas", ["sklstm/_kernels/_blas.pyx"], **COMMON),
    Extension(
        "sklstm._kernels._lstm_fast",
        ["sklstm/_kernels/_lstm_fast.pyx"],
        **{**COMMON, "extra_compile_args": COMMON["extra_compile_args"] + OPENMP},
        extra_link_args=OPENMP,
    ),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("SKLSTM_ANNOTATE") == "1",
    )
)
