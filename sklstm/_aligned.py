"""Arrays that start on a cache line, for the CPU kernels to work in.

Why: NumPy places the data of an array of more than a few hundred bytes
16 bytes past a 64-byte boundary (glibc's allocation header), so every
64-byte vector load or store of the AVX-512 kernels on such an array spans
two cache lines, and so does a row-block boundary that two threads write
on either side of. With the workspaces of a fit (gates, cells, hidden
sequences, packed weights, step buffers) starting on a line instead, the
kernel calls of the CPU benchmark's workloads took, in medians of paired
calls on 2 threads of a Zen 4 (the results the same bit for bit): at W2
0.93-0.95x the time forward and 0.92-0.96x backward, at W1 and W3
0.97-0.98x; whole epochs 0.92x at W2, 0.95x at W4.
"""

import math

import numpy as np

#: Bytes of a cache line of x86-64 CPUs.
CACHE_LINE = 64


def empty_aligned(shape, dtype, alignment=CACHE_LINE):
    """An uninitialised C-contiguous array whose data starts on ``alignment``
    bytes.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : data-type
    alignment : int, default=64
        A power of two.

    Returns
    -------
    array : ndarray of ``shape`` and ``dtype``
        A view into a slightly larger buffer, which it keeps alive.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    n_bytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(n_bytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + n_bytes].view(dtype).reshape(shape)
