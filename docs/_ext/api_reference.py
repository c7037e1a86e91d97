"""The API reference page, written from the public modules' ``__all__``.

No list of names is kept by hand: each module's ``__all__`` says what it
exports, grouped here by kind, and autosummary generates one page per name
from its numpydoc docstring. A name that a submodule shares with ``skcnn``
(``skcnn.cache.CodeCache`` is ``skcnn.CodeCache``) is documented once, under
``skcnn``, and linked from the submodule's section.
"""

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

from numpydoc.docscrape import NumpyDocString
from sklearn.base import BaseEstimator
from sphinx.util import logging

logger = logging.getLogger(__name__)

# The modules users import, in the order of the flow; each with what it is for.
PUBLIC_MODULES = {
    "skcnn": "Estimators, layers, image checks, the code cache and their errors.",
    "skcnn.layers": "Which layers of a backbone can be tapped.",
    "skcnn.images": "Images in, pixel arrays out: every input rule, and the errors that name bad images.",
    "skcnn.cache": "The HDF5 store of codes; reading it needs h5py and numpy only.",
    "skcnn.dask": "Codes for millions of images on a Dask cluster, into one cache.",
    "skcnn.inspection": "Where a fitted model fails: worst images, doubtful labels, duplicates, where it looks.",
    "skcnn.export": "One ONNX file for a fitted model.",
    "skcnn.serving": "Predicting with an exported model, without torch.",
    "skcnn.datasets": "Small real image sets that ship inside pip packages.",
}
PAGE = "api.rst"

KINDS = {
    "estimator": "Estimators",
    "class": "Classes",
    "function": "Functions",
    "exception": "Exceptions",
    "data": "Constants",
}


def kind(obj) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        return "estimator" if issubclass(obj, BaseEstimator) else "class"
    return "function" if callable(obj) else "data"


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return [name for name in module.__all__ if not name.startswith("__")]


def api_entries() -> dict[str, dict[str, list[str]]]:
    """``{module: {kind: [names]}}`` of the names documented under each module."""
    top = importlib.import_module("skcnn")
    shared = {id(getattr(top, name)): name for name in public_names("skcnn") if kind(getattr(top, name)) != "data"}
    entries = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        by_kind = {key: [] for key in [*KINDS, "shared"]}
        for name in public_names(module_name):
            obj = getattr(module, name)
            is_shared = module_name != "skcnn" and shared.get(id(obj)) is not None
            by_kind["shared" if is_shared else kind(obj)].append(shared.get(id(obj), name) if is_shared else name)
        entries[module_name] = by_kind
    return entries


def role(obj) -> str:
    return {"function": "func", "exception": "exc", "data": "data"}.get(kind(obj), "class")


def page_text() -> str:
    lines = [
        ".. This page is written by docs/_ext/api_reference.py from the modules' __all__; do not edit.",
        "",
        "API reference",
        "=============",
        "",
        "Every public name of skcnn, by module, from the docstrings. The user guide says when to use which.",
        "",
    ]
    top = importlib.import_module("skcnn")
    for module_name, by_kind in api_entries().items():
        title = f":mod:`{module_name}`"
        lines += [title, "-" * len(title), "", PUBLIC_MODULES[module_name], "", f".. automodule:: {module_name}"]
        lines += ["   :no-members:", "", f".. currentmodule:: {module_name}", ""]
        for key, heading in KINDS.items():
            if by_kind[key]:
                lines += [f".. rubric:: {heading}", "", ".. autosummary::", "   :toctree: generated/", ""]
                lines += [f"   {name}" for name in by_kind[key]] + [""]
        if by_kind["shared"]:
            links = ", ".join(f":{role(getattr(top, name))}:`skcnn.{name}`" for name in by_kind["shared"])
            lines += [f"Also importable from ``{module_name}``: {links}.", ""]
    return "\n".join(lines)


def documented_objects():
    """``(dotted name, object)`` of every name on the page."""
    for module_name, by_kind in api_entries().items():
        module = importlib.import_module(module_name)
        for key in KINDS:
            for name in by_kind[key]:
                yield f"{module_name}.{name}", getattr(module, name)


def result_dataclasses() -> dict:
    """Dataclasses the library returns: their fields are documented as Attributes, not Parameters."""
    return {name: obj for name, obj in documented_objects() if dataclasses.is_dataclass(obj)}


def check_dataclass_fields(app, config) -> None:
    """Every field of a returned dataclass is in its docstring's Attributes (numpydoc checks the rest)."""
    for name, obj in result_dataclasses().items():
        documented = {item.name for item in NumpyDocString(inspect.getdoc(obj) or "")["Attributes"]}
        missing = [field.name for field in dataclasses.fields(obj) if field.name not in documented]
        if missing:
            logger.warning("%s: fields %s are not documented under Attributes", name, missing)


def no_validation_patterns() -> set[str]:
    """numpydoc's parameter checks do not apply to returned dataclasses (see above)."""
    return {rf"^{re.escape(name)}$" for name in result_dataclasses()}


def skip_routing_requests(app, what, name, obj, skip, options):
    # scikit-learn generates set_fit_request & co. on estimators whose fit
    # takes sample_weight; their docstrings are scikit-learn's, with links
    # into scikit-learn's own guide.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def write_page(app, config) -> None:
    path = Path(app.srcdir) / PAGE
    text = page_text()
    if not path.exists() or path.read_text() != text:  # unchanged: no rebuild of every page
        path.write_text(text)


def setup(app):
    # Before Sphinx lists the source files (and autosummary reads this one for its stubs).
    app.connect("config-inited", write_page)
    app.connect("config-inited", check_dataclass_fields)
    app.connect("autodoc-skip-member", skip_routing_requests)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
