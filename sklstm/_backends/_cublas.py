"""cuBLAS GEMMs on a handle of sklstm's own, callable during stream capture.

Why: a CUDA graph replays a minibatch's whole forward and backward with one
launch (see ``_graphs.py``), but CuPy refuses its own cuBLAS wrappers while
a stream is being captured. cuBLAS itself supports capture, so this module
calls it directly through ``ctypes``, on a handle it creates and binds to
the capturing stream, with a workspace it owns (cuBLAS would otherwise
allocate one during the capture).

Two parts:

- :func:`gemm_arguments` turns ``out = a @ b`` on row-major (C-order) views
  into the arguments of a column-major ``cublas<t>gemm`` call. It is plain
  Python on shapes and strides, so it is tested on the CPU against a NumPy
  emulation of the column-major call (``tests/test_cublas_arguments.py``).
- :class:`CublasHandle` loads the library CuPy already loaded and makes the
  calls. It imports nothing from CuPy itself; callers pass device pointers.
"""

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

# cublasOperation_t
OP_N, OP_T = 0, 1
# cublasMath_t
DEFAULT_MATH, TF32_TENSOR_OP_MATH = 0, 3


@dataclass(frozen=True)
class GemmArguments:
    """One column-major ``C = op(A) @ op(B) + beta C`` call.

    ``first`` and ``second`` are the arrays whose memory cuBLAS reads as its
    ``A`` and ``B`` (the caller's ``b`` and ``a``, see :func:`gemm_arguments`).
    """

    trans_first: int
    trans_second: int
    m: int
    n: int
    k: int
    first: object
    ld_first: int
    second: object
    ld_second: int
    ld_out: int


def _as_column_major(array):
    """``(op, ld)`` under which cuBLAS reads ``array``'s memory as ``array.T``.

    A row-major (r x c) matrix with row stride ``s0`` is, read column-major,
    its transpose with leading dimension ``s0``: op N gives ``array.T``. A
    column-major one (a transposed view, unit row stride) is read as itself
    with leading dimension ``s1``: op T gives ``array.T``. Strides in items.
    Rows or columns of length one make a stride meaningless; the leading
    dimension is then the smallest cuBLAS accepts.
    """
    rows, cols = array.shape
    s0, s1 = (stride // array.itemsize for stride in array.strides)
    if cols == 1 or s1 == 1:
        if rows == 1 or s0 >= cols:
            return OP_N, max(s0 if rows > 1 else cols, 1)
    if rows == 1 or s0 == 1:
        if cols == 1 or s1 >= rows:
            return OP_T, max(s1 if cols > 1 else rows, 1)
    raise ValueError(
        f"gemm needs each operand row- or column-contiguous; got shape "
        f"{array.shape} with strides {array.strides}"
    )


def gemm_arguments(a, b, out):
    """Column-major cuBLAS arguments computing ``out = a @ b (+ beta out)``.

    Parameters
    ----------
    a : array of shape (m, k)
    b : array of shape (k, n)
        Row- or column-contiguous 2-D views (a transposed view is fine).
    out : array of shape (m, n), C-contiguous

    Returns
    -------
    GemmArguments
        Row-major ``out`` is, read column-major, ``out.T`` (n x m) with
        leading dimension n, and ``out.T = b.T @ a.T``: cuBLAS's ``A`` is
        ``b``'s memory and its ``B`` is ``a``'s, each with the op that
        makes it ``b.T`` and ``a.T``.
    """
    (m, k), (k_b, n) = a.shape, b.shape
    if k_b != k or out.shape != (m, n):
        raise ValueError(
            f"gemm shapes do not match: {a.shape} @ {b.shape} -> {out.shape}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("gemm writes a C-contiguous out only")
    trans_b, ld_b = _as_column_major(b)
    trans_a, ld_a = _as_column_major(a)
    return GemmArguments(
        trans_first=trans_b, trans_second=trans_a, m=n, n=m, k=k,
        first=b, ld_first=ld_b, second=a, ld_second=ld_a, ld_out=max(n, 1),
    )


def _loaded_library_path(stem):
    """Path of an already loaded shared library ``stem.so*``, or None.

    CuPy has loaded libcublas by the time a GPU backend exists; opening that
    very file guarantees the same cuBLAS as CuPy's, wherever it came from
    (CUDA toolkit, a pip ``nvidia-cublas`` wheel).
    """
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                name = path.rsplit("/", 1)[-1]
                if name.startswith(stem + ".so"):
                    return path
    except OSError:
        pass
    return None


def load_cublas():
    """The cuBLAS shared library, as CuPy loaded it (or as the loader finds it)."""
    candidates = [_loaded_library_path("libcublas"),
                  ctypes.util.find_library("cublas"),
                  "libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    errors = []
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
    raise OSError("cannot load cuBLAS: " + "; ".join(errors))


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than CUBLAS_STATUS_SUCCESS."""


class CublasHandle:
    """A cuBLAS handle of sklstm's own, bound to one stream.

    Parameters
    ----------
    stream_ptr : int
        The ``cudaStream_t`` the GEMMs are issued on (the capturing stream).
    workspace_ptr, workspace_bytes : int
        Device memory cuBLAS uses as its workspace, owned by the caller and
        kept alive as long as this handle (and any graph captured with it).
    allow_tf32 : bool
        Math mode of float32 GEMMs: TF32 tensor cores, or full float32.
    library : ctypes.CDLL, optional
        cuBLAS; :func:`load_cublas` when None.
    """

    def __init__(self, stream_ptr, workspace_ptr, workspace_bytes, *,
                 allow_tf32=False, library=None):
        lib = load_cublas() if library is None else library
        self._lib = lib
        handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle = handle
        self._check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream_ptr)),
                    "cublasSetStream")
        # After setStream, which resets the workspace to cuBLAS's own pool.
        self._check(lib.cublasSetWorkspace_v2(
            handle, ctypes.c_void_p(workspace_ptr), ctypes.c_size_t(workspace_bytes)
        ), "cublasSetWorkspace")
        mode = TF32_TENSOR_OP_MATH if allow_tf32 else DEFAULT_MATH
        self._check(lib.cublasSetMathMode(handle, ctypes.c_int(mode)),
                    "cublasSetMathMode")
        self._gemm = {
            np.dtype(np.float32): (lib.cublasSgemm_v2, ctypes.c_float),
            np.dtype(np.float64): (lib.cublasDgemm_v2, ctypes.c_double),
        }

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise CublasError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, a, b, out, beta=0.0, pointer=lambda array: array.data.ptr):
        """``out = a @ b + beta * out`` on device arrays (see gemm_arguments).

        ``alpha`` and ``beta`` are host scalars: under stream capture their
        values are recorded into the graph.
        """
        if out.size == 0:
            return
        if a.shape[-1] == 0:  # an empty sum
            out *= beta
            return
        args = gemm_arguments(a, b, out)
        function, scalar = self._gemm[np.dtype(out.dtype)]
        alpha, beta = scalar(1.0), scalar(beta)
        self._check(function(
            self._handle, ctypes.c_int(args.trans_first),
            ctypes.c_int(args.trans_second), ctypes.c_int(args.m),
            ctypes.c_int(args.n), ctypes.c_int(args.k), ctypes.byref(alpha),
            ctypes.c_void_p(pointer(args.first)), ctypes.c_int(args.ld_first),
            ctypes.c_void_p(pointer(args.second)), ctypes.c_int(args.ld_second),
            ctypes.byref(beta), ctypes.c_void_p(pointer(out)),
            ctypes.c_int(args.ld_out),
        ), "cublas<t>gemm")

    def close(self):
        """Destroy the handle (idempotent)."""
        if getattr(self, "_handle", None) is not None:
            self._lib.cublasDestroy_v2(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass
