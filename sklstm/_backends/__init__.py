"""Backends: where the forward and BPTT of one LSTM layer-direction run.

``get_backend`` resolves a ``device`` parameter to a backend instance. The
reference backend is the readable NumPy oracle used by the tests.
"""

from ._reference import ReferenceBackend


def get_backend(device="cpu"):
    """Return the backend for ``device``.

    Parameters
    ----------
    device : {"cpu", "auto", "reference"}
        ``"auto"`` resolves to the CPU until the GPU path lands;
        ``"reference"`` is the slow NumPy oracle, for tests.
    """
    if device in ("cpu", "auto"):
        from ._cpu import CPUBackend

        return CPUBackend()
    if device == "reference":
        return ReferenceBackend()
    if device == "cuda":
        raise ValueError(
            "device='cuda' is not available in this build of sklstm yet; "
            "use device='cpu'."
        )
    raise ValueError(f"Unknown device {device!r}; expected 'cpu' or 'auto'.")
