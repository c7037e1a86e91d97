"""Sphinx configuration of skcnn's documentation: ``make docs`` builds it into ``docs/_build/html``.

The API reference is generated from the public modules' ``__all__`` and their
numpydoc docstrings (``_ext/api_reference.py``); the gallery is ``examples/``,
executed at build time by sphinx-gallery. The build must pass offline: the
intersphinx inventories that cannot be fetched are left out, and references
into those projects are then shown as plain code (``_ext/offline_references.py``).
"""

import os
import sys
from pathlib import Path

import skcnn

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS / "_ext"))

import api_reference  # noqa: E402 (a module of _ext/, importable once the path is set)

# Worker processes of the Dask example and the decoding threads share two
# cores with the build; matplotlib must not look for a display.
os.environ.setdefault("MPLBACKEND", "Agg")

project = "skcnn"
author = "the skcnn developers"
copyright = "the skcnn developers, BSD-3-Clause"
release = skcnn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "api_reference",
    "offline_references",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
templates_path = ["_templates"]
# Every cross-reference must resolve: a broken one is a warning, and the
# build runs with warnings as errors.
nitpicky = True
# CNNClassifier's and CNNRegressor's base, named in their "Bases:" line: what they share (skcnn/finetuning/
# estimator.py), documented on each of them, not as a class users meet.
nitpick_ignore = [("py:class", "FineTuning"), ("py:class", "skcnn.finetuning.estimator.FineTuning")]

# The API reference: numpydoc sections, types in the docstrings (not from
# annotations, which name private modules), members listed by the templates.
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "none"
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Public objects without a docstring, or with parameters the docstring leaves
# out, fail the build.
numpydoc_validation_checks = {"GL08", "PR01", "PR02"}
numpydoc_validation_exclude = {r"\.__init__$", *api_reference.no_validation_patterns()}

# MyST: the user guide is Markdown; headings get anchors for links like
# ``results.md#phone-photos``.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "torchvision": ("https://docs.pytorch.org/vision/stable", None),
}
intersphinx_timeout = 5

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Execute every example, not only plot_*.py: the outputs on the pages are real.
    "filename_pattern": r".*\.py$",
    "doc_module": ("skcnn",),
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    # An example that raises fails the build.
    "abort_on_example_error": True,
}

html_theme = "pydata_sphinx_theme"
html_title = f"skcnn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
}
html_static_path = []
html_show_sourcelink = False
