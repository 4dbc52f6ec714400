"""Every example script runs to the end."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(script):
    if script.name.startswith("dask"):
        pytest.importorskip("distributed")
    # Agg: plt.show() must not open (and wait on) a window.
    result = subprocess.run([sys.executable, str(script)], capture_output=True,
                            text=True, timeout=300, cwd=script.parent,
                            env=dict(os.environ, MPLBACKEND="Agg"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example should print what it found"
