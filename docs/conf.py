"""Sphinx configuration of the csstflux documentation site.

Build (from the repository root, after ``pip install '.[docs]'``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

No network at build time: no intersphinx inventories are fetched and the theme's assets are
served from the build folder. The tutorials are MyST notebooks executed at build time by
myst-nb on the embedded demo data; a failing cell fails the build.
"""

from __future__ import annotations

import os

import csstflux

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # executed notebooks inherit it
# the notebooks' figures come from the kernel's inline backend: a non-interactive backend
# set for the shell (MPLBACKEND=Agg, as CI sets it) would leave every tutorial without them
os.environ.pop("MPLBACKEND", None)

project = "csstflux"
author = "csstflux developers"
copyright = "csstflux developers, BSD-3-Clause"  # noqa: A001  (Sphinx's name)
release = version = csstflux.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", ".jupyter_cache", "**.ipynb_checkpoints"]
root_doc = "index"

# --- cross-references: every broken one is an error (-W) -----------------------------------
nitpicky = True
# No intersphinx (it would fetch inventories over the network): names from other packages in
# signatures and docstrings cannot resolve, so they are ignored by package, not one by one.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|numpy\.typing|NDArray|ArrayLike|xarray|xr|astropy|dask|distributed"
               r"|zarr|keras|matplotlib|speclite|dust_extinction|os|pathlib|collections"
               r"|typing|enum|dataclasses)(\..*)?"),
    (r"py:.*", r"(optional|default|callable|path|paths|sequence|iterable|mapping|array|"
               r"array-like|array_like|dict|list|tuple|str|int|float|bool|None|Path|"
               r"PathLike|Any|Sequence|Mapping|Callable|Client)"),
]
# Private helpers and internals that public docstrings mention but the API page does not show.
nitpick_ignore_regex += [
    (r"py:.*", r"csstflux\.(pipeline|model|library|flat|demo|report|spectra|cli|errors|sky|airvac"
               r"|containers)\..*"),
    (r"py:.*", r"csstflux\.io\.(?!stores\.predictions\b)\w+(\..*)?"),
]
# --- API reference ------------------------------------------------------------------------
autodoc_default_options: dict[str, object] = {}  # each directive says its members
autodoc_typehints = "none"  # the numpydoc sections say the types; signatures stay short
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# --- notebooks ------------------------------------------------------------------------------
nb_execution_mode = "cache"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_output_stderr = "remove"  # TensorFlow's start-up chatter on stderr
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# --- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"csstflux {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
# An explicit mode: with none, the theme logs a console error on a fresh profile (empty
# localStorage), which the headless-browser check in tests/test_docs.py counts as a page error.
html_context = {"default_mode": "light"}
