"""Sphinx configuration of the sklstm documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html`` (needs the
``docs`` extra: sphinx, numpydoc, sphinx-gallery, matplotlib). The API pages
(``generated/``) and the gallery (``auto_examples/``) are written at build
time and are not kept in git.
"""

import os
import re
import sys

import sklstm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _gallery_order

# The gallery runs the examples in this process: never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")

project = "sklstm"
author = "the sklstm developers"
copyright = "the sklstm developers"
release = sklstm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"
default_role = "literal"

# --- API reference -----------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
# numpydoc renders the Parameters/Attributes sections; the autosummary class
# template lists the methods, so numpydoc need not add a second member table.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --- Gallery -----------------------------------------------------------------
# Every plot_*.py example runs during the build (each takes a few seconds);
# quickstart.py and dask_grid_search.py are shown with their code but not run
# (the Dask one starts a cluster, which is slow).
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "_gallery_order.ExampleOrder",
    # "Examples using ..." lists at the end of each API page.
    "doc_module": ("sklstm",),
    "backreferences_dir": "generated/backrefs",
    "inspect_global_variables": False,
    "plot_gallery": "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_modules": ("matplotlib",),
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    "write_computation_times": False,
    "show_memory": False,
    "show_signature": False,
}

# --- HTML ----------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "LSTM networks as scikit-learn estimators",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_static_path = []
html_show_sourcelink = False


# --- Members inherited from scikit-learn --------------------------------------
# The estimators inherit scikit-learn's metadata-routing and set_output
# methods; their docstrings cross-reference pages of scikit-learn's own site,
# which Sphinx cannot resolve here. They behave exactly as documented by
# scikit-learn, so the API pages leave them out (api.rst says so).
_SKLEARN_MEMBERS_KEPT = {"get_params", "set_params", "fit_transform",
                         "get_feature_names_out"}


def _skip_sklearn_members(app, what, name, obj, skip, options):
    module = getattr(obj, "__module__", None) or ""
    if module.startswith("sklearn.") and name not in _SKLEARN_MEMBERS_KEPT:
        return True
    return None


# A bare name ending in "_" is reStructuredText for a link target, so a type
# such as "ndarray of shape (n_features_in_,)" fails the build; quote it as
# scikit-learn's docstrings do ("(`n_features_in_`,)"). A no-op once the
# docstrings quote it themselves.
_BARE_FITTED_NAME = re.compile(r"(?<![`\w])([a-z][a-z0-9_]*[a-z0-9]_)(?=[,)])")


def _quote_fitted_names_in_types(app, what, name, obj, options, lines):
    for index, line in enumerate(lines):
        if " : " in line and "shape (" in line:
            lines[index] = _BARE_FITTED_NAME.sub(r"``\1``", line)


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_members)
    # Before numpydoc (priority 500) parses the sections.
    app.connect("autodoc-process-docstring", _quote_fitted_names_in_types,
                priority=400)
