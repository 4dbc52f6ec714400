"""Backends: where the forward and BPTT of one LSTM layer-direction run.

``get_backend`` resolves a ``device`` parameter to a backend instance. The
reference backend is the readable NumPy oracle used by the tests.

CuPy is optional and imported only here, lazily, the first time a GPU
backend is asked for: ``import sklstm`` never touches CUDA.
"""

import functools

import numpy as np

from ._reference import ReferenceBackend

GPU_INSTALL_HINT = (
    'Install CuPy for your CUDA version, e.g. pip install "sklstm[gpu]" '
    "(which installs cupy-cuda12x), or use device='cpu' or device='auto'."
)


@functools.cache
def cuda_status():
    """``(cupy, None)`` when CuPy and a GPU are usable, else ``(None, reason)``.

    Checked once per process. Any failure to import CuPy or to query the
    driver counts as "not usable": a broken CUDA setup must not break
    ``device="auto"``.
    """
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc})"
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver, and others
        return None, f"CuPy cannot reach a GPU ({type(exc).__name__}: {exc})"
    if n_devices < 1:
        return None, "CuPy sees no GPU"
    return cupy, None


def get_backend(device="cpu", *, allow_tf32=False):
    """Return the backend for ``device``.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto", "reference"}
        ``"cuda"`` is the CuPy backend and raises if CuPy or a GPU is
        missing; ``"auto"`` is the CuPy backend when both are usable, else
        the CPU; ``"reference"`` is the slow NumPy oracle, for tests.
    allow_tf32 : bool, default=False
        Let the CuPy backend's float32 GEMMs use TF32 tensor cores.

    Raises
    ------
    ImportError
        ``device="cuda"`` and CuPy is not installed.
    RuntimeError
        ``device="cuda"`` and CuPy is installed but no GPU is usable.
    """
    if device == "reference":
        return ReferenceBackend()
    if device in ("cuda", "auto"):
        cupy, reason = cuda_status()
        if cupy is not None:
            from ._cupy import CupyBackend

            return CupyBackend(allow_tf32=allow_tf32)
        if device == "cuda":
            message = f"device='cuda' needs CuPy and an NVIDIA GPU: {reason}. "
            error = ImportError if reason.startswith("CuPy is not installed") \
                else RuntimeError
            raise error(message + GPU_INSTALL_HINT)
        device = "cpu"  # "auto" without a usable GPU
    if device == "cpu":
        from ._cpu import CPUBackend

        return CPUBackend()
    raise ValueError(
        f"Unknown device {device!r}; expected 'cpu', 'cuda' or 'auto'."
    )


def to_numpy(array):
    """``array`` as a NumPy array (copied from the device if it is CuPy's)."""
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
