"""The documentation builds without a warning, and lists the whole public API.

The build runs ``python -m sphinx -W -b html`` on a copy of ``docs/`` and
``examples/`` in a temporary directory (so the gallery's generated files never
land in the working tree), which also executes every ``examples/plot_*.py``.
"""

import doctest
import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
GENERATED = shutil.ignore_patterns("_build", "generated", "auto_examples",
                                   "__pycache__")


def _autosummary_names(api_text):
    """Names listed in the autosummary blocks of api.rst."""
    names = set()
    for block in re.findall(r"\.\. autosummary::\n((?:\n|   .*\n)+)", api_text):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                names.add(line)
    return names


@pytest.mark.parametrize("module_name", ["sklstm", "sklstm.preprocessing"])
def test_api_reference_lists_every_public_name(module_name):
    module = importlib.import_module(module_name)
    listed = _autosummary_names((DOCS / "api.rst").read_text())
    public = {name for name in module.__all__ if not name.startswith("__")}
    assert public <= listed, f"missing from docs/api.rst: {public - listed}"


def test_every_example_has_a_gallery_title():
    for script in EXAMPLES.glob("*.py"):
        text = script.read_text()
        match = re.match(r'"""\n(.+)\n(=+)\n', text)
        assert match, f"{script.name}: start with a docstring title for the gallery"
        assert len(match.group(2)) >= len(match.group(1)), script.name


@pytest.mark.parametrize(
    "page", sorted(p for p in DOCS.rglob("*.rst") if ">>>" in p.read_text()),
    ids=lambda path: str(path.relative_to(DOCS)),
)
def test_code_in_the_pages_runs(page):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of tiny fits
        result = doctest.testfile(str(page), module_relative=False,
                                  optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_sphinx_build_has_no_warnings(tmp_path):
    for name in ("sphinx", "numpydoc", "sphinx_gallery", "matplotlib"):
        pytest.importorskip(name)
    shutil.copytree(DOCS, tmp_path / "docs", ignore=GENERATED)
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=GENERATED)
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(tmp_path / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    built = tmp_path / "html"
    for page in ("index.html", "api.html", "kernels.html",
                 "auto_examples/index.html",
                 "generated/sklstm.LSTMRegressor.html"):
        assert (built / page).is_file(), page
